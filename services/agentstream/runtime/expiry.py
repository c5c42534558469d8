"""Retention of a table's entries: delete those written longer ago than a retention.

A table that only gains keys (dedupe markers) grows forever. An Expiry walks a bounded
number of a table's keys per partition per pass, resuming where the previous pass
stopped, and decides which entries are older than the retention; the processor deletes
them, and each delete becomes a changelog tombstone, so compaction shrinks the
changelog too. The service says how to read an entry's write time (``written_at``:
None means "never expire this one") and how to stamp an entry written before retention
existed (``stamp``: it is rewritten with a write time of now, and expires a retention
later). Pure logic over a store's ``scan`` and ``get_value``: no Kafka here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

WrittenAt = Callable[[Any], "int | None"]
Stamp = Callable[[Any, int], Any]  # (old value, now ms) -> value with a write time, or None: leave it


class ScannableStore(Protocol):
    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]: ...

    def get_value(self, key: bytes, loads: Callable[[bytes], Any], flushed: bytes | None = None) -> Any: ...


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Sweep:
    """What one pass over one partition decided."""

    deletes: list[bytes] = field(default_factory=list)
    stamps: list[tuple[bytes, Any]] = field(default_factory=list)
    scanned: int = 0
    wrapped: bool = False  # the walk reached the end of the keys and starts over next time

    @property
    def full(self) -> bool:
        """The pass stopped at its bound: more keys are waiting."""
        return not self.wrapped


class Expiry:
    """Which entries of one table have outlived ``retention_ms``, a bounded walk at a time."""

    def __init__(
        self,
        retention_ms: int,
        written_at: WrittenAt,
        loads: Callable[[bytes], Any],
        *,
        stamp: Stamp | None = None,
        prefix: bytes = b"",
        batch: int = 1000,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        if retention_ms <= 0:
            raise ValueError(f"retention must be positive, got {retention_ms} ms")
        if batch <= 0:
            raise ValueError(f"batch must be positive, got {batch}")
        self.retention_ms = retention_ms
        self.written_at = written_at
        self.stamp = stamp
        self.prefix = prefix
        self.batch = batch
        self.clock = clock
        self._loads = loads
        self._cursor: dict[int, bytes] = {}  # partition -> first key of the next walk

    def forget(self, partition: int) -> None:
        """The partition left this worker: its next owner starts its own walk."""
        self._cursor.pop(partition, None)

    def sweep(self, partition: int, store: ScannableStore) -> Sweep:
        now = self.clock()
        cutoff = now - self.retention_ms
        result = Sweep(wrapped=True)
        last = None
        for key, raw in store.scan(self.prefix, self._cursor.get(partition)):
            if result.scanned == self.batch:
                result.wrapped = False
                break
            result.scanned += 1
            last = key
            # Decide on the current value, buffered writes included: a key written again
            # since it was flushed is judged by its new write time. Else the scanned bytes:
            # a second read of each key would bring the whole walk into the block cache.
            try:
                value = store.get_value(key, self._loads, raw)
            except ValueError:
                continue  # not this table's encoding: not ours to judge
            if value is None:
                continue
            at = self.written_at(value)
            if at is not None:
                if at <= cutoff:
                    result.deletes.append(key)
            elif self.stamp is not None:
                stamped = self.stamp(value, now)
                if stamped is not None:
                    result.stamps.append((key, stamped))
        if result.wrapped or last is None:
            self._cursor.pop(partition, None)
        else:
            self._cursor[partition] = last + b"\x00"  # the smallest key after ``last``
        return result


def timestamp_value(value: Any) -> int | None:
    """``written_at`` of a table whose value is the write time itself (epoch ms)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def stamp_now(value: Any, now: int) -> int:
    """``stamp`` of such a table: an entry without a write time counts as written now."""
    return now
