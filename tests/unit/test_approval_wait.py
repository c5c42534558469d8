"""The durable wait, without Kafka: the support desk's billing loop stops before a held
step runs anything, and resumes from its checkpoints after a decision without asking the
model again for that step."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream.approvals.gate import ApprovalGate, AwaitingApproval
from agentstream.approvals.records import apply_decision, approval_decision, approval_id, approval_requested, waiting_call
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.durable import DurableModel, DurableRun, DurableTools
from agentstream.specialist.loop import AgentOutcome, run_agent
from tests import support_desk

TASK = {"task_id": "task-r", "session_id": "s", "tenant_id": "acme", "input": "Please issue a refund for INV-1001"}


class _Log:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    async def persist(self, key: str, value: dict[str, Any]) -> None:
        self.records[key] = value


def _gate(decided: dict[tuple[int, int], dict[str, Any]] | None = None) -> ApprovalGate:
    registry = support_desk.registry()
    return ApprovalGate(support_desk.topology().agent("billing").approvals,
                        lambda name: registry.get(name).description if registry.get(name) else "", decided or {})


async def _run(run: DurableRun, calls: list[tuple[str, int]]) -> AgentOutcome:
    model = DurableModel(support_desk.scripted_model("billing", call_log=calls), run)
    return await run_agent(TASK, "billing", model, DurableTools(support_desk.registry(), run), support_desk.allowlist("billing"))


def _held() -> tuple[AwaitingApproval, _Log]:
    log = _Log()
    calls: list[tuple[str, int]] = []
    with pytest.raises(AwaitingApproval) as held:
        asyncio.run(_run(DurableRun("task-r", 0, ckpt.Chain(), log.persist, gate=_gate()), calls))
    assert calls == [("task-r", 0)]
    return held.value, log


def test_a_held_step_runs_none_of_its_calls_and_says_what_waits() -> None:
    held, log = _held()
    assert [(c.step, c.index, c.tool, c.arguments) for c in held.calls] == [(0, 0, "refund_invoice", {"invoice_id": "INV-1001"})]
    assert "Refund what was paid on an invoice" in held.calls[0].description
    assert [v["kind"] for v in log.records.values()] == ["model"], "the model's reply is kept, no tool ran"
    record = waiting_call(held.calls[0], approval_id("billing", "task-r", 0, 0), "task-r", TASK, 1_000, held.answer_so_far)
    request = approval_requested(record, TASK, "billing")
    assert (request["approval_id"], request["input"], request["deadline"]) == ("billing:task-r:0:0", TASK["input"], 86_401_000)


def _resume(decision: str, edited: object = None) -> tuple[AgentOutcome, list[tuple[str, int]], dict[str, Any]]:
    held, log = _held()
    waiting = waiting_call(held.calls[0], approval_id("billing", "task-r", 0, 0), "task-r", TASK, 1_000)
    request = approval_requested(waiting, TASK, "billing")
    _, decided = apply_decision(waiting, approval_decision(request, decision, "ops", "over the limit", 2_000, edited), 2_000)
    records = list(log.records.values())
    run = DurableRun("task-r", 1, ckpt.rebuild([[0, 0], [1, len(records)]], records), log.persist,
                     gate=_gate({(0, 0): decided}))
    calls: list[tuple[str, int]] = []
    outcome = asyncio.run(_run(run, calls))
    refund = next(v for v in log.records.values() if v["kind"] == "tool" and v["name"] == "refund_invoice")
    return outcome, calls, refund


def test_an_approval_resumes_without_asking_the_model_again_for_the_held_step() -> None:
    outcome, calls, refund = _resume("approve")
    assert outcome.status == "COMPLETED" and calls == [("task-r", 1)]
    assert refund["ok"] and "INV-1001" in refund["content"] and "refund issued" in refund["content"]


def test_an_edit_runs_the_tool_with_the_edited_arguments() -> None:
    _, calls, refund = _resume("edit", {"invoice_id": "INV-1002"})
    assert calls == [("task-r", 1)] and "INV-1002" in refund["content"] and "INV-1001" not in refund["content"]


def test_a_denial_is_the_tool_result_the_model_answers_from() -> None:
    outcome, calls, refund = _resume("deny")
    assert calls == [("task-r", 1)] and not refund["ok"]
    assert "denied this call: over the limit" in refund["content"] and "over the limit" in (outcome.output or "")
