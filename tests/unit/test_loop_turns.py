"""How many turns of the event loop a loop's step waits beyond the work itself. At 1,000
loops in flight a turn takes ~20-30 ms (bench/RESULTS.md, session 24), so a step that
waits for its record or its tool calls through a chain of tasks waits that much per link."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable
from typing import Any

import pytest

from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.durable import DurableRun, DurableTools, concurrently
from agentstream.specialist.loop import StepNotRecorded
from agentstream.tools.registry import ToolRegistry, tool


class _Turns:
    """Counts the turns of the event loop while it runs (one ``sleep(0)`` per turn)."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Turns:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # the ticker runs from the next turn on
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1

    async def taken_by(self, work: Awaitable[Any]) -> int:
        before = self.count
        await work
        return self.count - before


def test_a_waited_record_ends_three_turns_after_the_writes_before_it_land() -> None:
    """Two records on their way; the second is waited for. Once both have landed the
    waiter ends three turns later (the writes' tasks end, the shield hands over, the
    waiter wakes), and this test's wait for it takes a fourth; a task per record chaining
    it behind the one before made it five."""

    async def scenario() -> int:
        lands = asyncio.get_running_loop().create_future()

        async def persist(key: str, value: dict[str, Any]) -> None:
            await lands

        run = DurableRun("t", 0, ckpt.Chain(), persist)
        await run.record(lambda seq: {"seq": seq}, wait=False)
        waiter = asyncio.create_task(run.record(lambda seq: {"seq": seq}))
        async with _Turns() as turns:
            await asyncio.sleep(0)  # both writes are produced and wait for the broker
            lands.set_result(None)
            return await turns.taken_by(waiter)

    assert asyncio.run(scenario()) == 4


def test_a_refused_record_is_reported_to_its_waiter_and_to_the_waiter_of_a_record_written_meanwhile() -> None:
    """Records 0 (refused) and 1 are waited for; record 2 is written while they are on their
    way: its waiter learns of the refusal too (it depends on record 0), and then the run
    has nothing left on its way."""

    async def scenario() -> tuple[str, str]:
        refuse = asyncio.Event()

        async def persist(key: str, value: dict[str, Any]) -> None:
            if value["seq"] == 0:
                await refuse.wait()
                raise RuntimeError("write to checkpoints[0] was not acknowledged")

        run = DurableRun("t", 0, ckpt.Chain(), persist)
        await run.record(lambda seq: {"seq": seq}, wait=False)
        waiter = asyncio.create_task(run.record(lambda seq: {"seq": seq}))
        await asyncio.sleep(0)  # the waiter waits for records 0 and 1
        await run.record(lambda seq: {"seq": seq}, wait=False)
        refuse.set()
        with pytest.raises(StepNotRecorded) as first:
            await waiter
        with pytest.raises(StepNotRecorded) as later:
            await run.landed()
        await run.landed()  # reported to both: nothing left on its way
        return str(first.value), str(later.value)

    first, later = asyncio.run(scenario())
    assert first.startswith("Step 0 of task t could not be checkpointed")
    assert later == first


def _registry() -> ToolRegistry:
    @tool
    async def lookup(invoice_id: str) -> str:
        """Look an invoice up."""
        return f"{invoice_id} is paid"

    return ToolRegistry([lookup])


async def _call_turns(calls: int) -> int:
    async def persist(key: str, value: dict[str, Any]) -> None:
        return None

    run = DurableRun("t", 0, ckpt.Chain(), persist)
    tools = DurableTools(_registry(), run)
    async with _Turns() as turns:
        return await turns.taken_by(tools.call_many([("lookup", {"invoice_id": f"INV-{n}"}) for n in range(calls)]))


def test_a_turn_of_one_tool_call_that_does_not_wait_takes_no_turn_of_the_event_loop() -> None:
    assert asyncio.run(_call_turns(1)) == 0, "asyncio.gather took three"


def test_a_turn_of_two_tool_calls_takes_two_turns_of_the_event_loop() -> None:
    assert asyncio.run(_call_turns(2)) == 2, "asyncio.gather took three"


def test_calls_run_concurrently_and_their_results_come_in_call_order() -> None:
    """Each call waits for the other to start: run one after the other, neither would end."""

    async def scenario() -> list[str]:
        started = {name: asyncio.Event() for name in ("a", "b")}

        async def call(name: str, other: str) -> str:
            started[name].set()
            await started[other].wait()
            return name

        return await asyncio.wait_for(concurrently([call("a", "b"), call("b", "a")]), 2)

    assert asyncio.run(scenario()) == ["a", "b"]


def test_an_error_of_the_first_call_is_raised_at_once_and_the_other_calls_go_on() -> None:
    async def scenario() -> tuple[bool, bool]:
        release = asyncio.Event()
        finished = asyncio.Event()

        async def fails() -> str:
            await asyncio.sleep(0)
            raise ValueError("bad call")

        async def slow() -> str:
            await release.wait()
            finished.set()
            raise RuntimeError("read, not logged as never retrieved")

        with pytest.raises(ValueError, match="bad call"):
            await concurrently([fails(), slow()])
        went_on = not finished.is_set()
        release.set()
        await asyncio.wait_for(finished.wait(), 2)
        return went_on, finished.is_set()

    assert asyncio.run(scenario()) == (True, True)


def test_a_cancelled_caller_cancels_every_call() -> None:
    async def scenario() -> list[bool]:
        waiting = [asyncio.Event(), asyncio.Event()]
        cancelled = [asyncio.Event(), asyncio.Event()]

        async def waits(n: int) -> str:
            waiting[n].set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled[n].set()
                raise
            return "never"

        caller = asyncio.create_task(concurrently([waits(0), waits(1)]))
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in waiting)), 2)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in cancelled)), 2)
        return [event.is_set() for event in cancelled]

    assert asyncio.run(scenario()) == [True, True]


def test_a_caller_cancelled_while_its_first_call_swallows_the_cancellation_is_cancelled_all_the_same() -> None:
    """The first call runs in the caller's task: a tool that catches every error must not
    keep the caller's cancellation (a drain, a lost partition) from it, as under gather."""

    async def scenario() -> tuple[bool, bool]:
        swallowed = asyncio.Event()
        second_cancelled = asyncio.Event()
        waiting = [asyncio.Event(), asyncio.Event()]

        async def swallows() -> str:
            waiting[0].set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed.set()
            return "went on"

        async def waits() -> str:
            waiting[1].set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                second_cancelled.set()
                raise
            return "never"

        caller = asyncio.create_task(concurrently([swallows(), waits()]))
        await asyncio.wait_for(asyncio.gather(waiting[0].wait(), waiting[1].wait()), 2)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 2)
        await asyncio.wait_for(second_cancelled.wait(), 2)
        return swallowed.is_set(), second_cancelled.is_set()

    assert asyncio.run(scenario()) == (True, True)


def test_an_error_of_a_later_call_leaves_no_cycle_for_the_collector() -> None:
    """The error's traceback holds concurrently's frame: the frame must not hold the call's
    task, which holds the error (the run's objects would wait for the collector)."""

    class Failure(Exception):
        pass

    async def scenario() -> bool:
        async def ok() -> str:
            return "ok"

        async def fails() -> str:
            raise Failure("bad call")

        try:
            await concurrently([ok(), fails()])
        except Failure as exc:
            error = weakref.ref(exc)
        await asyncio.sleep(0)  # the task's done callbacks, scheduled for the next turn, let go of it
        return error() is None

    gc.disable()
    try:
        freed = asyncio.run(scenario())
    finally:
        gc.enable()
    assert freed, "the error was kept alive by a reference cycle"
