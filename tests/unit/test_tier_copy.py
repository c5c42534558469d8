"""A retry tier's copy of a failed run is that run's next attempt, never a duplicate:

- back before the run's park write (its head's tombstone, specialist/lifecycle.py _park)
  is acknowledged, it waits for that write beside the partition, not in the handler, and
  runs (ci111: taken for a duplicate, the task got no result and its session's later tasks
  stayed parked);
- after a park write the broker refused, which left the head, it takes that head's place.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from agentstream.retry.chain import RETRY
from agentstream.retry.headers import ATTEMPT
from agentstream.runtime import MessageContext
from agentstream.runtime.errors import CheckpointError
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.durable import DurableRun
from agentstream.specialist.lifecycle import TaskLifecycle
from agentstream.specialist.loop import AgentOutcome
from tests.unit import test_run_end as ends

RUN = ends.RUN
HEAD = ckpt.head_key(RUN)
FIRST_STEP = ckpt.step_key(RUN, 0, 0)
COPY = MessageContext("in.retry-1", 0, 0, b"s", ((ATTEMPT, b"1"),), 0)


class _Processor(ends._Processor):
    """The park write (the one whose tombstones name the head before any done marker is
    stored) is stored at once when ``store_first`` (a reader sees no head then), and
    acknowledged, or refused when ``refuse``, only when the test opens ``gate``."""

    def __init__(self, store: ends._Store, *, store_first: bool = False, refuse: bool = False) -> None:
        super().__init__(store)
        self.gate = asyncio.Event()
        self.park_started = asyncio.Event()
        self.store_first = store_first
        self.refuse = refuse

    async def persist_all(self, table: object, items: list[tuple[str, Any]], partition: int) -> None:
        if (HEAD, None) in items and ckpt.done_key(RUN).encode() not in self.store.data and not self.park_started.is_set():
            self.park_started.set()
            if self.store_first:
                await super().persist_all(table, items, partition)
            await self.gate.wait()
            if self.refuse:
                raise CheckpointError("write to checkpoints[0] was not acknowledged: refused")
            if self.store_first:
                return
        await super().persist_all(table, items, partition)


class _Agent(ends._Agent):
    """Every model of the chain is down on the first attempt, after a first reply was
    recorded; the retry completes."""

    def __init__(self) -> None:
        self.order: list[str] = []  # the task of each run, in the order they began

    @property
    def runs(self) -> int:
        return len(self.order)

    async def run(self, task: dict[str, Any], run: DurableRun) -> AgentOutcome:
        self.order.append(task["task_id"])
        if self.order == [RUN]:
            await run.record(lambda seq: ckpt.model_step(0, ends.REPLY, run.epoch, seq, timing=ckpt.Timing(1, 2)))
            return AgentOutcome("FAILED", None, ("MODEL_UNAVAILABLE", "every model of the chain failed"), [], {}, 0)
        return await super().run(task, run)

    def result(self, task: dict[str, Any], outcome: AgentOutcome, started: int) -> dict[str, Any]:
        return {**super().result(task, outcome, started), "error": outcome.error}


class _Retries:
    """The chain's verdict for the first failure: the next tier (its copy is the test's)."""

    def __init__(self) -> None:
        self.settled_sessions: list[str] = []

    def failed(self, value: bytes, source: MessageContext, error: Exception, attempt: int) -> str:
        assert attempt == 0, f"only the first attempt fails here, not attempt {attempt}"
        return RETRY

    async def settled(self, session: str) -> None:
        self.settled_sessions.append(session)


def _worker(**gating: bool) -> tuple[TaskLifecycle, _Processor, _Agent, _Retries]:
    store = ends._Store()
    lifecycle, encoding = ends._worker(store)
    processor = _Processor(store, **gating)
    processor.sent = encoding.sent
    lifecycle.app = lifecycle.service.processor = processor  # type: ignore[misc]
    agent = _Agent()
    lifecycle.agent = agent  # type: ignore[assignment]
    retries = _Retries()
    lifecycle.retries = retries  # type: ignore[assignment]
    return lifecycle, processor, agent, retries


async def _first_run_parking(lifecycle: TaskLifecycle, processor: _Processor) -> asyncio.Future[None]:
    """Route the task; return its work once it has failed, sent its tier copy and started its park write."""
    await lifecycle.on_routed(dict(ends.TASK), MessageContext("in", 0, 7, b"s", (), 0))
    first = asyncio.ensure_future(processor.spawned.pop())
    await asyncio.wait_for(processor.park_started.wait(), 5)
    return first


def _assert_the_copy_ran_to_its_result(lifecycle: TaskLifecycle, processor: _Processor, agent: _Agent, retries: _Retries) -> None:
    assert agent.runs == 2
    assert sum(kind == "send_acked" and topic == "supervisor" for kind, topic in processor.trips) == 1
    assert processor.sent["SpecialistResult"]["status"] == "COMPLETED"
    assert retries.settled_sessions == ["s"], "the session's parked tasks are let go once the retry ends"
    assert set(processor.store.data) == {ckpt.done_key(RUN).encode()}
    assert not lifecycle.parking and not lifecycle.looping and not lifecycle.accepting


@pytest.mark.parametrize("store_first", [False, True], ids=["head still stored", "head gone, place not kept yet"])
def test_a_tier_copy_read_before_the_park_write_is_done_waits_for_it_beside_the_partition_and_runs(store_first: bool) -> None:
    async def scenario() -> tuple[TaskLifecycle, _Processor, _Agent, _Retries]:
        lifecycle, processor, agent, retries = _worker(store_first=store_first)
        first = await _first_run_parking(lifecycle, processor)
        assert (processor.store.get(HEAD.encode()) is None) == store_first
        # Not counted before the head is gone: a checkpoint could commit a count that a run
        # resumed from the head (a kill now) would never settle.
        assert "s" not in lifecycle.retrying
        await asyncio.wait_for(lifecycle.on_routed(dict(ends.TASK), COPY), 1)  # at once: the handler does not wait
        assert len(processor.spawned) == 1, "the tier's copy was taken for a duplicate: nothing runs it"
        copy = asyncio.ensure_future(processor.spawned.pop())
        await asyncio.sleep(0)  # one turn of the loop: a copy that did not wait would be accepted in it
        assert not copy.done() and agent.runs == 1, "the copy did not wait for the park write"
        processor.gate.set()
        await asyncio.wait_for(first, 5)
        assert lifecycle.retrying == {"s": 1}, "the session has an event in a tier"
        await asyncio.wait_for(copy, 5)
        return lifecycle, processor, agent, retries

    _assert_the_copy_ran_to_its_result(*asyncio.run(scenario()))


def test_a_tier_copy_takes_the_place_of_a_head_its_refused_park_write_left() -> None:
    async def scenario() -> tuple[TaskLifecycle, _Processor, _Agent, _Retries]:
        lifecycle, processor, agent, retries = _worker(refuse=True)
        first = await _first_run_parking(lifecycle, processor)
        processor.gate.set()
        await asyncio.wait_for(first, 5)  # a RETRY all the same: its copy is out
        assert processor.store.get(HEAD.encode()) is not None and processor.store.get(FIRST_STEP.encode()) is not None
        await lifecycle.on_routed(dict(ends.TASK), COPY)
        assert processor.spawned, "the tier's copy was taken for a duplicate of the head left behind"
        await asyncio.wait_for(processor.spawned.pop(), 5)
        return lifecycle, processor, agent, retries

    lifecycle, processor, agent, retries = asyncio.run(scenario())
    head_write = next(items for kind, items in processor.trips if kind == "persist_all" and (FIRST_STEP, None) in items)
    assert [key for key, _ in head_write] == [FIRST_STEP, HEAD], "the first attempt's step goes in the new head's write, before it"
    _assert_the_copy_ran_to_its_result(lifecycle, processor, agent, retries)


def test_a_refused_park_write_keeps_the_session_place_so_the_copy_runs_before_the_task_queued_behind() -> None:
    async def scenario() -> _Agent:
        lifecycle, processor, agent, _ = _worker(refuse=True)
        await lifecycle.on_routed(dict(ends.TASK), MessageContext("in", 0, 7, b"s", (), 0))
        await lifecycle.on_routed({**ends.TASK, "task_id": "t2"}, MessageContext("in", 0, 8, b"s", (), 0))
        queued, first = asyncio.ensure_future(processor.spawned.pop()), asyncio.ensure_future(processor.spawned.pop())
        await asyncio.wait_for(processor.park_started.wait(), 5)
        processor.gate.set()
        await asyncio.wait_for(first, 5)
        await lifecycle.on_routed(dict(ends.TASK), COPY)
        await asyncio.wait_for(asyncio.gather(processor.spawned.pop(), queued), 5)
        return agent

    assert asyncio.run(scenario()).order == [RUN, RUN, "t2"], "the session's next task overtook the retry"


@pytest.mark.parametrize("head_attempt, live", [(1, ""), (0, "looping"), (0, "waiting for a human")])
def test_a_tier_copy_meeting_a_head_of_its_own_attempt_or_of_a_live_run_is_a_duplicate(head_attempt: int, live: str) -> None:
    async def scenario() -> _Processor:
        lifecycle, processor, _, _ = _worker()
        processor.store.put(HEAD, {"task": dict(ends.TASK), "epochs": [[0, 0]], "offset": 7, "attempt": head_attempt})
        if live == "looping":
            lifecycle.looping.add(RUN)  # resumed from that head after a crash, running here
        elif live:
            lifecycle.desk = SimpleNamespace(waits=lambda run, partition: run == RUN)  # type: ignore[assignment]
        await lifecycle.on_routed(dict(ends.TASK), COPY)
        return processor

    assert asyncio.run(scenario()).spawned == [], "the copy was accepted beside the run of that head"


def test_a_copy_that_cannot_be_taken_on_after_its_wait_goes_to_the_retry_chain_as_in_the_handler() -> None:
    async def scenario() -> tuple[list[tuple[int, str]], list[str], dict[str, Any]]:
        lifecycle, processor, _, _ = _worker()
        first = await _first_run_parking(lifecycle, processor)
        await lifecycle.on_routed(dict(ends.TASK), COPY)
        copy = asyncio.ensure_future(processor.spawned.pop())

        def store_gone(*args: Any) -> Any:
            raise RuntimeError("store gone")

        failures: list[tuple[int, str]] = []
        settled: list[str] = []

        async def settle(session: str) -> None:
            settled.append(session)

        lifecycle._place = store_gone  # type: ignore[method-assign]
        lifecycle.retries = SimpleNamespace(  # type: ignore[assignment]
            failed=lambda value, ctx, exc, attempt: failures.append((attempt, str(exc))) or "dead", settled=settle)
        processor.gate.set()
        await asyncio.wait_for(asyncio.gather(first, copy), 5)
        assert RUN not in lifecycle.accepting, "every later copy would be taken for a duplicate"
        return failures, settled, processor.sent["SpecialistResult"]

    failures, settled, result = asyncio.run(scenario())
    assert failures == [(1, "store gone")] and settled == ["s"], "a dead copy lets its session's parked tasks go"
    assert result["status"] == "FAILED" and result["error"] == ("DEAD_LETTERED", "RuntimeError: store gone"), \
        "the supervisor gets the run's result, as for a run that dies in its work"
