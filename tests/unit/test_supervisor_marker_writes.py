"""Group commit of the supervisor's markers (supervisor/marker_writes.py), without Kafka:
markers asked together share one persist_all, in the order asked; at most one write per
partition is out, and a marker asked meanwhile waits for the next one; each write returns
only once its own marker is stored; a refused batch is written again one marker at a time
so only the refused marker's writer fails; a cancelled writer loses no other marker; a
partition revoked before its batch is written gets nothing written."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream.supervisor.marker_writes import MarkerWrites, PartitionGone

Items = list[tuple[str, Any]]


class Refused(Exception):
    """What the fake broker raises for a write it refuses."""


class _Table:
    name = "dedupe"

    def __init__(self, partitions: int = 2) -> None:
        self.stores: dict[int, object] = {p: object() for p in range(partitions)}

    def partition(self, partition: int) -> object:
        return self.stores[partition]


class _App:
    """The processor's write-through writes: records every round trip, stores what it
    acknowledges, refuses ``refused`` keys, and holds a partition's writes while its gate
    is shut."""

    def __init__(self) -> None:
        self.round_trips: list[tuple[int, Items]] = []
        self.stored: dict[tuple[int, str], Any] = {}
        self.refused: set[str] = set()
        self.gates: dict[int, asyncio.Event] = {}

    async def persist_all(self, table: Any, items: Items, *, partition: int) -> None:
        self.round_trips.append((partition, list(items)))
        if partition in self.gates:
            await self.gates[partition].wait()
        if any(key in self.refused for key, _ in items):
            raise Refused(f"a batch with {[k for k, _ in items if k in self.refused]} refused")
        self.stored.update({(partition, key): value for key, value in items})

    async def persist(self, table: Any, key: str, value: Any, *, partition: int) -> None:
        await self.persist_all(table, [(key, value)], partition=partition)


def _writes(app: _App, table: _Table | None = None) -> MarkerWrites:
    return MarkerWrites(app, table or _Table())  # type: ignore[arg-type]


async def _until(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds (each step lets every ready task run)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_markers_asked_together_share_one_round_trip_in_the_order_asked() -> None:
    async def run() -> _App:
        app = _App()
        writes = _writes(app)
        await asyncio.gather(*(writes.write(f"t{i}", {"state": "emitting", "i": i}, partition=0) for i in range(5)))
        return app

    app = asyncio.run(run())
    assert app.round_trips == [(0, [(f"t{i}", {"state": "emitting", "i": i}) for i in range(5)])]
    assert sorted(key for _, key in app.stored) == [f"t{i}" for i in range(5)]


def test_a_marker_asked_while_a_write_is_out_waits_for_the_next_one_and_returns_once_stored() -> None:
    async def run() -> None:
        app = _App()
        app.gates[0] = asyncio.Event()
        writes = _writes(app)
        first = asyncio.create_task(writes.write("a", 1, partition=0))
        await _until(lambda: len(app.round_trips) == 1)
        later = [asyncio.create_task(writes.write(key, 2, partition=0)) for key in ("b", "c")]
        await _until(lambda: all(not t.done() for t in later))
        assert len(app.round_trips) == 1  # at most one write of the partition is out
        assert not first.done() and (0, "a") not in app.stored  # not before its marker is acknowledged
        app.gates[0].set()
        await asyncio.gather(first, *later)
        assert app.round_trips == [(0, [("a", 1)]), (0, [("b", 2), ("c", 2)])]
        assert set(app.stored) == {(0, "a"), (0, "b"), (0, "c")}

    asyncio.run(run())


def test_partitions_do_not_wait_for_each_other() -> None:
    async def run() -> None:
        app = _App()
        app.gates[0] = asyncio.Event()
        writes = _writes(app)
        held = asyncio.create_task(writes.write("a", 1, partition=0))
        await writes.write("b", 1, partition=1)  # returns while partition 0's write is out
        assert (1, "b") in app.stored and not held.done()
        app.gates[0].set()
        await held

    asyncio.run(run())


def test_a_refused_batch_is_written_again_one_marker_at_a_time_and_fails_only_the_refused_one() -> None:
    async def run() -> list[BaseException | None]:
        app = _App()
        app.refused.add("big")
        writes = _writes(app)
        outcomes = await asyncio.gather(*(writes.write(key, key, partition=0) for key in ("a", "big", "c")),
                                        return_exceptions=True)
        assert app.round_trips == [(0, [("a", "a"), ("big", "big"), ("c", "c")]),
                                   (0, [("a", "a")]), (0, [("big", "big")]), (0, [("c", "c")])]
        assert set(app.stored) == {(0, "a"), (0, "c")}
        return outcomes

    a, big, c = asyncio.run(run())
    assert a is None and c is None
    assert isinstance(big, Refused)


def test_a_lone_refused_marker_raises_its_error_without_a_second_try() -> None:
    async def run() -> _App:
        app = _App()
        app.refused.add("big")
        with pytest.raises(Refused, match="big"):
            await _writes(app).write("big", 1, partition=0)
        return app

    assert asyncio.run(run()).round_trips == [(0, [("big", 1)])]


def test_a_cancelled_writer_loses_no_other_marker_of_its_batch() -> None:
    async def run() -> None:
        app = _App()
        app.gates[0] = asyncio.Event()
        writes = _writes(app)
        cancelled, kept = (asyncio.create_task(writes.write(key, 1, partition=0)) for key in ("a", "b"))
        await _until(lambda: len(app.round_trips) == 1)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        app.gates[0].set()
        await kept
        assert set(app.stored) == {(0, "a"), (0, "b")}  # "a" may have reached the broker already: stored too

    asyncio.run(run())


def test_a_batch_of_a_partition_revoked_before_it_is_written_is_not_written() -> None:
    async def run() -> None:
        app = _App()
        app.gates[0] = asyncio.Event()
        table = _Table()
        writes = _writes(app, table)
        out = asyncio.create_task(writes.write("a", 1, partition=0))
        await _until(lambda: len(app.round_trips) == 1)
        waiting = asyncio.create_task(writes.write("b", 1, partition=0))
        await _until(lambda: writes._open.get(0) is not None)
        table.stores[0] = object()  # revoked and assigned again: a new store
        app.gates[0].set()
        await out
        with pytest.raises(PartitionGone, match="partition 0 of 'dedupe' was revoked"):
            await waiting
        assert app.round_trips == [(0, [("a", 1)])]

    asyncio.run(run())
