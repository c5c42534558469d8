"""A retry tier's copy of a failed run that comes back before the run's park write (its
head's tombstone, specialist/lifecycle.py _park) is acknowledged waits for that write and
runs: taken for a duplicate, as it was (ci111: a tier delay shorter than a slow broker's
acknowledgement), the task got no result and its session's later tasks stayed parked."""

from __future__ import annotations

import asyncio
from typing import Any

from agentstream.retry.chain import RETRY
from agentstream.retry.headers import ATTEMPT
from agentstream.runtime import MessageContext
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.durable import DurableRun
from agentstream.specialist.lifecycle import TaskLifecycle
from agentstream.specialist.loop import AgentOutcome
from tests.unit import test_run_end as ends

RUN = ends.RUN
HEAD = ckpt.head_key(RUN)


class _Processor(ends._Processor):
    """The park write (the one whose tombstones name the head before any done marker is
    stored) is acknowledged only when the test opens ``gate``."""

    def __init__(self, store: ends._Store) -> None:
        super().__init__(store)
        self.gate = asyncio.Event()
        self.parking = asyncio.Event()

    async def persist_all(self, table: object, items: list[tuple[str, Any]], partition: int) -> None:
        if (HEAD, None) in items and ckpt.done_key(RUN).encode() not in self.store.data:
            self.parking.set()
            await self.gate.wait()
        await super().persist_all(table, items, partition)


class _Agent(ends._Agent):
    """Every model of the chain is down on the first attempt; the retry completes."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, task: dict[str, Any], run: DurableRun) -> AgentOutcome:
        self.runs += 1
        if self.runs == 1:
            return AgentOutcome("FAILED", None, ("MODEL_UNAVAILABLE", "every model of the chain failed"), [], {}, 0)
        return await super().run(task, run)


class _Retries:
    """The chain's verdict for the first failure: the next tier (its copy is the test's)."""

    def __init__(self) -> None:
        self.settled_sessions: list[str] = []

    def failed(self, value: bytes, source: MessageContext, error: Exception, attempt: int) -> str:
        assert attempt == 0, f"only the first attempt fails here, not attempt {attempt}"
        return RETRY

    async def settled(self, session: str) -> None:
        self.settled_sessions.append(session)


def _worker() -> tuple[TaskLifecycle, _Processor, _Agent, _Retries]:
    store = ends._Store()
    lifecycle, encoding = ends._worker(store)
    processor = _Processor(store)
    processor.sent = encoding.sent
    lifecycle.app = lifecycle.service.processor = processor  # type: ignore[misc]
    agent = _Agent()
    lifecycle.agent = agent  # type: ignore[assignment]
    retries = _Retries()
    lifecycle.retries = retries  # type: ignore[assignment]
    return lifecycle, processor, agent, retries


def test_a_tier_copy_read_before_the_park_write_lands_waits_for_it_and_runs() -> None:
    async def scenario() -> tuple[_Processor, _Agent, _Retries, bool]:
        lifecycle, processor, agent, retries = _worker()
        await lifecycle.on_routed(dict(ends.TASK), MessageContext("in", 0, 7, b"s", (), 0))
        first = asyncio.ensure_future(processor.spawned.pop())
        await asyncio.wait_for(processor.parking.wait(), 5)  # failed, sent to the tier, head's tombstone on its way
        assert processor.store.get(HEAD.encode()) is not None
        copy = MessageContext("in.retry-1", 0, 0, b"s", ((ATTEMPT, b"1"),), 0)
        handled = asyncio.ensure_future(lifecycle.on_routed(dict(ends.TASK), copy))
        await asyncio.sleep(0)  # one turn of the loop: a copy taken for a duplicate returns in it
        waited = not handled.done()
        processor.gate.set()
        await asyncio.wait_for(asyncio.gather(first, handled), 5)
        assert processor.spawned, "the tier's copy was taken for a duplicate: nothing runs it"
        await asyncio.wait_for(processor.spawned.pop(), 5)
        return processor, agent, retries, waited

    processor, agent, retries, waited = asyncio.run(scenario())
    assert waited, "the copy did not wait for the park write"
    assert agent.runs == 2
    assert sum(kind == "send_acked" and topic == "supervisor" for kind, topic in processor.trips) == 1
    assert processor.sent["SpecialistResult"]["status"] == "COMPLETED"
    assert retries.settled_sessions == ["s"], "the session's parked tasks are let go once the retry ends"
    assert set(processor.store.data) == {ckpt.done_key(RUN).encode()}
