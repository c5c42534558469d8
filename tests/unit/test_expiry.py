"""Expiry of table entries (runtime/expiry.py): pure, over a fake store and a fake clock."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agentstream.runtime.expiry import Expiry, stamp_now, timestamp_value
from agentstream.supervisor.emitter import EMITTING, SENT, marker_stamp, marker_written_at


class FakeStore:
    """Flushed entries (what scan sees) and buffered ones (what get_value sees first)."""

    def __init__(self, entries: dict[bytes, Any]) -> None:
        self.flushed = {k: json.dumps(v).encode() for k, v in entries.items()}
        self.buffered: dict[bytes, Any] = {}

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        begin = prefix if start is None else max(start, prefix)
        for key in sorted(self.flushed):
            if key >= begin and key.startswith(prefix):
                yield key, self.flushed[key]

    def get_value(self, key: bytes, loads: Callable[[bytes], Any], flushed: bytes | None = None) -> Any:
        if key in self.buffered:
            return self.buffered[key]
        assert flushed == self.flushed.get(key), "the walk passes the bytes it scanned"
        return None if flushed is None else loads(flushed)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _expiry(clock: Clock, **kwargs: Any) -> Expiry:
    return Expiry(10_000, timestamp_value, json.loads, stamp=stamp_now, clock=clock, **kwargs)


def test_entries_older_than_the_retention_are_deleted() -> None:
    clock = Clock(100_000)
    store = FakeStore({b"a": 80_000, b"b": 90_000, b"c": 95_000})
    sweep = _expiry(clock).sweep(0, store)
    assert sweep.deletes == [b"a", b"b"]  # 90_000 is exactly the retention old
    assert sweep.stamps == [] and sweep.scanned == 3 and sweep.wrapped


def test_a_key_written_again_since_its_flush_is_judged_by_its_new_time() -> None:
    clock = Clock(100_000)
    store = FakeStore({b"a": 1})
    store.buffered[b"a"] = 99_000
    assert _expiry(clock).sweep(0, store).deletes == []
    store.buffered[b"a"] = None  # deleted meanwhile: nothing to do
    assert _expiry(clock).sweep(0, store).deletes == []


def test_entries_without_a_time_are_stamped_now_and_expire_a_retention_later() -> None:
    clock = Clock(100_000)
    store = FakeStore({b"old": True, b"new": 99_999})
    expiry = _expiry(clock)
    sweep = expiry.sweep(0, store)
    assert sweep.deletes == [] and sweep.stamps == [(b"old", 100_000)]
    store.flushed[b"old"] = b"100000"  # what the processor writes back
    clock.now = 110_000
    assert expiry.sweep(0, store).deletes == [b"new", b"old"]


def test_without_a_stamp_an_untimed_entry_is_kept() -> None:
    store = FakeStore({b"x": "no time"})
    sweep = Expiry(1, timestamp_value, json.loads, clock=Clock(10**12)).sweep(0, store)
    assert sweep.deletes == [] and sweep.stamps == []


def test_a_pass_walks_at_most_batch_keys_and_resumes_where_it_stopped() -> None:
    clock = Clock(1_000_000)
    store = FakeStore({f"k{i:02d}".encode(): 0 for i in range(25)})
    expiry = _expiry(clock, batch=10)
    passes = [expiry.sweep(0, store) for _ in range(4)]
    assert [p.scanned for p in passes] == [10, 10, 5, 10]
    assert [p.full for p in passes] == [True, True, False, True]
    walked = [key for p in passes[:3] for key in p.deletes]
    assert walked == sorted(store.flushed)  # every key once, in order, then it starts over
    assert passes[3].deletes[0] == b"k00"


def test_cursors_are_per_partition_and_forgotten_on_revocation() -> None:
    clock = Clock(1_000_000)
    store = FakeStore({f"k{i}".encode(): 0 for i in range(6)})
    expiry = _expiry(clock, batch=4)
    expiry.sweep(0, store)
    assert expiry.sweep(1, store).deletes[0] == b"k0"
    expiry.forget(0)
    assert expiry.sweep(0, store).deletes[0] == b"k0"


def test_a_prefix_limits_the_walk() -> None:
    clock = Clock(1_000_000)
    store = FakeStore({b"d/t1": 0, b"s/t1/000001/000000": {"seq": 0}, b"t/t2": {"epochs": []}, b"d/t3": 0})
    sweep = _expiry(clock, prefix=b"d/").sweep(0, store)
    assert sweep.deletes == [b"d/t1", b"d/t3"] and sweep.scanned == 2


def test_timestamp_value_accepts_integers_only() -> None:
    assert timestamp_value(5) == 5
    assert timestamp_value(True) is None and timestamp_value("5") is None and timestamp_value(None) is None


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="retention must be positive"):
        Expiry(0, timestamp_value, json.loads)
    with pytest.raises(ValueError, match="batch must be positive"):
        Expiry(1, timestamp_value, json.loads, batch=0)


def test_supervisor_markers_expire_once_sent_never_while_emitting() -> None:
    sent = {"state": SENT, "offset": 3, "at": 42}
    assert marker_written_at(sent) == 42
    assert marker_written_at({"state": EMITTING, "result": {}, "results_from": 0}) is None
    old = {"state": SENT, "offset": 3}
    assert marker_written_at(old) is None
    assert marker_stamp(old, 7) == {"state": SENT, "offset": 3, "at": 7}
    assert marker_stamp({"state": EMITTING}, 7) is None
    clock = Clock(100_000)
    store = FakeStore({b"t1": sent, b"t2": {"state": EMITTING}, b"t3": old})
    sweep = Expiry(1000, marker_written_at, json.loads, stamp=marker_stamp, clock=clock).sweep(0, store)
    assert sweep.deletes == [b"t1"] and sweep.stamps == [(b"t3", {**old, "at": 100_000})]
