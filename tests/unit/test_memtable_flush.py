"""With no write-ahead log, a store's writes reach disk when its memtable is flushed; the
processor asks every store it holds to flush once its oldest unflushed write is old
(runtime/store.py ``MAX_UNFLUSHED_S``), after each periodic checkpoint and while every
slot is taken (also when no checkpoint is due then), so a start after a kill -9 never replays from
an offset older than the changelog's tombstones reach back."""

from __future__ import annotations

import asyncio
import math
import time

from agentstream.runtime.processor import Processor


class _Store:
    def __init__(self) -> None:
        self.asked: list[float | None] = []

    def flush_if_older(self, age_s: float | None = None, now: float | None = None) -> bool:
        self.asked.append(now)
        return False


class _Table:
    def __init__(self, *stores: _Store) -> None:
        self.stores = dict(enumerate(stores))


def test_every_store_of_every_table_is_asked_with_one_reading_of_the_clock() -> None:
    processor = Processor("flush", "localhost:9", "flush", "unused-state-dir")  # no I/O until run()
    stores = [_Store() for _ in range(3)]
    processor.tables.update(dedupe=_Table(stores[0], stores[1]), sessions=_Table(stores[2]))  # type: ignore[dict-item]
    processor._checkpoints.flush_old_memtables()
    assert all(len(store.asked) == 1 for store in stores)
    assert len({store.asked[0] for store in stores}) == 1 and stores[0].asked[0] is not None


def _processor_with_stores() -> tuple[Processor, list[_Store]]:
    processor = Processor("flush", "localhost:9", "flush", "unused-state-dir")  # no I/O until run()
    stores = [_Store(), _Store()]
    processor.tables["dedupe"] = _Table(*stores)  # type: ignore[dict-item]
    return processor, stores


def test_the_run_loops_checkpoint_asks_the_stores_also_when_it_has_nothing_to_commit() -> None:
    processor, stores = _processor_with_stores()
    processor._checkpoints.failed = True  # a failed worker commits nothing; its stores' files still keep up

    async def checkpoint() -> None:
        assert processor._checkpoints.start_if_due()  # due at once: its first is at the run's start
        await processor._checkpoints.end_running()

    asyncio.run(checkpoint())
    assert all(len(store.asked) == 1 for store in stores)


class _Full:
    """Spawned work whose one slot is never freed."""

    running = 1

    def slot(self, limit: int) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()


def test_a_worker_whose_every_slot_is_taken_still_asks_its_stores() -> None:
    """While long loops hold every slot (run() waits for one) the wait asks the stores each
    time it wakes to beat, also when no checkpoint is due then."""
    processor, stores = _processor_with_stores()
    processor.health.stall_s = 0.03  # wakes every 10 ms
    processor._checkpoints.next_due = math.inf  # a commit_interval far above the wake-ups

    processor._spawned = _Full()  # type: ignore[assignment]
    processor.max_inflight = 1

    async def scenario() -> None:
        waiting = asyncio.create_task(processor._wait_for_slot())
        deadline = time.monotonic() + 5
        while not all(len(store.asked) >= 2 for store in stores):
            assert time.monotonic() < deadline, "the stores were not asked while every slot was taken"
            await asyncio.sleep(0.005)
        assert not waiting.done()
        waiting.cancel()

    asyncio.run(scenario())


def test_a_worker_whose_every_slot_is_taken_still_commits_every_commit_interval() -> None:
    """The offsets of the loops that ended are committed while the others hold every slot
    (tests/integration/test_runtime.py has it on a real broker)."""
    processor, _ = _processor_with_stores()
    processor.health.stall_s = 30.0  # the heartbeat alone wakes the wait every 10 s
    processor._checkpoints.commit_interval = 0.02
    processor._spawned = _Full()  # type: ignore[assignment]
    processor.max_inflight = 1
    commits: list[float] = []

    async def checkpoint(checkpointing: object) -> None:
        commits.append(time.monotonic())

    processor._checkpoints._beside_polls = checkpoint  # type: ignore[method-assign,assignment]

    async def scenario() -> None:
        processor._checkpoints.next_due = time.monotonic() + processor._checkpoints.commit_interval
        waiting = asyncio.create_task(processor._wait_for_slot())
        deadline = time.monotonic() + 5
        while len(commits) < 3:
            assert time.monotonic() < deadline, f"{len(commits)} checkpoints while every slot was taken"
            await asyncio.sleep(0.005)
        assert not waiting.done()
        waiting.cancel()

    asyncio.run(scenario())
