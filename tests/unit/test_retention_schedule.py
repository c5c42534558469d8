"""Each table's expiry on its own schedule (runtime/retention.py): pure, over fake tables
whose stores count how often they are walked, and a fake clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

from agentstream.runtime.expiry import timestamp_value
from agentstream.runtime.retention import Retention
from agentstream.runtime.stats import ProcessorStats

RESUME_S = 1.0
NOW_MS = 10_000_000


class CountingStore:
    """Flushed entries of one partition; counts the walks that start on it."""

    def __init__(self, keys: int) -> None:
        self.flushed = {f"k{i:05d}".encode(): json.dumps(NOW_MS).encode() for i in range(keys)}
        self.walks = 0

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        self.walks += 1
        for key in sorted(self.flushed):
            if (start is None or key >= start) and key.startswith(prefix):
                yield key, self.flushed[key]

    def get_value(self, key: bytes, loads: Callable[[bytes], Any], flushed: bytes | None = None) -> Any:
        return None if flushed is None else loads(flushed)

    def delete(self, key: bytes) -> None:
        self.flushed.pop(key, None)

    def put_value(self, key: bytes, value: Any, dumps: Callable[[Any], bytes]) -> None:
        self.flushed[key] = dumps(value)


class FakeTable:
    def __init__(self, name: str, keys: int, *more_partitions: int) -> None:
        """``keys`` in partition 0, and ``more_partitions``' key counts in partitions 1, 2…"""
        self.name = name
        self.changelog_topic = f"{name}.changelog"
        self.stores: dict[int, Any] = {p: CountingStore(n) for p, n in enumerate((keys, *more_partitions))}

    @staticmethod
    def decode_value(raw: bytes) -> Any:
        return json.loads(raw)

    @staticmethod
    def encode_value(value: Any) -> bytes:
        return json.dumps(value).encode()

    @property
    def walks(self) -> int:
        return int(self.stores[0].walks)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _never_persisted(table: Any, key: str | bytes, value: Any, *, partition: int | None = None) -> None:
    raise AssertionError("these tables are buffered: nothing is persisted one by one")


def _retention(clock: Clock, *tables: tuple[FakeTable, float]) -> Retention:
    retention = Retention("worker", ProcessorStats(), _never_persisted, resume_s=RESUME_S, clock=clock)
    for table, retention_s in tables:
        expiry = retention.add(table, retention_s, timestamp_value, stamp=None, prefix=b"", write_through=False)  # type: ignore[arg-type]
        expiry.clock = lambda: NOW_MS  # the keys were written now: none expires, every walk reads them all
    retention.start()
    return retention


def _run_until(retention: Retention, clock: Clock, end_s: float, owned: frozenset[int] = frozenset({0})) -> None:
    """Serve as the processor does: a pass whenever the earliest table is due."""
    while retention.next_due <= end_s:
        clock.now = retention.next_due
        asyncio.run(retention.run_due(set(owned), lambda: False))


def _walk_times(table: FakeTable, retention_s: float, end_s: float, partition: int = 0) -> list[float]:
    """When the partition's store was walked (a pass each), serving until ``end_s``."""
    clock = Clock()
    retention = _retention(clock, (table, retention_s))
    store, times = table.stores[partition], []
    while retention.next_due <= end_s:
        clock.now = retention.next_due
        walks = store.walks
        asyncio.run(retention.run_due(set(table.stores), lambda: False))
        if store.walks > walks:
            times.append(clock.now)
    return times


def test_a_table_walked_to_its_end_waits_its_interval_while_another_walk_goes_on() -> None:
    deep = FakeTable("dedupe", keys=5_000)  # batch 1,000: five passes per walk
    small = FakeTable("sessions", keys=10)  # one pass per walk
    clock = Clock()
    retention = _retention(clock, (deep, 600.0), (small, 600.0))  # interval 60 s for both
    _run_until(retention, clock, 60.0)
    assert (deep.walks, small.walks) == (1, 1)  # both first due one interval after the start
    _run_until(retention, clock, 64.0)
    assert deep.walks == 5  # its walk goes on every resume_s
    assert small.walks == 1  # not read again meanwhile (one schedule read it at every pass)
    _run_until(retention, clock, 120.0)
    assert small.walks == 2


def test_a_walk_that_stops_at_its_bound_resumes_after_resume_s() -> None:
    deep = FakeTable("dedupe", keys=2_500)
    clock = Clock()
    retention = _retention(clock, (deep, 100.0))  # interval 10 s
    assert retention.next_due == 10.0
    _run_until(retention, clock, 10.0)
    assert retention.next_due == 10.0 + RESUME_S
    _run_until(retention, clock, 12.0)
    assert deep.walks == 3  # three passes: 1,000 + 1,000 + 500 keys, the last reached the end
    assert retention.next_due == 12.0 + 10.0


def test_intervals_are_a_tenth_of_the_retention_within_bounds() -> None:
    clock = Clock()
    assert _retention(clock, (FakeTable("a", 1), 2.0)).next_due == 0.5  # 0.2 s raised to 0.5
    assert _retention(clock, (FakeTable("b", 1), 40.0)).next_due == 4.0
    assert _retention(clock, (FakeTable("c", 1), 7 * 24 * 3600.0)).next_due == 60.0  # capped at 60
    assert _retention(clock).next_due == float("inf")  # no expiry: never due


def test_expired_entries_are_deleted_by_the_pass() -> None:
    table = FakeTable("dedupe", keys=3)
    store = table.stores[0]
    store.flushed[b"k00000"] = json.dumps(NOW_MS - 200_000).encode()  # written 200 s ago
    clock = Clock()
    retention = Retention("worker", ProcessorStats(), _never_persisted, resume_s=RESUME_S, clock=clock)
    expiry = retention.add(table, 100.0, timestamp_value, stamp=None, prefix=b"", write_through=False)  # type: ignore[arg-type]
    expiry.clock = lambda: NOW_MS
    retention.start()
    _run_until(retention, clock, 10.0)
    assert sorted(store.flushed) == [b"k00001", b"k00002"]
    assert retention.stats.expired == 1


def test_a_deep_walk_goes_on_at_the_interval_once_its_length_is_known() -> None:
    # A seven-day table (interval 60 s, a tenth of the retention 16.8 h) of three passes:
    # its first walk goes on every resume_s (its length unknown), later ones every 60 s,
    # which ends each walk well within the tenth. Before, it was read every second for ever.
    times = _walk_times(FakeTable("dedupe", keys=2_500), 7 * 24 * 3600.0, 400.0)
    assert times == [60.0, 61.0, 62.0, 122.0, 182.0, 242.0, 302.0, 362.0]


def test_a_walk_too_long_for_the_interval_pace_is_paced_so_a_key_waits_at_most_a_tenth_of_the_retention() -> None:
    # Retention 1,000 s: interval 60 s (capped), a tenth 100 s, so a walk gets 40 s. Five
    # passes a walk: every 8 s once its length is known; a key is read again within 92 s.
    times = _walk_times(FakeTable("dedupe", keys=4_500), 1_000.0, 250.0)
    assert times[:5] == [60.0, 61.0, 62.0, 63.0, 64.0]  # the first walk, at resume_s
    assert times[5:10] == [124.0, 132.0, 140.0, 148.0, 156.0]
    assert times[10] == 216.0  # the third walk: a key read again 92 s after (within the tenth, 100 s)


def test_a_walk_never_goes_faster_than_resume_s_nor_slower_when_no_time_is_left_beyond_the_interval() -> None:
    # Retention 100 s: interval and tenth both 10 s, nothing left for the walk: the commit pace.
    times = _walk_times(FakeTable("dedupe", keys=4_500), 100.0, 40.0)
    assert times[:10] == [10.0, 11.0, 12.0, 13.0, 14.0, 24.0, 25.0, 26.0, 27.0, 28.0]
    # 50 passes a walk would need 0.8 s apart in the 40 s a 1,000-s retention leaves: 1 s, the floor.
    deep = _walk_times(FakeTable("dedupe", keys=49_500), 1_000.0, 230.0)
    assert deep[50:55] == [169.0, 170.0, 171.0, 172.0, 173.0]  # the second walk, from 109 + 60 s


def test_a_walk_longer_than_the_last_goes_on_at_the_commit_pace() -> None:
    table = FakeTable("dedupe", keys=1_500)  # two passes a walk
    clock = Clock()
    retention = _retention(clock, (table, 7 * 24 * 3600.0))
    _run_until(retention, clock, 125.0)  # walks at 60-61, 121-: its length is known (2)
    table.stores[0].flushed.update({f"z{i:05d}".encode(): json.dumps(NOW_MS).encode() for i in range(3_000)})
    _run_until(retention, clock, 181.0)  # the walk from 121 s, its second pass a minute later: more keys wait
    before = table.stores[0].walks
    _run_until(retention, clock, 185.0)
    assert table.stores[0].walks - before == 3  # 182, 183, 184 s (its end): the commit pace, not a minute apart
    assert retention.next_due == 184.0 + 60.0


def test_a_skewed_tables_small_partition_waits_its_interval_while_the_big_one_walks_on() -> None:
    table = FakeTable("dedupe", 4_500, 10)  # partition 0: five passes a walk; partition 1: one
    assert _walk_times(table, 600.0, 125.0, partition=1) == [60.0, 120.0]
    assert table.stores[0].walks > 5  # the big one walked on meanwhile


def test_a_partition_assigned_again_walks_at_the_commit_pace_until_its_length_is_known() -> None:
    table = FakeTable("dedupe", keys=2_500)
    clock = Clock()
    retention = _retention(clock, (table, 7 * 24 * 3600.0))
    _run_until(retention, clock, 130.0)  # one whole walk (60, 61, 62) and one pass at 122
    assert retention.next_due == 182.0
    retention.forget([0])  # revoked; its next owner (here, this worker again) starts over
    assert retention.next_due == 182.0  # the table's pass is still scheduled
    _run_until(retention, clock, 184.0)
    assert table.stores[0].walks == 4 + 3  # then 182, 183, 184: the commit pace again
