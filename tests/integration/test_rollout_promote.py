"""A healthy canary is promoted by ``rollout watch`` on the real broker: its weight steps
up as its rules hold, each step a control record every router applies."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from agentstream.events import ROLLOUT_CONTROL, SPECIALIST_RESULT
from agentstream.rollout.promote import FULL_WEIGHT_ADVICE
from agentstream.rollout.split import session_bucket

from .test_durable import DurableStack
from .test_rollout import LIVE_WORKERS, _app, _cli, _records, _tasks

PER_BAND = 3  # sessions per weight band: as many as the steps need (min_tasks 3)


def _sessions(run_id: str, band: Callable[[float], bool]) -> list[str]:
    """PER_BAND session ids whose billing bucket falls in ``band``."""
    found = (s for n in range(10_000) if band(session_bucket("billing", s := f"s-{run_id}-{n}")))
    return [next(found) for _ in range(PER_BAND)]


def test_a_healthy_canary_is_stepped_up_to_full_weight_by_the_watcher(bootstrap: str, tmp_path: Path) -> None:
    # The p95 rule is loose on purpose: on the scripted model (no latency) a run takes a few
    # ms, so the ratio of two versions' p95 is noise on a busy machine; this test is about steps.
    candidate = {"mode": "canary", "weight": 0.2, "rollback": {"min_tasks": PER_BAND, "max_p95_ratio": 1000},
                 "promote": {"steps": [0.5, 1.0], "min_tasks": PER_BAND, "min_window_s": 1}}
    stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_app(tmp_path, candidate))
    try:
        stack.start_all({**LIVE_WORKERS, "billing.candidate": ["specialist", "--type", "billing.candidate"]})
        watcher = stack.run("watch", "rollout", "watch", "--interval", "1", "--window", "600")
        watcher.wait_for_line(r"rollout watch: judging the canaries of \['billing'\]", 60)
        run_id = uuid.uuid4().hex[:6]
        at_02, at_05, live = (_sessions(run_id, band) for band in (lambda b: b < 0.2, lambda b: 0.2 <= b < 0.5, lambda b: b >= 0.5))
        first = _tasks(at_02 + live, 1)
        stack.submit(first)
        stack.results({t["task_id"] for t in first}, timeout=120)
        watcher.wait_for_line(r"rollout: billing candidate \w+ set to weight 0.5, promoted 0.2 -> 0.5: completion 100% >= 85%", 60)
        stack.workers["router"].wait_for_line(r"rollout: billing canary weight is now 0.5 \(promoted 0.2 -> 0.5", 60)
        # At 0.5 the sessions between 0.2 and 0.5 join the canary; their tasks earn the next step.
        second = _tasks(at_05 + live, 1)
        stack.submit(second)
        stack.results({t["task_id"] for t in second}, timeout=120)
        ran = {r["task_id"]: r["variant"] for r in _records(stack, "supervisor", SPECIALIST_RESULT)}
        assert {t["session_id"]: ran[t["task_id"]] for t in first + second} == {
            **{s: "candidate" for s in at_02 + at_05}, **{s: None for s in live}}
        watcher.wait_for_line(rf"rollout: billing candidate \w+ set to weight 1, promoted 0.5 -> 1: .* over {PER_BAND} tasks "
                              r"in \d+ s; last step: make the candidate the live version", 60)
        steps = [(c["weight"], c["set_by"]) for c in _records(stack, "rollout", ROLLOUT_CONTROL) if c["agent_type"] == "billing"]
        assert steps == [(0.5, "rollout-watch"), (1.0, "rollout-watch")]
        shown = _cli(stack, "report", "--agent", "billing", "--window", "600")
        assert "billing (canary, weight 1; set by rollout-watch at" in shown and FULL_WEIGHT_ADVICE in shown
        watcher.terminate()
        assert watcher.wait(30) == 0, watcher.tail()
    finally:
        stack.stop_all()
