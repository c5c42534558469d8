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
    def __init__(self, name: str, keys: int) -> None:
        self.name = name
        self.changelog_topic = f"{name}.changelog"
        self.stores: dict[int, Any] = {0: CountingStore(keys)}

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
        retention.add(table, retention_s, timestamp_value, stamp=None, prefix=b"", write_through=False)  # type: ignore[arg-type]
    retention.start()
    return retention


def _run_until(retention: Retention, clock: Clock, end_s: float) -> None:
    """Serve as the processor does: a pass whenever the earliest table is due."""
    while retention.next_due <= end_s:
        clock.now = retention.next_due
        asyncio.run(retention.run_due({0}, lambda: False))


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
