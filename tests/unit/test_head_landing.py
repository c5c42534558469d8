"""A routed task's checkpoint head lands while its first model call runs (specialist/
lifecycle.py _accept): the call does not wait for the broker, the run's first record
does, the source offset is released only once the head has landed, a copy of the task
arriving meanwhile is a duplicate, and a refused head fails the run into the retry chain
(not as a model's error)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from agentstream.cancellation.records import cancel_record
from agentstream.models.base import Message, ModelResponse, Usage
from agentstream.retry.chain import RETRY
from agentstream.runtime import MessageContext
from agentstream.runtime.errors import CheckpointError
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.durable import DurableModel, DurableRun, landed_at_exit
from agentstream.specialist.lifecycle import TaskLifecycle
from agentstream.specialist.loop import AgentOutcome, StepNotRecorded
from tests.unit import test_run_end as ends

RUN = ends.RUN
HEAD = ckpt.head_key(RUN)


class _Processor(ends._Processor):
    """The write of ``gated`` (the head, unless told) is acknowledged when the test opens
    ``gate``, or refused then."""

    def __init__(self, store: ends._Store, *, gated: str = HEAD, refuse: bool = False) -> None:
        super().__init__(store)
        self.gated = gated
        self.gate = asyncio.Event()
        self.refuse = refuse

    async def persist(self, table: object, key: str, value: Any, partition: int | None = None) -> None:
        if key == self.gated:
            self.trips.append(("produce", key))
            await self.gate.wait()
            if self.refuse:
                raise CheckpointError(f"write to checkpoints[0] was not acknowledged: refused ({key})")
        await super().persist(table, key, value, partition)

    def release(self) -> None:
        self.trips.append(("release", None))


class _Agent(ends._Agent):
    """One model call (a final answer), through the durable model as the real agent makes it."""

    def __init__(self, store: ends._Store) -> None:
        self.store = store
        self.calling = asyncio.Event()
        self.head_stored_at_call: bool | None = None

    async def complete(self, messages: list[Message], tools: Any) -> ModelResponse:
        self.head_stored_at_call = self.store.get(HEAD.encode()) is not None
        self.calling.set()
        return ModelResponse("refunded", (), Usage(1, 1), "m")

    async def run(self, task: dict[str, Any], run: DurableRun) -> AgentOutcome:
        async def loop() -> AgentOutcome:
            model = DurableModel(self, run)  # type: ignore[arg-type]
            response = await model.complete([Message("user", "Refund INV-1")], [])
            return AgentOutcome("COMPLETED", response.text, None, [], {}, 1)

        return await landed_at_exit(run, loop())


class _Retries:
    def __init__(self) -> None:
        self.errors: list[Exception] = []

    def failed(self, value: bytes, source: MessageContext, error: Exception, attempt: int) -> str:
        self.errors.append(error)
        return RETRY


def _worker(*, refuse_head: bool = False) -> tuple[TaskLifecycle, _Processor, _Agent, _Retries]:
    store = ends._Store()
    lifecycle, encoding = ends._worker(store)
    processor = _Processor(store, refuse=refuse_head)
    processor.sent = encoding.sent  # what the service's encoder keeps (ends._worker)
    agent = _Agent(store)
    lifecycle.app = lifecycle.service.processor = processor  # type: ignore[misc]
    lifecycle.agent = agent  # type: ignore[assignment]
    lifecycle.retries = _Retries()  # type: ignore[assignment]
    return lifecycle, processor, agent, lifecycle.retries  # type: ignore[return-value]


async def _called(agent: _Agent) -> None:
    """Return once the model is called; fail if it is not within 5 s (it would wait for the head)."""
    try:
        await asyncio.wait_for(agent.calling.wait(), 5)
    except TimeoutError:
        raise AssertionError("the first model call did not start while the head was on its way") from None


def _routed() -> tuple[dict[str, Any], MessageContext]:
    return dict(ends.TASK), MessageContext("in", 0, 7, b"s", (), 0)


def test_the_first_model_call_runs_while_the_head_lands_and_its_record_follows_the_head_without_waiting() -> None:
    async def scenario() -> tuple[list[tuple[str, Any]], list[tuple[str, Any]], _Agent]:
        lifecycle, processor, agent, _ = _worker()
        await lifecycle.on_routed(*_routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _called(agent)
        await _spin()  # let anything that would go on without the head go on
        before = list(processor.trips)
        processor.gate.set()
        await work
        return before, processor.trips, agent

    before, trips, agent = asyncio.run(scenario())
    assert agent.head_stored_at_call is False, "the model was called while the head was still on its way"
    # Produced behind the head (one partition: it lands after it), not waiting for it.
    assert before[:2] == [("produce", HEAD), ("persist", ckpt.step_key(RUN, 0, 0))]
    assert ("release", None) not in before, "the source offset is released only once the head has landed"
    assert ("send_acked", "supervisor") not in before, "no result before the head has landed"
    assert trips[len(before):len(before) + 3] == [("persist", HEAD), ("release", None), ("send_acked", "supervisor")]


def test_a_copy_of_the_task_arriving_while_its_head_lands_is_a_duplicate() -> None:
    async def scenario() -> int:
        lifecycle, processor, agent, _ = _worker()
        await lifecycle.on_routed(*_routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _called(agent)
        await lifecycle.on_routed(*_routed())  # redelivered before the head landed
        processor.gate.set()
        await work
        return len(processor.spawned)

    assert asyncio.run(scenario()) == 0, "the copy started no second run"


def test_a_refused_head_fails_the_run_into_the_retry_chain_not_as_the_models_error() -> None:
    async def scenario() -> tuple[TaskLifecycle, _Processor, _Retries]:
        lifecycle, processor, agent, retries = _worker(refuse_head=True)
        await lifecycle.on_routed(*_routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _called(agent)
        processor.gate.set()
        await work
        return lifecycle, processor, retries

    lifecycle, processor, retries = asyncio.run(scenario())
    [error] = retries.errors
    assert isinstance(error, StepNotRecorded) and f"head of task {RUN}" in str(error), error
    assert ("release", None) not in processor.trips, "the offset is released only when the work ends"
    # The run's record, produced behind the head, goes with it: no step outlives its head.
    assert processor.trips[-1] == ("persist_all", [(ckpt.place_key(RUN), "s"), (ckpt.step_key(RUN, 0, 0), None),
                                                   (HEAD, None)])
    assert RUN not in lifecycle.accepting, "a redelivered copy is accepted again"


async def _spin(times: int = 10) -> None:
    """Let every task that can go on without the broker's acknowledgement go on."""
    for _ in range(times):
        await asyncio.sleep(0)


def test_a_task_canceled_while_its_head_is_refused_goes_to_the_retry_chain_not_lost() -> None:
    """Canceled before its loop began, it would end CANCELED; a refused head must fail it
    into the retry chain first (its CANCELED end would otherwise raise from the cancel's
    handler, and the work's end commit the offset of a task that has no head)."""

    async def scenario() -> tuple[_Processor, _Retries]:
        lifecycle, processor, _, retries = _worker(refuse_head=True)
        cancel = cancel_record(RUN, "s", "acme", "ops", "customer hung up")
        lifecycle.cancels = SimpleNamespace(requested=lambda task_id, partition: cancel)  # type: ignore[assignment]
        await lifecycle.on_routed(*_routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _spin()
        processor.gate.set()
        await asyncio.wait_for(work, 5)
        return processor, retries

    processor, retries = asyncio.run(scenario())
    assert [type(error) for error in retries.errors] == [StepNotRecorded], retries.errors
    assert ("send_acked", "supervisor") not in processor.trips


def test_work_cancelled_while_its_head_lands_takes_the_write_along_and_a_copy_is_accepted_again() -> None:
    """The partition went: as when the head was awaited inline, its write is cancelled with
    the work, so a copy redelivered to this worker is not taken for a duplicate."""

    async def scenario() -> tuple[TaskLifecycle, _Processor]:
        lifecycle, processor, agent, _ = _worker()
        await lifecycle.on_routed(*_routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _called(agent)
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        await _spin()
        await lifecycle.on_routed(*_routed())  # the partition came back with the record
        return lifecycle, processor

    lifecycle, processor = asyncio.run(scenario())
    assert ("persist", HEAD) not in processor.trips and ("release", None) not in processor.trips
    assert len(processor.spawned) == 1, "the redelivered copy started a run"
    processor.spawned.pop().close()


def test_work_cancelled_while_its_head_lands_takes_the_runs_records_behind_it_along() -> None:
    """The run's answer is produced behind the head without waiting for it; a head never
    produced (it waited for the partition's turn) must not leave that record to land alone."""

    class _BothOnTheirWay(_Processor):
        async def persist(self, table: object, key: str, value: Any, partition: int | None = None) -> None:
            if key != ckpt.step_key(RUN, 0, 0):
                return await super().persist(table, key, value, partition)
            self.trips.append(("produce", key))
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.trips.append(("cancelled", key))
                raise
            await super().persist(table, key, value, partition)

    async def scenario() -> list[tuple[str, Any]]:
        lifecycle, _, agent, _ = _worker()
        processor = _BothOnTheirWay(lifecycle.checkpoints.partition(0))  # type: ignore[attr-defined]
        processor.sent = lifecycle.service.processor.sent  # type: ignore[attr-defined]
        lifecycle.app = lifecycle.service.processor = processor  # type: ignore[misc]
        await lifecycle.on_routed(*_routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _called(agent)
        await _spin()  # the answer's record is on its way behind the head
        assert ("produce", ckpt.step_key(RUN, 0, 0)) in processor.trips
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        await _spin()
        return list(processor.trips)  # before asyncio.run cancels what is left

    trips = asyncio.run(scenario())
    assert ("cancelled", ckpt.step_key(RUN, 0, 0)) in trips, "the record behind the head went on alone"


def test_a_run_failing_before_its_loop_goes_to_a_tier_only_once_its_head_has_landed() -> None:
    """The tier's tombstone of the head must come after the head (one partition, in order):
    a head landing after it would make the task's copy from the tier a duplicate."""

    def broken_progress(*args: Any) -> None:
        raise RuntimeError("progress could not be queued")

    async def scenario() -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        lifecycle, processor, _, _ = _worker()
        lifecycle.service.progress = broken_progress  # raises in _run, before the loop
        await lifecycle.on_routed(*_routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _spin()
        before = list(processor.trips)
        processor.gate.set()
        await asyncio.wait_for(work, 5)
        return before, processor.trips

    before, trips = asyncio.run(scenario())
    assert before == [("produce", HEAD)], "nothing of the tier before the head landed"
    ended = next(i for i, (kind, _) in enumerate(trips) if kind == "persist_all")
    assert trips.index(("persist", HEAD)) < ended and (ckpt.head_key(RUN), None) in trips[ended][1]


def test_work_cancelled_at_its_end_while_the_head_lands_takes_the_write_along_too() -> None:
    """A loop that ends without a record (its first model call failed at once) leaves the
    head on its way into the end, which waits for it: a partition lost then cancels it as well."""

    async def scenario() -> tuple[TaskLifecycle, _Processor]:
        lifecycle, processor, agent, _ = _worker()

        async def failed_at_once(task: dict[str, Any], run: DurableRun) -> AgentOutcome:
            agent.calling.set()
            return AgentOutcome("FAILED", None, ("MODEL_ERROR", "HTTP 400"), [], {}, 0)

        agent.run = failed_at_once  # type: ignore[method-assign]
        await lifecycle.on_routed(*_routed())
        work = asyncio.ensure_future(processor.spawned.pop())
        await _called(agent)
        await _spin()  # the end waits for the head now
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        await _spin()
        assert RUN not in lifecycle.accepting, "the head's write was cancelled with the work"
        await lifecycle.on_routed(*_routed())
        return lifecycle, processor

    lifecycle, processor = asyncio.run(scenario())
    assert ("persist", HEAD) not in processor.trips
    assert len(processor.spawned) == 1, "the redelivered copy started a run"
    processor.spawned.pop().close()
