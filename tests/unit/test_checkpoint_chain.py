"""Step checkpoints: the fenced chain rebuild and replay through the durable wrappers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream.models.base import ModelResponse, ToolCall, Usage
from agentstream.runtime.errors import CheckpointError
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.durable import DurableModel, DurableRun, DurableTools, idempotency_key, landed_at_exit
from agentstream.specialist.loop import StepNotRecorded, run_agent
from tests import support_desk
from agentstream.tools.registry import ToolRegistry, ToolResult, tool


def _model_record(step: int, epoch: int, seq: int, text: str) -> dict[str, Any]:
    return ckpt.model_step(step, ModelResponse(text, (), Usage(1, 1), "m"), epoch, seq)


def test_a_stale_owners_late_step_does_not_roll_the_task_back() -> None:
    # Epoch 0 owned seq 0..1; epoch 1 resumed at seq 2 and wrote seq 2.
    # The stale epoch-0 owner then wrote its own seq 2 and 3 late: both must be ignored.
    records = [
        _model_record(0, 0, 0, "first"),
        ckpt.tool_step(0, 0, ToolResult("t", True, "r"), 0, 1),
        _model_record(1, 1, 2, "new owner"),
        _model_record(1, 0, 2, "stale"),
        _model_record(2, 0, 3, "stale too"),
    ]
    chain = ckpt.rebuild([[0, 0], [1, 2]], records)
    assert chain.length == 3
    assert chain.models[1]["text"] == "new owner"
    assert 2 not in chain.models


def test_the_chain_stops_at_the_first_missing_step() -> None:
    records = [_model_record(0, 0, 0, "a"), _model_record(2, 0, 2, "c")]
    chain = ckpt.rebuild([[0, 0]], records)
    assert chain.length == 1 and list(chain.models) == [0]


def test_records_of_unknown_epochs_are_ignored() -> None:
    chain = ckpt.rebuild([[0, 0]], [_model_record(0, 7, 0, "zombie of nowhere")])
    assert chain.length == 0


def test_resumes_at_same_step_counts_owners_that_died_at_one_point() -> None:
    assert ckpt.resumes_at_same_step([[0, 0], [1, 4], [2, 4], [3, 4]]) == 3
    assert ckpt.resumes_at_same_step([[0, 0], [1, 4], [2, 6]]) == 1
    assert ckpt.resumes_at_same_step([]) == 0


class _Log:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    async def persist(self, key: str, value: dict[str, Any]) -> None:
        self.records[key] = value


def _task() -> dict[str, Any]:
    return {"task_id": "task-1", "session_id": "s", "input": "I was charged twice on invoice INV-1002"}


def test_a_resumed_loop_replays_finished_steps_without_calling_the_model_again() -> None:
    async def scenario() -> None:
        first_calls: list[tuple[str, int]] = []
        log = _Log()
        run = DurableRun("task-1", 0, ckpt.Chain(), log.persist)
        registry = support_desk.registry()
        allow = ["lookup_invoice", "search_kb"]
        first = await run_agent(_task(), "billing", DurableModel(support_desk.scripted_model("billing", call_log=first_calls), run), DurableTools(registry, run), allow)
        assert first.status == "COMPLETED" and len(first_calls) == 2
        # Lose the final answer (the step in flight when the worker died) and resume.
        records = [v for k, v in log.records.items() if v["kind"] != "model" or v["step"] == 0]
        chain = ckpt.rebuild([[0, 0], [1, len(records)]], records)
        resumed_calls: list[tuple[str, int]] = []
        run2 = DurableRun("task-1", 1, chain, log.persist)
        second = await run_agent(_task(), "billing", DurableModel(support_desk.scripted_model("billing", call_log=resumed_calls), run2), DurableTools(registry, run2), allow)
        assert second.output == first.output
        assert resumed_calls == [("task-1", 1)], "only the lost step is called again"
        assert run2.replayed_model_calls == 1

    asyncio.run(scenario())


def test_each_checkpoint_holds_only_what_its_step_added() -> None:
    async def scenario() -> None:
        log = _Log()
        run = DurableRun("task-1", 0, ckpt.Chain(), log.persist)
        # As the agent runs it (agent.py): the answer's record lands before landed_at_exit returns.
        await landed_at_exit(run, run_agent(_task(), "billing", DurableModel(support_desk.scripted_model("billing"), run),
                                            DurableTools(support_desk.registry(), run), ["lookup_invoice", "search_kb"]))
        kinds = [v["kind"] for v in log.records.values()]
        assert kinds == ["model", "tool", "model"], "the turn's two read-only results share one record"
        turn = next(v for v in log.records.values() if v["kind"] == "tool")
        assert sorted(e["name"] for e in ckpt.step_entries(turn)) == ["lookup_invoice", "search_kb"]
        assert all("messages" not in v for v in log.records.values()), "no step carries the history"

    asyncio.run(scenario())


def test_a_refused_checkpoint_ends_the_run_with_step_not_recorded() -> None:
    async def refuse(key: str, value: dict[str, Any]) -> None:
        raise CheckpointError("write to checkpoints[0] was not acknowledged: Message size too large")

    run = DurableRun("task-1", 0, ckpt.Chain(), refuse)
    loop = run_agent(_task(), "billing", DurableModel(support_desk.scripted_model("billing"), run), DurableTools(support_desk.registry(), run), ["lookup_invoice"])
    with pytest.raises(StepNotRecorded, match="Step 0 of task task-1 could not be checkpointed") as caught:
        asyncio.run(loop)
    assert isinstance(caught.value.__cause__, CheckpointError)  # the retry chain classifies by the cause


def test_a_repeated_tool_call_carries_the_same_idempotency_key() -> None:
    seen: list[str | None] = []

    @tool
    def refund(invoice_id: str) -> str:
        """Refund an invoice."""
        seen.append(idempotency_key())
        return "ok"

    class Caller:
        model_id = "fake:caller"

        async def complete(self, messages: Any, tools: Any) -> ModelResponse:
            if messages[-1].role == "tool":
                return ModelResponse("done", (), Usage(1, 1), self.model_id)
            return ModelResponse(None, (ToolCall("c1", "refund", {"invoice_id": "INV-1"}),), Usage(1, 1), self.model_id)

    async def scenario() -> None:
        registry = ToolRegistry([refund])
        for epoch in (0, 1):  # the second attempt had no tool checkpoint: the call repeats
            run = DurableRun("task-9", epoch, ckpt.Chain(), _Log().persist)
            await run_agent({"task_id": "task-9", "session_id": "s", "input": "refund"}, "billing", DurableModel(Caller(), run), DurableTools(registry, run), ["refund"])

    asyncio.run(scenario())
    assert seen == ["task-9:0:0", "task-9:0:0"]


class _LongTalker:
    """Calls a tool four times, then answers; answers a summary request with a summary."""

    model_id = "fake:long"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, messages: Any, tools: Any) -> ModelResponse:
        self.calls += 1
        if not tools:  # the history compressor's summary call offers no tools
            return ModelResponse("summary of earlier lookups", (), Usage(5, 5), self.model_id)
        done = sum(1 for m in messages if m.role == "tool")
        summarised = any(m.role == "system" and "summary of earlier" in (m.content or "") for m in messages)
        if done < 2 or (not summarised and done < 4):
            return ModelResponse(None, (ToolCall(f"c{self.calls}", "search_kb", {"query": "refund " * 40}),), Usage(1, 1), self.model_id)
        return ModelResponse(f"final after {done} tool results, summarised={summarised}", (), Usage(1, 1), self.model_id)


def test_a_resumed_loop_with_history_compression_replays_to_the_same_answer() -> None:
    from agentstream.specialist.history import HistoryCompressor

    async def attempt(chain: ckpt.Chain, epoch: int, log: _Log) -> tuple[str | None, int]:
        talker = _LongTalker()
        run = DurableRun("task-h", epoch, chain, log.persist)
        model = DurableModel(talker, run)
        history = HistoryCompressor(max_tokens=200, keep_recent=2, summarizer=model)
        outcome = await landed_at_exit(run, run_agent(
            {"task_id": "task-h", "session_id": "s", "input": "refund?"}, "billing", model,
            DurableTools(support_desk.registry(), run), ["search_kb"], max_steps=10, history=history))
        return outcome.output, talker.calls

    async def scenario() -> None:
        log = _Log()
        first, first_calls = await attempt(ckpt.Chain(), 0, log)
        assert first is not None and "summarised=True" in first
        assert any(v.get("text") == "summary of earlier lookups" for v in log.records.values()), "the summary was checkpointed"
        # Lose the last model step and resume: everything before it is replayed.
        records = sorted(log.records.values(), key=lambda v: v["seq"])[:-1]
        chain = ckpt.rebuild([[0, 0], [1, len(records)]], records)
        second, second_calls = await attempt(chain, 1, log)
        assert second == first
        assert second_calls == 1, f"only the lost call is made again, not {second_calls}"

    asyncio.run(scenario())
