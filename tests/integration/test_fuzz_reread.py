"""The fuzz test's records (test_fuzz.py) on the router's, the billing specialist's and the
supervisor's inputs, the three workers killed with -9 before any checkpoint, and every
record read again by their successors: no task gets a second result, and every specialist
and supervisor input still ends in the results or the DLQ.

A kill before the commit (or a partition lost in a broker's stall, as in a CI run's fuzz
test) makes the next owner read the records again. Found this way: an invalid task's
REJECTED result published again when its id was unusable or it was keyed off its session
(router/own_results.py), and a FAILED result for a record of another stage's type
(retry/chain.py).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from .test_durable import DurableStack
from .test_fuzz import RECORDS_PER_STAGE, Outcomes, draw_batch, input_topics, materialize, produce_all

STAGES = ("tasks", "billing", "supervisor")
WORKERS = {"router": ("router",), "billing": ("specialist", "--type", "billing"), "supervisor": ("supervisor",)}


def _read_until_quiet(outcomes: Outcomes, quiet_s: float, limit_s: float) -> None:
    """Read results and dead letters until none has come for ``quiet_s`` (at most ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        outcomes.read(0.5)
        count = sum(map(len, outcomes.results.values())) + len(outcomes.letters)
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return


def test_fuzzed_records_read_again_after_a_kill_get_no_second_result(bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    sent = [materialize(item, i, run) for stage in STAGES for i, item in enumerate(draw_batch(stage, RECORDS_PER_STAGE))]
    # No periodic checkpoint in the test's time: the kills leave every record uncommitted.
    stack = DurableStack(bootstrap, tmp_path, latency="", env={"AGENTSTREAM_COMMIT_INTERVAL_S": "600"})
    topology = stack.topology
    outcomes = Outcomes(bootstrap, {name: (topology.topic(name), topology.topic_spec(name).partitions)
                                    for name in ("results", "dlq")})
    # A task the router sends to another specialist has no worker here: only the inputs
    # of the stages that run are counted (the router's own answers are: its duplicates).
    counted = [item for item in sent if item.stage in ("billing", "supervisor")]
    inputs = input_topics(topology, STAGES)
    try:
        first = {name: stack.start(name, *command) for name, command in WORKERS.items()}
        for worker in first.values():
            worker.wait_for_line(r": assigned ", 60)
        produce_all(bootstrap, sent, inputs)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(outcomes.where(item) == "unaccounted" for item in counted):
            outcomes.read(0.5)
        _read_until_quiet(outcomes, 3, 30)  # the router's answers too, before the kills
        for worker in first.values():
            worker.kill()
            worker.wait()
        second = {name: stack.start(f"{name}-again", *command) for name, command in WORKERS.items()}
        for worker in second.values():
            worker.wait_for_line(r": assigned ", 60)
        second["router"].wait_for_line(r"results the router published after its last commit read back", 60)
        second["billing"].wait_for_line(r"already accepted; duplicate ignored", 60)  # it reads its tasks again
        _read_until_quiet(outcomes, 5, 90)
    finally:
        codes = stack.stop_all()
        outcomes.close()
    again = {name: codes[f"{name}-again"] for name in WORKERS}
    assert again == dict.fromkeys(WORKERS, 0), again
    lost = [item for item in counted if outcomes.where(item) == "unaccounted"]
    assert not lost, f"inputs that ended nowhere: {[(i.stage, i.kind, i.task_id) for i in lost[:5]]}"
    duplicated = {task: [(r["status"], (r["error"] or {}).get("code")) for r in got]
                  for task, got in outcomes.results.items() if len(got) > 1 and run in task}
    assert not duplicated, f"tasks with more than one result: {duplicated}"
