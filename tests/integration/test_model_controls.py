"""The controls around model calls on a real broker: a specialist whose scripted model
fails 30 % of its calls with transient errors (HTTP 500) still completes every task,
and the retries show in the results' usage; and a specialist on an OpenAI-compatible
server that has an outage answers with the model again once the breaker's cool-down
has passed."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml

from agentstream.controls import MINIMUM_VIABLE_MARKER
from tests import support_desk
from tests.unit.test_providers_openai import LoopbackServer, Reply, completion, error

from .test_durable import DurableStack, _tasks

WORKERS = {"router": ["router"], "billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]}


def _topology(tmp_path: Path, billing_controls: dict[str, Any], retry: dict[str, Any] | None = None) -> Path:
    topology = yaml.safe_load((support_desk.APP / "topology.yaml").read_text())
    topology["agents"]["billing"]["controls"] = billing_controls
    if retry is not None:
        topology["retry"] = retry
    path = support_desk.copy_app(tmp_path)
    path.write_text(yaml.safe_dump(topology))
    return path


def _start(stack: DurableStack) -> None:
    for name, command in WORKERS.items():
        stack.start(name, *command)
    for worker in stack.workers.values():
        worker.wait_for_line(r": assigned ", 60)


def test_thirty_percent_transient_failures_still_complete_all_tasks(bootstrap: str, tmp_path: Path) -> None:
    # Enough attempts that 0.3 ** attempts is negligible over 60 calls; short backoff.
    path = _topology(tmp_path, {"retry": {"max_attempts": 8, "initial_backoff_s": 0.02, "max_backoff_s": 0.2}})
    stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=path,
                         env={"AGENTSTREAM_SCRIPTED_FAILURE_RATE": "0.3"})
    tasks = _tasks(30, sessions=10)
    try:
        _start(stack)
        stack.submit(tasks)
        results = stack.results({t["task_id"] for t in tasks}, timeout=120)
    finally:
        codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    statuses = {got[0]["status"] for got in results.values()}
    assert statuses == {"COMPLETED"}, statuses
    retries = sum(got[0]["usage"]["retries"] for got in results.values())
    calls = len(stack.calls())  # every attempt reached the scripted model's call log
    successful = sum(got[0]["usage"]["llm_calls"] for got in results.values())
    assert retries > 0
    assert retries == calls - successful, (retries, calls, successful)
    assert all(got[0]["models"] == {"billing": "scripted:default"} and got[0]["tier"] for got in results.values())


ANSWER = "Invoice INV-1001 was paid on 3 March; nothing is owed."
RESET_TIMEOUT_S = 3.0
MAX_ATTEMPTS = 2


def test_after_a_provider_outage_the_breaker_closes_and_the_model_answers_again(bootstrap: str, tmp_path: Path) -> None:
    healthy = threading.Event()

    def answer(request: dict[str, Any]) -> Reply:
        if not healthy.is_set():
            return error(503, "The server is overloaded or not ready yet.", None, "server_error")
        return Reply(body=completion({"content": ANSWER}))

    controls = {
        "retry": {"max_attempts": MAX_ATTEMPTS, "initial_backoff_s": 0.05, "max_backoff_s": 0.1},
        "breaker": {"failure_threshold": 2, "reset_timeout_s": RESET_TIMEOUT_S},
    }
    # No retry tiers: a task the model cannot serve fails at once instead of coming back later.
    path = _topology(tmp_path, controls, retry={"delays_s": [1], "max_attempts": 1})
    with LoopbackServer(answer).running() as server:
        env = {"AGENTSTREAM_MODEL": "openai:gpt-4o-mini", "OPENAI_BASE_URL": server.url + "/v1", "OPENAI_API_KEY": "sk-test"}
        stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=path, env=env)
        during, probe, after = _tasks(3, sessions=3), _tasks(1, sessions=1), _tasks(4, sessions=4)
        try:
            _start(stack)
            outage = _submit_and_wait(stack, during)
            calls_in_outage = len(server.requests)
            healthy.set()
            time.sleep(RESET_TIMEOUT_S + 0.5)  # the breaker's cool-down, a duration to let pass
            first = _submit_and_wait(stack, probe)  # alone: the half-open breaker lets one call through
            recovered = _submit_and_wait(stack, after)
        finally:
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    for got in outage:
        assert got[0]["status"] == "FAILED" and MINIMUM_VIABLE_MARKER in (got[0]["output"] or ""), got
    # One guard per model: each task's single model call made at most MAX_ATTEMPTS requests.
    assert 0 < calls_in_outage <= MAX_ATTEMPTS * len(during), calls_in_outage
    for got in [*first, *recovered]:
        assert len(got) == 1 and got[0]["status"] == "COMPLETED", got
        assert got[0]["output"] == ANSWER and got[0]["models"] == {"billing": "openai:gpt-4o-mini"}


def _submit_and_wait(stack: DurableStack, tasks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The results of ``tasks``, one list per task, once every task has one."""
    stack.submit(tasks)
    wanted = [t["task_id"] for t in tasks]
    seen = stack.results(set(wanted), timeout=90)
    return [seen[task_id] for task_id in wanted]
