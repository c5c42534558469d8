"""The gateway's change notices: a change of a task wakes the streams of that task only."""

from __future__ import annotations

import asyncio

from agentstream.gateway.changes import Changes


def test_a_change_wakes_the_watchers_of_its_task_and_none_other() -> None:
    async def scenario() -> None:
        changes = Changes(asyncio.get_running_loop())
        with changes.watching("a") as a, changes.watching("b") as b, changes.watching("a") as a_again:
            assert a is a_again  # one watch per task, shared by its streams
            woken_a = asyncio.create_task(a.wait(a.generation, 5))
            still_b = asyncio.create_task(b.wait(b.generation, 0.2))
            changes.notify(frozenset({"a", "unwatched"}))
            assert await woken_a == 1
            assert await still_b == 0  # timed out: b did not change
            everything = asyncio.create_task(b.wait(b.generation, 5))
            changes.notify(None)  # the view caught up: every stream looks again
            assert await everything == 1
        assert not changes._watches  # the last stream of a task drops its watch

    asyncio.run(scenario())


def test_a_change_between_reading_and_waiting_is_not_missed() -> None:
    async def scenario() -> None:
        changes = Changes(asyncio.get_running_loop())
        with changes.watching("a") as watch:
            seen = watch.generation
            changes.notify(["a"])
            await asyncio.sleep(0)  # the reader's notice lands while the stream reads the store
            assert await asyncio.wait_for(watch.wait(seen, 5), 1) == seen + 1

    asyncio.run(scenario())
