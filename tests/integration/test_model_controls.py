"""The controls around model calls on a real broker: a specialist whose scripted model
fails 30 % of its calls with transient errors (HTTP 500) still completes every task,
and the retries show in the results' usage."""

from __future__ import annotations

from pathlib import Path

import yaml

from .harness import REPO
from .test_durable import DurableStack, _tasks


def test_thirty_percent_transient_failures_still_complete_all_tasks(bootstrap: str, tmp_path: Path) -> None:
    topology = yaml.safe_load((REPO / "topology" / "topology.yaml").read_text())
    # Enough attempts that 0.3 ** attempts is negligible over 60 calls; short backoff.
    topology["agents"]["billing"]["controls"] = {"retry": {"max_attempts": 8, "initial_backoff_s": 0.02, "max_backoff_s": 0.2}}
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(topology))
    stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=path,
                         env={"AGENTSTREAM_SCRIPTED_FAILURE_RATE": "0.3"})
    for name, command in {"router": ["router"], "billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]}.items():
        stack.start(name, *command)
    tasks = _tasks(30, sessions=10)
    try:
        for worker in stack.workers.values():
            worker.wait_for_line(r": assigned ", 60)
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
