"""Cancellation without Kafka: the TaskCancel record, the router's session gate dropping
a queued or unrouted task (and keeping a cancel that came before its task), the loop
stopping at a step boundary (not before a replayed step, never mid-step), and a waiting
call closed by a cancel answering a later decision as already decided."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream.approvals.records import CANCELED as CLOSED, apply_decision, approval_decision, approval_requested, closed_by_cancel
from agentstream.cancellation import CANCELED, TaskCanceled, cancel_error, cancel_record, is_canceled
from agentstream.cancellation.records import recorded_at
from agentstream.router.session_gate import Admission, Canceling, admit, cancel, new_record, open_task, settle
from agentstream.serde import SchemaSet
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.canceling import is_run_of
from agentstream.specialist.durable import DurableModel, DurableRun, DurableTools
from agentstream.specialist.loop import run_agent
from agentstream.supervisor.combine import canceled
from agentstream.topology import SessionSettings
from tests import support_desk

CANCEL = cancel_record("t2", "s", "acme", "alice", "duplicate ticket", requested_at=5)
LIMITS = SessionSettings(max_waiting=10, remember_turns=10)


def _decided(task_id: str) -> dict[str, Any]:
    return {"task": {"task_id": task_id, "session_id": "s", "tenant_id": "acme", "input": f"question {task_id}"},
            "route": ["billing"], "tier": "standard"}


def _session(*task_ids: str) -> dict[str, Any]:
    record = new_record()
    for seen, task_id in enumerate(task_ids, 1):
        admit(record, _decided(task_id), LIMITS, seen, None)
    return record


# -- the record --------------------------------------------------------------------------
def test_the_record_fits_its_schema_and_says_who_and_why() -> None:
    schemas = SchemaSet.load()
    assert schemas.decode_as("TaskCancel", schemas.encode("TaskCancel", CANCEL)) == CANCEL
    assert cancel_error(CANCEL) == (CANCELED, "canceled by alice: duplicate ticket")
    assert cancel_error(cancel_record("t", "s", "", "", ""))[1] == "canceled by unknown: no reason given"
    with pytest.raises(ValueError, match="non-empty session_id"):
        cancel_record("t", " ", "acme", "alice", "")


def test_a_specialists_cancel_report_and_a_canceled_result_are_told_apart_from_failures() -> None:
    assert is_canceled({"status": "FAILED", "error": {"code": CANCELED, "message": "x"}})
    assert is_canceled({"status": CANCELED, "error": None})
    assert not is_canceled({"status": "FAILED", "error": {"code": "MAX_STEPS", "message": "x"}})
    assert recorded_at({**CANCEL, "at": 9}) == 9 and recorded_at("junk") is None


def test_the_supervisor_makes_a_task_canceled_by_any_of_its_specialists() -> None:
    report = {"task_id": "t", "agent_type": "billing", "status": "FAILED",
              "error": {"code": CANCELED, "message": "canceled by alice: x"}}
    answer = {"task_id": "t", "agent_type": "account", "status": "COMPLETED", "output": "done", "error": None}
    final = {"task_id": "t", "status": "COMPLETED", "output": "Account: done", "error": None, "usage": {"llm_calls": 3}}
    stopped = canceled(final, [answer, report])
    assert stopped is not None and (stopped["status"], stopped["output"], stopped["usage"]) == (CANCELED, None, {"llm_calls": 3})
    assert stopped["error"] == report["error"]
    assert canceled(final, [answer]) is None


# -- the router's gate -------------------------------------------------------------------
def test_a_queued_task_is_dropped_and_remembered_as_canceled() -> None:
    record = _session("t1", "t2", "t3")
    found, dropped, following = cancel(record, CANCEL, LIMITS, 10)
    assert found is Canceling.DROPPED and dropped is not None and dropped["task_id"] == "t2" and following is None
    assert open_task(record) == "t1" and [w["task"]["task_id"] for w in record["waiting"]] == ["t3"]
    assert record["turns"][-1] == {"task_id": "t2", "input": "question t2", "status": CANCELED,
                                   "output": "canceled by alice: duplicate ticket", "agents": []}
    # Its CANCELED result, read back from the results topic, finds it settled.
    assert settle(record, {"task_id": "t2", "status": CANCELED, "output": None, "agents": []}, LIMITS, 11) is None
    assert record["early"] == {} and len(record["turns"]) == 1


def test_an_open_task_not_routed_yet_is_dropped_and_the_next_opens() -> None:
    record = _session("t2", "t3")
    record["open"]["route"] = None  # a router model has not decided it yet
    found, dropped, following = cancel(record, CANCEL, LIMITS, 10)
    assert found is Canceling.DROPPED and dropped is not None and dropped["task_id"] == "t2"
    assert following is not None and following["task"]["task_id"] == "t3" and open_task(record) == "t3"


def test_a_routed_task_is_left_to_its_specialists_and_an_ended_one_is_ignored() -> None:
    record = _session("t2")
    assert cancel(record, CANCEL, LIMITS, 10) == (Canceling.ROUTED, None, None)
    assert open_task(record) == "t2"
    settle(record, {"task_id": "t2", "status": "COMPLETED", "output": "done", "agents": ["billing"]}, LIMITS, 11)
    assert cancel(record, CANCEL, LIMITS, 12) == (Canceling.ENDED, None, None)
    assert "t2" not in record.get("canceled", {})


def test_a_cancel_that_comes_before_its_task_cancels_it_on_admission() -> None:
    record = _session("t1")
    assert cancel(record, CANCEL, LIMITS, 10)[0] is Canceling.AHEAD
    assert admit(record, _decided("t2"), LIMITS, 11, None) is Admission.CANCELED
    assert record["waiting"] == [] and record["canceled"] == {} and record["turns"][-1]["status"] == CANCELED


# -- the loop ----------------------------------------------------------------------------
class _Log:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    async def persist(self, key: str, value: dict[str, Any]) -> None:
        self.records[key] = value


TASK = {"task_id": "task-c", "session_id": "s", "tenant_id": "acme", "input": "Please check invoice INV-1002"}


def _run(run: DurableRun, calls: list[tuple[str, int]]) -> None:
    model = DurableModel(support_desk.scripted_model("billing", call_log=calls), run)
    asyncio.run(run_agent(TASK, "billing", model, DurableTools(support_desk.registry(), run), support_desk.allowlist("billing")))


def test_a_cancel_during_a_model_call_stops_the_loop_before_the_steps_tool_calls() -> None:
    log, calls = _Log(), []
    after_first_reply = iter([None, {**CANCEL, "task_id": "task-c"}])  # asked before the call, then before its tools
    with pytest.raises(TaskCanceled, match="canceled by alice") as stopped:
        _run(DurableRun("task-c", 0, ckpt.Chain(), log.persist, canceled=lambda: next(after_first_reply)), calls)
    assert calls == [("task-c", 0)]
    spent = stopped.value.outcome  # what the run spent goes with the stop
    assert spent.error[0] == CANCELED and (spent.usage["llm_calls"], spent.usage["tool_calls"], spent.steps) == (1, 0, 1)
    assert [v["kind"] for v in log.records.values()] == ["model"], "the reply is kept, no tool ran"


def test_a_replayed_step_is_no_boundary_the_next_new_call_is() -> None:
    log, calls = _Log(), []
    _run(DurableRun("task-c", 0, ckpt.Chain(), log.persist), calls)
    records = list(log.records.values())
    first_model = [r for r in records if r["kind"] == "model"][:1]
    chain = ckpt.rebuild([[0, 0], [1, 1]], first_model)
    asked: list[str] = []

    def canceled() -> dict[str, Any] | None:
        asked.append("?")
        return {**CANCEL, "task_id": "task-c"} if len(asked) > 1 else None  # before the tools: not yet

    resumed: list[tuple[str, int]] = []
    with pytest.raises(TaskCanceled):
        _run(DurableRun("task-c", 1, chain, _Log().persist, canceled=canceled), resumed)
    assert resumed == [], "the replayed step called no model, and the cancel came before the next one"


def test_runs_of_a_task_are_its_first_run_and_its_revisions_only() -> None:
    assert is_run_of("t", "t") and is_run_of("t#rev2", "t")
    assert not is_run_of("t2", "t") and not is_run_of("t-other", "t")


# -- a waiting call ----------------------------------------------------------------------
def test_a_call_closed_by_a_cancel_answers_a_later_decision_as_already_decided() -> None:
    waiting = {"approval_id": "billing:t:0:0", "run": "t", "task_id": "t", "session_id": "s", "tool": "refund_invoice",
               "arguments": {"invoice_id": "INV-1"}, "arguments_hash": "h", "status": "pending", "decision": None,
               "ignored": [], "closed_at": None, "requested_at": 1, "deadline": 2, "approvers": "", "description": "",
               "answer_so_far": None}
    closed = closed_by_cancel(waiting, CANCEL, 7)
    assert (closed["status"], closed["closed_at"], closed["decision"]["who"]) == (CLOSED, 7, "alice")
    request = approval_requested(waiting, {"task_id": "t", "session_id": "s", "tenant_id": "acme", "input": "x"}, "billing")
    verdict, after = apply_decision(closed, approval_decision(request, "approve", "carol", "", 8), 8)
    assert verdict == "duplicate" and after["status"] == CLOSED and after["ignored"][0]["who"] == "carol"
