"""A run's answer (a model reply without tool calls) is checkpointed without waiting:
the lifecycle sends the run's transcript while it lands and the result only after both
(specialist/lifecycle.py _finish); a refused answer fails the run into the retry chain
with no result; a history summary (a reply without tool calls too) lands before the next
model call starts; and a run whose caller does not await its last record itself (the
in-process runs of evals and replay) returns only once it has landed."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from typing import Any

import pytest

from agentstream.models.base import Message, ModelResponse, Usage
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.durable import DurableModel, DurableRun, landed_at_exit
from agentstream.specialist.loop import StepNotRecorded
from tests.unit import test_head_landing as heads
from tests.unit import test_run_end as ends

ANSWER = ckpt.step_key(ends.RUN, 0, 0)  # the one model call of heads._Agent is the answer


def _worker(*, refuse_answer: bool = False) -> tuple[Any, heads._Processor, heads._Retries]:
    """A worker whose head lands at once and whose answer's record when the test opens the gate."""
    lifecycle, first, agent, retries = heads._worker()
    processor = heads._Processor(agent.store, gated=ANSWER, refuse=refuse_answer)
    processor.sent = first.sent
    lifecycle.app = lifecycle.service.processor = processor
    return lifecycle, processor, retries


async def _until(condition: Any, what: str) -> None:
    """Let the loop run until ``condition()``; fail after 5 s."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(poll(), 5)
    except TimeoutError:
        raise AssertionError(f"not seen within 5 s: {what}") from None


def test_the_transcript_is_sent_while_the_answer_lands_and_the_result_after_both() -> None:
    async def scenario() -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        lifecycle, processor, _ = _worker()
        await lifecycle.on_routed(*heads._routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _until(lambda: ("send_acked", "transcripts") in processor.trips, "the transcript sent before the answer landed")
        before = list(processor.trips)
        processor.gate.set()
        await work
        return before, processor.trips

    before, trips = asyncio.run(scenario())
    assert ("persist", ANSWER) not in before and ("send_acked", "supervisor") not in before, before
    assert trips.index(("persist", ANSWER)) < trips.index(("send_acked", "supervisor")), "the result after the answer landed"


def test_the_transcript_holds_the_answer_that_was_still_on_its_way() -> None:
    async def scenario() -> dict[str, Any]:
        lifecycle, processor, _ = _worker()
        await lifecycle.on_routed(*heads._routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _until(lambda: ends.TRANSCRIPT in processor.sent, "the transcript built before the answer landed")
        transcript = processor.sent[ends.TRANSCRIPT]
        processor.gate.set()
        await work
        return transcript

    steps = ends.steps_of(asyncio.run(scenario()))
    assert [step["kind"] for step in steps] == ["model"] and steps[0]["text"] == "refunded"


@pytest.mark.parametrize("end", ["completed", "answer refused", "head refused", "crashed"])
def test_a_finished_run_leaves_no_cycle_for_the_collector(end: str) -> None:
    """RunSteps holds the run's DurableRun while it runs (its answer may be on its way), and
    the DurableRun holds the RunSteps through its persist: the end lets go, so a finished
    run is freed at once, not at the collector's next pass (its records with it); and an
    error that failed the run (its traceback holds the run's frames) is let go of too."""

    async def scenario() -> weakref.ref[Any]:
        lifecycle, processor, agent, retries = heads._worker()
        if end == "answer refused":
            processor.gated, processor.refuse = ANSWER, True
        if end == "head refused":  # the answer is produced behind it and lands: the head's refusal fails the run
            processor.refuse = True
        runs: list[weakref.ref[Any]] = []
        run_once = agent.run

        async def noted(task: dict[str, Any], run: Any) -> Any:
            runs.append(weakref.ref(run))
            outcome = await run_once(task, run)
            if end == "crashed":
                raise RuntimeError("a bug after the loop")
            return outcome

        agent.run = noted  # type: ignore[method-assign]
        processor.gate.set()
        await lifecycle.on_routed(*heads._routed())
        await processor.spawned.pop()
        retries.errors.clear()  # the fake retry chain keeps the error (and so its traceback)
        return runs[0]

    gc.disable()
    logging.disable(logging.CRITICAL)  # a captured log record keeps a crash's traceback too
    try:
        run = asyncio.run(scenario())
        assert run() is None, "the finished run's DurableRun is still alive without a collection"
    finally:
        logging.disable(logging.NOTSET)
        gc.enable()


def test_a_refused_answer_fails_the_run_into_the_retry_chain_and_sends_no_result() -> None:
    async def scenario() -> tuple[heads._Processor, heads._Retries]:
        lifecycle, processor, retries = _worker(refuse_answer=True)
        processor.gate.set()
        await lifecycle.on_routed(*heads._routed())
        await processor.spawned.pop()
        return processor, retries

    processor, retries = asyncio.run(scenario())
    [error] = retries.errors
    assert isinstance(error, StepNotRecorded) and "Step 0" in str(error), error
    assert ("send_acked", "supervisor") not in processor.trips


class _Summarizer:
    """Replies without tool calls (as a history summary does), noting what had landed when called."""

    model_id = "fake:summary"

    def __init__(self, landed: list[str]) -> None:
        self.landed = landed
        self.seen: list[list[str]] = []

    async def complete(self, messages: Any, tools: Any) -> ModelResponse:
        self.seen.append(list(self.landed))
        return ModelResponse(f"summary {len(self.seen)}", (), Usage(1, 1), "m")


def _gated_run(gate: asyncio.Event, landed: list[str], *, caller_awaits: bool = False) -> DurableRun:
    async def persist(key: str, record: dict[str, Any]) -> None:
        await gate.wait()
        landed.append(key)

    return DurableRun("t1", 0, ckpt.Chain(), persist, last_awaited_by_caller=caller_awaits)


def test_a_reply_without_tool_calls_lands_before_the_next_model_call_starts() -> None:
    async def scenario() -> _Summarizer:
        gate, landed = asyncio.Event(), []
        run = _gated_run(gate, landed, caller_awaits=True)
        summarizer = _Summarizer(landed)
        model = DurableModel(summarizer, run)  # type: ignore[arg-type]
        await model.complete([Message("user", "summarize")], [])  # returns with its record on its way
        second = asyncio.ensure_future(model.complete([Message("user", "go on")], []))
        await heads._spin()
        assert len(summarizer.seen) == 1, "the next call waited for the reply's record"
        gate.set()
        await second
        await run.landed()
        return summarizer

    assert asyncio.run(scenario()).seen == [[], [ckpt.step_key("t1", 0, 0)]]


def test_a_run_whose_caller_does_not_await_its_last_record_returns_once_it_has_landed() -> None:
    async def scenario() -> list[str]:
        gate, landed = asyncio.Event(), []
        run = _gated_run(gate, landed)
        model = DurableModel(_Summarizer(landed), run)  # type: ignore[arg-type]

        async def loop() -> None:
            await model.complete([Message("user", "answer")], [])

        done = asyncio.ensure_future(landed_at_exit(run, loop()))
        await heads._spin()
        assert not done.done(), "returned before the answer landed"
        gate.set()
        await done
        return landed

    assert asyncio.run(scenario()) == [ckpt.step_key("t1", 0, 0)]


def test_a_waited_record_behind_a_refused_one_leaves_no_cycle_for_the_collector() -> None:
    """The refusal reaches the waited record's caller through its frames: none of them may
    keep the run's writes (and through them the run) alive once the caller lets go."""

    async def scenario() -> weakref.ref[Any]:
        async def persist(key: str, value: dict[str, Any]) -> None:
            if value["seq"] == 0:
                raise RuntimeError("write to checkpoints[0] was not acknowledged")

        run = DurableRun("t", 0, ckpt.Chain(), persist)
        await run.record(lambda seq: {"seq": seq}, wait=False)  # a read-only turn's record, refused
        with pytest.raises(StepNotRecorded, match="Step 0 of task t"):
            await run.record(lambda seq: {"seq": seq})  # a reply calling tools waits for it
        return weakref.ref(run)

    gc.disable()
    try:
        run = asyncio.run(scenario())
        assert run() is None, "the run is kept alive by a cycle through its refused writes"
    finally:
        gc.enable()
