"""The consumer's thread (runtime/lane.py): calls run in order on one thread that is not
the loop's, their results and exceptions reach the awaiting coroutine, close ends it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentstream.runtime.errors import ProcessorError
from agentstream.runtime.lane import ThreadLane


def test_calls_run_in_order_on_one_thread_that_is_not_the_loops() -> None:
    lane = ThreadLane("unit-poll")
    seen: list[tuple[int, str]] = []

    def record(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 10

    async def main() -> list[int]:
        return list(await asyncio.gather(*(lane.run(record, n) for n in range(5))))

    try:
        assert asyncio.run(main()) == [0, 10, 20, 30, 40]
    finally:
        lane.close()
    assert [n for n, _ in seen] == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {"unit-poll"}
    assert threading.current_thread().name != "unit-poll"


def test_an_exception_reaches_the_awaiting_coroutine_and_the_lane_goes_on() -> None:
    lane = ThreadLane("unit-poll")

    def fail() -> None:
        raise ValueError("broker said no")

    async def main() -> str:
        with pytest.raises(ValueError, match="broker said no"):
            await lane.run(fail)
        return await lane.run(str.upper, "next")

    try:
        assert asyncio.run(main()) == "NEXT"
    finally:
        lane.close()


def test_close_ends_the_thread_and_refuses_more_calls() -> None:
    lane = ThreadLane("unit-poll")

    async def main() -> None:
        await lane.run(int)
        lane.close()
        with pytest.raises(ProcessorError, match="'unit-poll' is closed"):
            lane.run(int)

    asyncio.run(main())
    assert lane._thread is not None
    lane._thread.join(timeout=5)
    assert not lane._thread.is_alive()


def test_a_call_cancelled_before_it_began_is_not_made() -> None:
    lane = ThreadLane("unit-poll")
    release = threading.Event()
    made: list[str] = []

    async def main() -> None:
        blocking = lane.run(release.wait, 5)  # holds the thread until released
        skipped = lane.run(made.append, "cancelled")
        skipped.cancel()
        release.set()
        await blocking
        await lane.run(made.append, "after")

    try:
        asyncio.run(main())
    finally:
        lane.close()
    assert made == ["after"]
