"""Approvals under SIGKILL, with real worker processes on a real broker (issue 14):

- the billing specialist is killed while 100 tasks wait for approval; its successor gets
  the approvals of them all: every task resumes and ends once, each approved tool runs
  once (its ledger line, by idempotency key) and the model is not asked again for the
  step that waited;
- the billing specialist is killed between the decisions and the tool's side effect (the
  tool ``gated_refund`` waits at a gate the test holds closed): after the restart each
  call runs again with the same idempotency key and its side effect happens once.

Counted: lost tasks (no result) and duplicated results; both must be 0.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from .apps.refund_ledger import GATE_ENTERED, GATE_ENV, GATE_OPEN
from .harness import wait_for
from .test_approvals import WORKERS, Approvals, billing_task, produce_decisions

WAITING_TASKS = 100
GATED_TASKS = 10


def _tasks(text: str, count: int) -> list[dict[str, Any]]:
    """``count`` tasks, each in its own session (so all wait at once; a session's later task
    would wait behind its held one)."""
    run_id = uuid.uuid4().hex[:6]
    return [billing_task(text.format(invoice=f"INV-{5000 + i}"), f"s-{i}-{run_id}", run_id, f"f{i:03d}") for i in range(count)]


def _kill(desk: Approvals, name: str) -> int:
    worker = desk.stack.workers[name]
    pid = worker.proc.pid
    worker.kill()
    assert worker.wait(30) == -9
    return pid


def _restart(desk: Approvals) -> int:
    """A new billing worker (its own, empty state dir: it restores from the changelog)."""
    worker = desk.stack.start("billing-2", *WORKERS["billing"])
    worker.wait_for_line(r": assigned .*\[\d\]", 90)
    return worker.proc.pid


def _ended_once(desk: Approvals, tasks: list[dict[str, Any]]) -> None:
    ids = {t["task_id"] for t in tasks}
    results = desk.stack.results(ids, timeout=240)
    lost = ids - set(results)
    duplicated = {task: len(got) for task, got in results.items() if task in ids and len(got) > 1}
    assert (len(lost), len(duplicated)) == (0, 0), f"lost {sorted(lost)[:5]}, duplicated {duplicated}"
    failed = {task: got[0]["output"] for task, got in results.items() if task in ids and got[0]["status"] != "COMPLETED"}
    assert not failed, failed


def _ledger_once(desk: Approvals, tasks: list[dict[str, Any]]) -> None:
    """Each task's approved call (step 0, call 0) wrote exactly one ledger line."""
    runs = Counter(line.split()[0] for line in desk.ledger_lines())
    assert runs == Counter({f"{t['task_id']}:0:0": 1 for t in tasks}), runs


def _model_calls_not_repeated(desk: Approvals, tasks: list[dict[str, Any]], first: int, second: int) -> None:
    """Step 0 (the one that waited) was asked of the model once, by the first worker; the
    answer after the tool (step 1) once, by its successor."""
    calls: dict[str, list[tuple[int, int]]] = {}
    for task, step, pid in desk.stack.calls():
        calls.setdefault(task, []).append((step, pid))
    wrong = {t["task_id"]: calls.get(t["task_id"]) for t in tasks if calls.get(t["task_id"]) != [(0, first), (1, second)]}
    assert not wrong, f"model calls (step, pid) other than [(0, {first}), (1, {second})]: {dict(list(wrong.items())[:5])}"


def test_a_kill_while_100_tasks_wait_then_approving_them_all(bootstrap: str, tmp_path: Path) -> None:
    desk = Approvals(bootstrap, tmp_path)
    tasks = _tasks("Please refund payment {invoice}", WAITING_TASKS)
    try:
        desk.stack.start_all(WORKERS)
        desk.stack.submit(tasks)
        requests = desk.requests_of([t["task_id"] for t in tasks], 180)
        first = _kill(desk, "billing")
        assert desk.ledger_lines() == []  # nothing approved, nothing ran
        second = _restart(desk)
        produce_decisions(desk, list(requests.values()))
        _ended_once(desk, tasks)
    finally:
        codes = desk.stack.stop_all()
    assert all(code in (0, -9) for code in codes.values()), codes
    _ledger_once(desk, tasks)
    _model_calls_not_repeated(desk, tasks, first, second)


def test_a_kill_between_the_decision_and_the_tools_side_effect(bootstrap: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    entered = gate / GATE_ENTERED
    entered.touch()
    desk = Approvals(bootstrap, tmp_path, env={GATE_ENV: str(gate)})
    tasks = _tasks("Please gated refund {invoice}", GATED_TASKS)
    keys = {f"{t['task_id']}:0:0" for t in tasks}

    def at_gate() -> Counter[str]:
        return Counter(line.split()[0] for line in entered.read_text().splitlines())

    try:
        desk.stack.start_all(WORKERS)
        desk.stack.submit(tasks)
        requests = desk.requests_of([t["task_id"] for t in tasks], 120)
        produce_decisions(desk, list(requests.values()))
        # Every approved call is in flight, held before its side effect (gated_refund's
        # own timeout, GATE_HOLD_S, outlasts this wait and the kill).
        wait_for(lambda: set(at_gate()) == keys, 60, f"all {GATED_TASKS} approved calls at the gate")
        first = _kill(desk, "billing")
        assert desk.ledger_lines() == []
        (gate / GATE_OPEN).touch()
        second = _restart(desk)
        _ended_once(desk, tasks)
    finally:
        codes = desk.stack.stop_all()
    assert all(code in (0, -9) for code in codes.values()), codes
    # Each call ran again after the restart, with the same idempotency key, and wrote once.
    assert at_gate() == Counter({key: 2 for key in keys}), at_gate()
    _ledger_once(desk, tasks)
    _model_calls_not_repeated(desk, tasks, first, second)
