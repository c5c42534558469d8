"""The whole pipeline on a real provider's wire: examples/document_review with a router
model and a supervisor model, every model id pinned to ``scripted:default`` in the
topology and moved onto an OpenAI-compatible HTTP server by ``AGENTSTREAM_MODEL`` and
``OPENAI_BASE_URL`` alone, so every model call of the router, the specialist and the
supervisor goes through the official ``openai`` SDK (models/openai_provider.py).

The server answers like a provider: the router's classifier gets a ``route_task`` tool
call; the specialist first gets calls of the app's real tools, then, with their results,
an answer quoting them; the supervisor's review a ``publish`` verdict for one task and an
``escalate`` for the other. Each kind of call reports its own token usage, so the cost of
every call can be traced into the task's result.

And ``agentstream demo`` (what ``make demo`` runs) on the same path, with the stand-in
provider of model_server.py: the banner names the real model, the tickets get its answers.
"""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path
from typing import Any

import yaml

from agentstream.client import new_task
from agentstream.models.pricing import DEFAULT_PRICE_TABLE
from agentstream.models.base import Usage
from agentstream.router.classifier import ROUTE_TOOL
from agentstream.supervisor.review import NEEDS_HUMAN_REVIEW
from tests.unit.test_providers_openai import LoopbackServer, Reply

from .cli import cli_env, run
from .harness import REPO
from .model_server import (
    MODEL, AppModel, is_review_request, is_route_request, last_user_text, openai_env, review, text_reply, tool_reply, tool_results,
)
from .test_durable import DurableStack
from .test_llm_router import task_event_details

APP = REPO / "examples" / "document_review"
WORKERS = {"router": ["router"], "contracts": ["specialist", "--type", "contracts"], "supervisor": ["supervisor"]}
PUBLISHED = "How can either side end the Northwind agreement? Quote MSA-2041."
ESCALATED = "Can we stop honouring NDA-0007 today, before its confidentiality term ends?"
CLAUSES = {PUBLISHED: ("MSA-2041", "termination"), ESCALATED: ("NDA-0007", "term")}
QUOTED = {
    PUBLISHED: "MSA-2041 (termination): Either party may terminate this agreement with 90 days' written notice.",
    ESCALATED: "NDA-0007 (term): The obligations of confidentiality survive for 3 years after disclosure.",
}
REVIEWED = "Either side may end the Northwind agreement with 90 days' written notice (MSA-2041, termination)."
WHY = "Ending confidentiality early is a legal decision; a lawyer must answer."
# (input, output) tokens each kind of call reports, distinct so the sums name their calls.
ROUTE_USAGE, STEP_USAGE, REVIEW_USAGE = (100, 10), (200, 20), (300, 30)


def _topology(tmp_path: Path) -> Path:
    """The app's topology with a router model and a supervision section, both pinned to
    the scripted model like its specialist: only AGENTSTREAM_MODEL moves them."""
    topology = yaml.safe_load((APP / "topology.yaml").read_text())
    topology["tools_modules"] = [str(APP / "tools.py")]
    contracts = topology["agents"]["contracts"]["model"]
    contracts["system_prompt_file"] = str(APP / contracts["system_prompt_file"])
    topology["agents"]["router"]["routing"]["model"] = {"models": {"standard": "scripted:default"}, "timeout_s": 20, "call_timeout_s": 10}
    topology["agents"]["supervisor"]["supervision"] = {
        "model": {"models": {"standard": "scripted:default"}, "timeout_s": 20, "call_timeout_s": 10},
        "rubric": "Quote the clause you rely on.",
        "escalate": "result",  # the escalated task's result at once (test_supervisor_escalation.py waits for a human)
    }
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(topology))
    return path


class Provider:
    """The model's side; keeps every request body by kind."""

    def __init__(self) -> None:
        self.routes: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.reviews: list[dict[str, Any]] = []
        self.wire: list[tuple[str, str]] = []  # (path, model) of every request
        self._lock = threading.Lock()

    def answer(self, request: dict[str, Any]) -> Reply:
        body = request["json"]
        self._keep(self.wire, (request["path"], body["model"]))
        task = next(text for text in CLAUSES if text in last_user_text(body))
        if is_route_request(body):
            self._keep(self.routes, body)
            route = {"agent_types": ["contracts"], "tier": "complex", "confidence": 0.9}
            return tool_reply([(ROUTE_TOOL, route)], usage=ROUTE_USAGE)
        if is_review_request(body):
            self._keep(self.reviews, body)
            if task == PUBLISHED:
                return review("publish", REVIEWED, "", usage=REVIEW_USAGE)
            return review("escalate", last_user_text(body), WHY, usage=REVIEW_USAGE)
        self._keep(self.steps, body)
        results = tool_results(body)
        if results:
            return text_reply("Per the file: " + " | ".join(results), usage=STEP_USAGE)
        document_id, clause = CLAUSES[task]
        calls = [("list_documents", {}), ("find_clause", {"document_id": document_id, "clause": clause})]
        return tool_reply(calls, usage=STEP_USAGE)

    def _keep(self, kept: list[Any], item: Any) -> None:
        with self._lock:
            kept.append(item)

    @staticmethod
    def of(kept: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
        return [body for body in kept if task in last_user_text(body)]


def _run(
    bootstrap: str, tmp_path: Path, provider: Provider, tasks: list[dict[str, Any]]
) -> tuple[DurableStack, dict[str, list[dict[str, Any]]]]:
    """Run the tasks on the app's workers, every model on ``provider``: the stack and the results."""
    with LoopbackServer(provider.answer).running() as server:
        env = openai_env(server)
        stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_topology(tmp_path), env=env)
        try:
            stack.start_all(WORKERS)
            stack.submit(tasks)
            results = stack.results({t["task_id"] for t in tasks}, timeout=120)
        finally:
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    return stack, results


def _cost(*calls: tuple[int, int]) -> float:
    return sum(DEFAULT_PRICE_TABLE.cost_usd(MODEL, Usage(tokens_in, tokens_out)) for tokens_in, tokens_out in calls)


def test_router_specialist_and_supervisor_call_a_real_provider_through_the_sdk(bootstrap: str, tmp_path: Path) -> None:
    provider = Provider()
    tasks = {text: new_task(text, f"s-{uuid.uuid4().hex[:8]}", "legal-ops") for text in (PUBLISHED, ESCALATED)}
    stack, results = _run(bootstrap, tmp_path, provider, list(tasks.values()))
    assert all(len(results[t["task_id"]]) == 1 for t in tasks.values()), results  # one result per task
    published, escalated = (results[tasks[text]["task_id"]][0] for text in (PUBLISHED, ESCALATED))

    # Every call went to the SDK's endpoint with the model AGENTSTREAM_MODEL names.
    assert set(provider.wire) == {("/v1/chat/completions", "gpt-4o-mini")}
    assert len(provider.wire) == 2 * 4  # per task: route, two specialist steps, review
    # The router asked the model once per task, offering the app's one specialist.
    for text in (PUBLISHED, ESCALATED):
        (asked,) = Provider.of(provider.routes, text)
        assert asked["tools"][0]["function"]["parameters"]["properties"]["agent_types"]["items"]["enum"] == ["contracts"]
    routed = task_event_details(stack, set(t["task_id"] for t in tasks.values()), "ROUTED")
    assert routed[tasks[PUBLISHED]["task_id"]] == f"contracts tier=complex by model: {MODEL}, confidence 0.90"

    # The specialist called the app's real tools, and its next request carried their results.
    for text in (PUBLISHED, ESCALATED):
        first, second = Provider.of(provider.steps, text)
        assert sorted(t["function"]["name"] for t in first["tools"]) == ["find_clause", "list_documents", "word_count"]
        assert QUOTED[text] in tool_results(second)
        assert any("Master services agreement with Northwind Ltd" in r for r in tool_results(second))
    answer = "Per the file: " + " | ".join(tool_results(Provider.of(provider.steps, PUBLISHED)[1]))
    assert f"- contracts (COMPLETED): {answer}" in last_user_text(Provider.of(provider.reviews, PUBLISHED)[0])

    assert (published["status"], published["output"], published["agents"], published["tier"]) == (
        "COMPLETED", REVIEWED, ["contracts"], "complex")
    assert published["review"] == {"verdict": "publish", "feedback": "", "confidence": 0.9, "model": MODEL, "revisions": 0}
    assert published["models"] == {"contracts": MODEL, "supervisor": MODEL}
    tools = task_event_details(stack, {published["task_id"]}, "TOOL_CALL")
    # One event naming the run's tools in first-use order (one per tool cost a record each).
    assert tools[published["task_id"]] == "list_documents,find_clause", tools
    # Every call's tokens and cost, as the server reported them: the router's classification
    # (carried to the supervisor in RoutedTask.router_usage), two specialist steps, the review.
    calls = (ROUTE_USAGE, STEP_USAGE, STEP_USAGE, REVIEW_USAGE)
    for result in (published, escalated):
        usage = result["usage"]
        assert (usage["llm_calls"], usage["tool_calls"]) == (4, 2), usage
        assert (usage["input_tokens"], usage["output_tokens"]) == tuple(map(sum, zip(*calls))), usage
        assert usage["cost_usd"] > 0 and abs(usage["cost_usd"] - _cost(*calls)) < 1e-9, usage

    assert (escalated["status"], escalated["error"]) == ("FAILED", {"code": NEEDS_HUMAN_REVIEW, "message": WHY})
    assert QUOTED[ESCALATED] in escalated["output"] and escalated["review"]["verdict"] == "escalate", escalated


def test_the_demo_runs_on_a_real_provider_and_says_so(tmp_path: Path) -> None:
    provider = AppModel()
    with LoopbackServer(provider.answer).running() as server:
        done = run("demo", "--state-dir", str(tmp_path), env=cli_env(**openai_env(server)), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert f"model: {MODEL} (from AGENTSTREAM_MODEL, for every agent type)" in out and "ScriptedModel" not in out, out[:600]
    assert "waiting up to 900 s" in out
    got = re.search(r"(\d+)/(\d+) tickets got a result", out)
    assert got is not None and got.group(1) == got.group(2), out[-2000:]
    # Every ticket's answer is the provider's, written from the tool results it asked for.
    answers = [line for line in out.splitlines() if re.match(r"   \| (\w+: )?From our records: ", line)]
    assert len(answers) >= int(got.group(1)), out
    assert provider.requests and all(body["model"] == "gpt-4o-mini" for body in provider.requests)
