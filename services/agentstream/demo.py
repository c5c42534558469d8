"""``agentstream demo``: an app's whole pipeline on the embedded broker, the app's sample
tickets (``tickets.json`` in its folder), and a readable account of what happened to each."""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentstream.display import shorten
from agentstream.errors import ConfigurationError
from agentstream.kafka_client import Client
from agentstream.models.config import DEFAULT_MODEL_ID, ModelSettings, effective_model_id, parse_model_id
from agentstream.serde import SchemaSet
from agentstream.settings import MODEL_ENV, TOPOLOGY_ENV
from agentstream.stack import Stack
from agentstream.task_client import PROGRESS
from agentstream.topology import APP_TOPOLOGY_FILE, Topology

TICKETS_FILE = "tickets.json"  # an app's sample tickets: {"tickets": [{"input", "session_id", ...}]}
BANNER = """\
agentstream demo: {app}
  {models}
  broker: {broker}
  workers: {workers} (one process each; logs in {logs})
"""
SCRIPTED = """model: ScriptedModel, the offline deterministic test model shipped with agentstream.
         No real LLM is called: its tool calls follow the app's scripted rules, its answers quote the results."""
ANSWER_CHARS = 600
DEMO_TENANT = "demo"  # a ticket's tenant when it names none
RESULT_POLL_S = 0.5  # how long one wait for a result may block before the workers are checked again
# How long the demo waits for every result. A session's tickets run one after another and
# a real model takes seconds per call (a local one on a CPU, tens), so it gets longer.
SCRIPTED_WAIT_S = 120.0
REAL_WAIT_S = 900.0


def describe_models(topology: Topology, environ: Mapping[str, str] | None = None) -> str:
    """What the pipeline will call: ScriptedModel, or the real models, where they were
    chosen and who calls them (specialists; the router and supervisor when configured)."""
    used = real_models(topology, environ)
    if not used:
        return SCRIPTED
    real = sorted(used)
    env = os.environ if environ is None else environ
    where = f"{MODEL_ENV}, for every agent type" if env.get(MODEL_ENV, "").strip() else "the topology"
    callers = "; ".join(f"{model_id}: {', '.join(used[model_id])}" for model_id in real)
    return f"model: {', '.join(real)} (from {where}): a real LLM is called, and may cost money.\n  called by {callers}"


def real_models(topology: Topology, environ: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Each real (not scripted) model the pipeline will call, with its callers."""
    used: dict[str, list[str]] = {}
    for caller, settings in _model_callers(topology):
        configured = [*settings.models.values(), *settings.fallbacks] if settings else [DEFAULT_MODEL_ID]
        for model_id in sorted({effective_model_id(model_id, environ) for model_id in configured}):
            if parse_model_id(model_id)[0] != "scripted":
                used.setdefault(model_id, []).append(caller)
    return used


def default_wait(topology: Topology, environ: Mapping[str, str] | None = None) -> float:
    """How long the demo waits for its results when not told: longer on a real model."""
    return REAL_WAIT_S if real_models(topology, environ) else SCRIPTED_WAIT_S


def _model_callers(topology: Topology) -> list[tuple[str, ModelSettings | None]]:
    """Who calls a model, with its settings: each specialist (None: the default model), the
    router's classifier (routing.model) and the supervisor's review (supervision) when set."""
    callers: list[tuple[str, ModelSettings | None]] = []
    for name, agent in topology.agents.items():
        if agent.kind == "specialist":
            callers.append((name, agent.model))
        elif agent.routing is not None and agent.routing.model is not None:
            callers.append((f"{name} (classifier)", agent.routing.model))
        elif agent.supervision is not None:
            callers.append((f"{name} (review)", agent.supervision.model))
    return callers


def load_tickets(app: Path) -> list[dict[str, Any]]:
    """The app's sample tickets: each has ``input`` and ``session_id``, optionally
    ``tenant_id``, ``requested_agent`` and ``expected_route`` (the agent types it should reach)."""
    path = app / TICKETS_FILE
    if not (app / APP_TOPOLOGY_FILE).is_file():
        raise ConfigurationError(
            f"No app folder at {app} (no {APP_TOPOLOGY_FILE} there): pass --app DIR (or set {TOPOLOGY_ENV}) "
            f"naming a folder with {APP_TOPOLOGY_FILE} and {TICKETS_FILE}; the default app, examples/support_desk, "
            "is in a checkout of the repository."
        )
    try:
        tickets = json.loads(path.read_text(encoding="utf-8"))["tickets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"Cannot read the demo tickets {path} ({type(exc).__name__}: {exc}); write a JSON file "
            '{"tickets": [{"input": "...", "session_id": "s-1"}]} there.'
        ) from exc
    bad = [n for n, t in enumerate(tickets, 1) if not isinstance(t, dict) or not t.get("input") or not t.get("session_id")]
    if bad or not tickets:
        raise ConfigurationError(f"{path}: tickets {bad or '(none)'} lack an input or a session_id; give every ticket both.")
    return [dict(ticket) for ticket in tickets]


def run_demo(app: Path, state_dir: Path = Path(".state/demo"), timeout: float | None = None) -> int:
    """Run the app's tickets; wait ``timeout`` seconds for their results (None: SCRIPTED_WAIT_S
    on the scripted model, REAL_WAIT_S on a real one). The tickets go through
    ``agentstream.Client``, the client an upstream service next to the cluster would use."""
    tickets = load_tickets(app)
    run_id = uuid.uuid4().hex[:6]
    with Stack(state_dir / "workers", log_dir=state_dir / "logs", topology_path=app) as stack, \
            contextlib.ExitStack() as open_clients:
        topology = stack.topology
        timeout = default_wait(topology) if timeout is None else timeout
        print(BANNER.format(app=app, models=describe_models(topology), broker=stack.bootstrap,
                            workers=", ".join(stack.workers), logs=state_dir / "logs"))
        clients = _Clients(stack, state_dir / "clients", open_clients)
        tasks: dict[str, dict[str, Any]] = {}
        for number, ticket in enumerate(tickets, 1):
            client = clients.of(ticket.get("tenant_id") or DEMO_TENANT)
            task_id = client.submit(ticket["input"], session_id=ticket["session_id"],
                                    agent=ticket.get("requested_agent"), idempotency_key=f"demo-{run_id}-{number}")
            tasks[task_id] = {**ticket, "number": number, "client": client}
        print(f"submitted {len(tasks)} tickets; waiting up to {timeout:.0f} s for their results "
              "(first run: the workers join their groups)\n")
        results, tools = _collect(tasks, stack, timeout)
    for task_id, ticket in sorted(tasks.items(), key=lambda item: item[1]["number"]):
        _print_ticket(ticket, results.get(task_id), tools.get(task_id, []))
    missing = [task_id for task_id in tasks if task_id not in results]
    wrong = [t for t, r in results.items()
             if "expected_route" in tasks[t] and sorted(r["agents"]) != sorted(tasks[t]["expected_route"])]
    print(f"{len(results)}/{len(tasks)} tickets got a result", end="")
    print(f"; {len(wrong)} routed unexpectedly" if wrong else "; every route as expected")
    if missing:
        print(f"no result for: {', '.join(missing)} (see the worker logs)")
    return 0 if not missing else 1


class _Clients:
    """One ``Client`` per tenant of the tickets (a client acts for one tenant), opened once."""

    def __init__(self, stack: Stack, state_dir: Path, exits: contextlib.ExitStack) -> None:
        self._stack, self._state_dir, self._exits = stack, state_dir, exits
        self._schemas = SchemaSet.load()
        self._made: dict[str, Client] = {}

    def of(self, tenant_id: str) -> Client:
        if tenant_id not in self._made:
            client = Client(self._stack.bootstrap, self._stack.topology, tenant_id=tenant_id, subject="demo",
                            schemas=self._schemas, state_dir=self._state_dir)
            self._made[tenant_id] = self._exits.enter_context(client)
        return self._made[tenant_id]


def _collect(tasks: dict[str, dict[str, Any]], stack: Stack,
             timeout: float) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Each task's result as the supervisor published it, and the tools its loop called,
    read through its client (printed as they come in, in ticket order)."""
    results: dict[str, dict[str, Any]] = {}
    tools: dict[str, list[str]] = {}
    deadline = time.monotonic() + timeout
    for task_id, ticket in sorted(tasks.items(), key=lambda item: item[1]["number"]):
        client: Client = ticket["client"]
        while task_id not in results and time.monotonic() < deadline and not stack.dead_workers():
            with contextlib.suppress(TimeoutError):  # a short wait, so dead workers are seen
                results[task_id] = _as_result(client.result(task_id, timeout=RESULT_POLL_S))
        if task_id not in results:
            break
        # A run's TOOL_CALL event names its tools comma-joined: each is shown as stage:tool.
        tools[task_id] = [f"{event.data['stage']}:{tool}" for event in client.events(task_id)
                          if event.kind == PROGRESS and event.data.get("kind") == "TOOL_CALL"
                          for tool in event.data["detail"].split(",")]
        print(f"  result for {task_id}: {results[task_id]['status']} ({len(results)}/{len(tasks)})")
    if stack.dead_workers():
        print(f"workers exited early: {stack.dead_workers()}")
    print()
    return results, tools


def _as_result(task: dict[str, Any]) -> dict[str, Any]:
    """The client's answer (``GET /v1/tasks/{id}``'s shape) as the TaskResult fields shown."""
    return {**task["result"], "usage": task["usage"], "submitted_at": task["timings"]["submitted_at"],
            "completed_at": task["timings"]["completed_at"]}


def _print_ticket(ticket: dict[str, Any], result: dict[str, Any] | None, tools: list[str]) -> None:
    print(f"#{ticket['number']} [{ticket['session_id']}] {ticket['input']}")
    if result is None:
        print("   NO RESULT\n")
        return
    took = ""
    if result.get("submitted_at"):
        took = f", {result['completed_at'] - result['submitted_at']} ms end to end"
    print(f"   {result['status']} via {' + '.join(result['agents']) or '-'}{took}")
    print(f"   tools: {', '.join(tools) or 'none'}; model calls: {result['usage']['llm_calls']}")
    if result.get("error"):
        print(f"   error: {result['error']['code']}: {result['error']['message']}")
    body = result.get("output") or ""
    shown = textwrap.fill(shorten(body, ANSWER_CHARS), 96) if "\n" not in body else shorten(body, ANSWER_CHARS)
    print(textwrap.indent(shown, "   | "))
    print()
