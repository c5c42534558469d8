"""Cancellation on a real broker with real worker processes (router, billing specialist,
supervisor): a running loop stops at its next step boundary, a task waiting for approval
drops its wait (a later decision is answered "already decided"), a task queued behind
its session's open task, or whose cancel came first, is canceled at the router and never
starts, a cancel sent while
the specialist is down is applied by its successor, so is one recorded before the
specialist was killed, and each canceled task gets exactly one CANCELED result. The CLI refuses an unknown task and one that has ended."""

from __future__ import annotations

import uuid
from pathlib import Path

from agentstream.cancellation import cancel_record, send_cancel
from agentstream.runtime.lag import consumer_lag
from agentstream.serde import SchemaSet

from .cli import run
from .harness import wait_for
from .test_approvals import WORKERS, Approvals, billing_task
from .test_durable import DurableStack

SCHEMAS = SchemaSet.load()
# Every model call takes this long: the cancel of the running task, sent once its first
# call has started, lands well before that call returns and the loop reaches its next step;
# and the crashed task's call is still in flight once its cancel is committed and the
# specialist killed (a kill after the call returned would let the victim end it itself).
# 15 s, not 8, for a loaded CI machine.
MODEL_LATENCY_S = "15"


def test_cancel_running_waiting_queued_unknown_and_after_a_restart(bootstrap: str, tmp_path: Path) -> None:
    desk = Approvals(bootstrap, tmp_path, latency=MODEL_LATENCY_S)
    run_id = uuid.uuid4().hex[:6]
    running = billing_task("Please check invoice INV-1002", f"s-r-{run_id}", run_id, "running")
    waiting = billing_task("Please refund payment INV-1001", f"s-w-{run_id}", run_id, "waiting")
    queued = billing_task("Please check invoice INV-1003", f"s-w-{run_id}", run_id, "queued")  # behind waiting
    restarted = billing_task("Please refund payment INV-1003", f"s-k-{run_id}", run_id, "restarted")
    ahead = billing_task("Please check invoice INV-1004", f"s-a-{run_id}", run_id, "ahead")
    crashed = billing_task("Please check invoice INV-1001", f"s-c-{run_id}", run_id, "crashed")
    stack = desk.stack
    try:
        stack.start_all(WORKERS)
        # A running loop: canceled while its first model call is in flight, it stops before
        # the step's tool call; its second model call (the answer) is never made.
        stack.submit([running])
        wait_for(lambda: desk.steps(running["task_id"]) == [0], 60, "the running task's first model call")
        send_cancel(bootstrap, stack.topology, SCHEMAS,
                    cancel_record(running["task_id"], running["session_id"], "it", "ops", "customer hung up"))
        result = stack.results({running["task_id"]}, timeout=90)[running["task_id"]]
        assert [(r["status"], r["error"]["code"]) for r in result] == [("CANCELED", "CANCELED")], result
        assert "canceled by ops: customer hung up" in result[0]["error"]["message"]
        assert desk.steps(running["task_id"]) == [0] and result[0]["usage"]["llm_calls"] == 1  # the call it made counts
        desk.wait_event(running["task_id"], "STATE", "CANCELED", "billing")  # the supervisor's, with its agents

        # Waiting for approval, with a task of its session queued behind it at the router.
        stack.submit([waiting, queued, restarted])
        request = desk.request_of(waiting["task_id"])
        desk.wait_event(queued["task_id"], "STATE", "QUEUED", f"waiting for task {waiting['task_id']}")
        sent = desk.cli_cancel(queued["task_id"], "--reason", "duplicate ticket", "--by", "alice")
        assert f"cancel of task {queued['task_id']} sent (session {queued['session_id']}, by alice)" in sent
        canceled = stack.results({queued["task_id"]}, timeout=60)[queued["task_id"]]
        assert [r["status"] for r in canceled] == ["CANCELED"]
        desk.wait_event(queued["task_id"], "STATE", "CANCELED", "queued behind its session's open task")
        assert request["approval_id"] in desk.cli("list")
        # A cancel that comes before its task (produced directly: the CLI wants the task on
        # the tasks topic) is kept by the router, which drops the task when it arrives.
        send_cancel(bootstrap, stack.topology, SCHEMAS, cancel_record(ahead["task_id"], ahead["session_id"], "it", "ops", ""))
        stack.workers["router"].wait_for_line(rf"cancel of task {ahead['task_id']}: ahead", 30)
        stack.submit([ahead])
        assert [r["status"] for r in stack.results({ahead["task_id"]}, timeout=60)[ahead["task_id"]]] == ["CANCELED"]
        desk.wait_event(ahead["task_id"], "STATE", "CANCELED", "its cancel came before it")

        desk.cli_cancel(waiting["task_id"], "--reason", "no longer needed", "--by", "bob")
        result = stack.results({waiting["task_id"]}, timeout=60)[waiting["task_id"]]
        assert [r["status"] for r in result] == ["CANCELED"] and "bob" in result[0]["error"]["message"]
        desk.wait_event(waiting["task_id"], "TEXT", "CANCELED", "wait for approval dropped")
        assert request["approval_id"] not in desk.cli("list")
        # A late decision is recorded and ignored; the tool never runs.
        desk.cli("approve", request["approval_id"], "--who", "carol")
        desk.wait_event(waiting["task_id"], "ERROR", "REJECTED", "was already decided (canceled by bob)")
        assert desk.ledger_lines() == []
        # The queued task never started: no model call of it, and one model call of the waiting one.
        assert desk.steps(queued["task_id"]) == desk.steps(ahead["task_id"]) == [] and desk.steps(waiting["task_id"]) == [0]

        # Unknown and ended tasks: a clear refusal, nothing produced.
        unknown = run("cancel", f"ghost-{run_id}", env=desk.env)
        assert unknown.returncode == 1 and f"No task 'ghost-{run_id}' on {stack.topology.topic('tasks')}" in unknown.stderr
        ended = run("cancel", waiting["task_id"], env=desk.env)
        assert ended.returncode == 1 and "has ended already (CANCELED" in ended.stderr, ended.stderr
        # The record itself, for an ended task (as a client that does not ask first sends it): ignored.
        send_cancel(bootstrap, stack.topology, SCHEMAS, cancel_record(running["task_id"], running["session_id"], "it", "ops", ""))
        desk.wait_event(running["task_id"], "TEXT", "CANCELED", "cancel ignored: the task has ended")

        # Restarts. A loop canceled mid-call whose cancel is recorded and its control record
        # committed, then the specialist killed: the successor resumes the task from its
        # checkpoint and the cancel's table entry stops it before its next model call (the
        # control record is not read again). And a cancel sent while the specialist is down:
        # the successor reads it and drops the wait.
        desk.request_of(restarted["task_id"])
        stack.submit([crashed])
        wait_for(lambda: desk.steps(crashed["task_id"]) == [0], 60, "the crashed task's first model call")
        send_cancel(bootstrap, stack.topology, SCHEMAS, cancel_record(crashed["task_id"], crashed["session_id"], "it", "ops", ""))
        wait_for(lambda: _cancels_committed(bootstrap, stack), 30, "the billing group's commit of every cancel")
        stack.workers["billing"].kill()
        stack.workers["billing"].wait(30)
        desk.cli_cancel(restarted["task_id"])
        successor = stack.start("billing-2", *WORKERS["billing"])
        successor.wait_for_line(r": assigned ", 60)
        results = stack.results({restarted["task_id"], crashed["task_id"]}, timeout=90)
        assert [r["status"] for r in results[restarted["task_id"]]] == ["CANCELED"]
        assert [r["status"] for r in results[crashed["task_id"]]] == ["CANCELED"]
        assert successor.matching(rf"task {crashed['task_id']} stopped: canceled by ops")
        assert desk.steps(crashed["task_id"]) == [0], "the successor made no model call for it"
        assert desk.ledger_lines() == []
        # Each canceled task has its one result still (nothing came after).
        everything = stack.results({running["task_id"], queued["task_id"], waiting["task_id"]}, timeout=30)
        assert all(len(everything[t["task_id"]]) == 1 for t in (running, queued, waiting)), everything
    finally:
        codes = stack.stop_all()
    assert all(code in (0, -9) for code in codes.values()), codes


def _cancels_committed(bootstrap: str, stack: DurableStack) -> bool:
    """Whether the billing group has committed every record of the control topic."""
    rows = consumer_lag(bootstrap, stack.topology.group("billing"), [stack.topology.topic("control")])
    return all(row.committed == row.end for row in rows if row.end > 0)
