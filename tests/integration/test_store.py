"""RocksDB stores of one process share a memtable budget and a block cache (runtime/store.py).

Each store is its own RocksDB; left to its defaults, each keeps up to 64 MB of writes in
its memtable (and write-ahead log) before flushing them to a table file. A worker has a
store per table and partition (a specialist: 3 tables x 6 partitions), so a steady churn
of puts and deletes (step checkpoints, expiring dedupe markers) grew the worker's memory and
disk for hours although the live data stayed small (seen in bench/soak.py).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentstream import jsoncodec
from agentstream.runtime import store as store_module
from agentstream.runtime.changelog import restore
from agentstream.runtime.expiry import Expiry
from agentstream.runtime.store import (
    BLOCK_CACHE_BYTES, INFO_LOG_BYTES, INFO_LOG_FILES, MEMTABLE_BUDGET_BYTES, PartitionStore, _block_cache,
)

VALUE = b"x" * 4096


def _churn(store: PartitionStore, rounds: int, per_round: int = 50) -> None:
    """Checkpoints that each write some keys and delete the previous round's, like step
    checkpoints tombstoned when their task ends."""
    for r in range(rounds):
        for i in range(per_round):
            store.put(f"k{r}-{i}".encode(), VALUE)
            if r:
                store.delete(f"k{r - 1}-{i}".encode())
        store.begin_flush()
        store.finish_flush(r)


def _memtables(store: PartitionStore) -> int:
    return int(store._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)


def _wal_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.log"))


def test_memtables_of_all_stores_stay_within_the_process_budget(tmp_path: Path) -> None:
    stores = [PartitionStore(tmp_path / str(p)) for p in range(3)]
    try:
        written = 0
        for store in stores:
            _churn(store, rounds=60)  # 60 x 50 x 4 KB = 12 MB of puts per store
            written += 60 * 50 * len(VALUE)
        assert written > 2 * MEMTABLE_BUDGET_BYTES  # more than the budget went through
        live = sum(len(list(store.items())) for store in stores)
        assert live == 3 * 50
        # RocksDB flushes once the mutable memtables pass ~90 % of the budget, in background
        # threads: on a busy machine a flush may still be under way, so wait for it (a store
        # without the budget never flushes here and fails after the wait).
        deadline = time.monotonic() + 20
        while True:
            in_memory = sum(_memtables(store) for store in stores)
            on_disk_wal = sum(_wal_bytes(store.path) for store in stores)
            if max(in_memory, on_disk_wal) <= 1.5 * MEMTABLE_BUDGET_BYTES or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert in_memory <= 1.5 * MEMTABLE_BUDGET_BYTES, f"{in_memory:,} bytes of memtables"
        assert on_disk_wal <= 1.5 * MEMTABLE_BUDGET_BYTES, f"{on_disk_wal:,} bytes of write-ahead log"
    finally:
        for store in stores:
            store.close()


def _cache(store: PartitionStore, name: str) -> int:
    return int(store._db.property_int_value(f"rocksdb.block-cache-{name}") or 0)


def test_all_stores_read_through_one_block_cache_within_its_budget(tmp_path: Path) -> None:
    """Session-record churn (read, grow, rewrite) over several stores: every store reports
    the one shared cache, and what it holds stays within the budget. With RocksDB's
    defaults each store had its own 32 MB cache, filled with blocks of replaced table files."""
    stores = [PartitionStore(tmp_path / str(p)) for p in range(4)]
    try:
        for r in range(40):
            for n, store in enumerate(stores):
                for i in range(200):
                    key = f"session-{n}-{i}".encode()
                    store.put(key, (store.get(key) or b"")[-8192:] + VALUE[: 512 + r])
                store.begin_flush()
                store.finish_flush(r)
        reads = sum(len(v) for store in stores for _, v in store.items())
        assert reads > BLOCK_CACHE_BYTES // 4  # the churn went through the cache
        assert {_cache(store, "capacity") for store in stores} == {BLOCK_CACHE_BYTES}
        assert _one_cache([_cache(store, "usage") for store in stores])
        assert 0 < _cache(stores[0], "usage") <= BLOCK_CACHE_BYTES
    finally:
        for store in stores:
            store.close()


def test_a_reopened_store_reads_through_the_shared_block_cache(tmp_path: Path) -> None:
    """A worker restarted on its state reopens its stores: they use the one cache too
    (rocksdict once gave each reopened store an 8 MB cache of its own)."""
    first = PartitionStore(tmp_path / "0")
    _churn(first, rounds=3)
    first.close()
    stores = [PartitionStore(tmp_path / "0"), PartitionStore(tmp_path / "1")]
    try:
        assert len(list(stores[0].items())) == 50
        assert {_cache(store, "capacity") for store in stores} == {BLOCK_CACHE_BYTES}
        assert _one_cache([_cache(store, "usage") for store in stores]) and _cache(stores[0], "usage") > 0  # holding what was read
    finally:
        for store in stores:
            store.close()


def _one_cache(usages: list[int]) -> bool:
    """Whether the stores' reports of their cache's usage are of one cache: read one after
    the other, a RocksDB background thread may add or drop a block in between (the Tansu
    pass of a CI run once read 16,193,028 and 16,193,029 bytes), while caches of their own
    would each hold a different store's blocks (differing by a large share)."""
    return max(usages) - min(usages) <= max(usages) // 100


def _reopened(path: Path) -> PartitionStore:
    """A store with a few table files, reopened, with the process's cache emptied first
    (the other tests fill it to its cap, where a new block only replaces an old one)."""
    first = PartitionStore(path)
    _churn(first, rounds=3)
    first.close()
    _block_cache().set_capacity(0)
    _block_cache().set_capacity(BLOCK_CACHE_BYTES)
    return PartitionStore(path)


def test_a_scan_leaves_the_block_cache_to_point_reads(tmp_path: Path) -> None:
    """A scan (a retention walk, the heads and approvals read when a worker takes a
    partition) reads every block once: it does not fill the cache; a point read does."""
    store = _reopened(tmp_path / "0")
    try:
        before = _cache(store, "usage")
        assert len(list(store.scan(b"k"))) == 50
        assert _cache(store, "usage") - before < len(VALUE), "a scan filled the cache"
        assert store.get(b"k2-0") == VALUE
        assert _cache(store, "usage") - before >= len(VALUE)
    finally:
        store.close()


def test_a_retention_walk_leaves_the_block_cache_as_it_was(tmp_path: Path) -> None:
    """The walk judges each key by the bytes its scan read (a point read of each would
    bring every walked block into the cache), and still by a buffered write first."""
    store = _reopened(tmp_path / "0")
    try:
        store.put(b"k2-1", b"fresh")  # buffered: judged by this value, not the flushed one
        before = _cache(store, "usage")
        judged: list[bytes] = []

        def written_at(value: bytes) -> int:
            judged.append(value)
            return 0  # long ago: every key is past the retention

        sweep = Expiry(1000, written_at, lambda raw: raw, prefix=b"k").sweep(0, store)
        assert sweep.scanned == 50 and len(sweep.deletes) == 50 and b"fresh" in judged
        assert _cache(store, "usage") - before < len(VALUE), "the walk filled the cache"
    finally:
        store.close()


def test_the_info_log_of_each_store_is_bounded(tmp_path: Path) -> None:
    """RocksDB's info LOG grows without end by default (a statistics dump every 10 minutes,
    a line per flush and compaction); the options RocksDB wrote for a store bound it."""
    store = PartitionStore(tmp_path / "0")
    try:
        options_file = max(store.path.glob("OPTIONS-*"))
        settings = dict(
            line.strip().split("=", 1) for line in options_file.read_text().splitlines() if "=" in line
        )
        assert settings["max_log_file_size"] == str(INFO_LOG_BYTES)
        assert settings["keep_log_file_num"] == str(INFO_LOG_FILES)
    finally:
        store.close()


def _table_file_bytes(store: PartitionStore) -> int:
    return int(store._db.property_int_value("rocksdb.total-sst-files-size") or 0)


_BACKGROUND_WORK = ("rocksdb.compaction-pending", "rocksdb.num-running-compactions", "rocksdb.num-running-flushes")


def _wait_for_compactions(store: PartitionStore, timeout_s: float = 60.0) -> None:
    """Until RocksDB has no flush or compaction running or due: its background threads lag
    on a busy machine, and files measured before they catch up are not the settled size
    (a CI run with three test files at a time measured 33 -> 44 kB that way)."""
    deadline = time.monotonic() + timeout_s
    while any(store._db.property_int_value(name) for name in _BACKGROUND_WORK):
        assert time.monotonic() < deadline, f"RocksDB's background work did not finish within {timeout_s:.0f} s"
        time.sleep(0.005)


def test_table_files_level_off_under_a_dedupe_churn(tmp_path: Path) -> None:
    """A dedupe table's steady churn: each round puts new keys and deletes those of a few
    rounds ago (live keys stay flat, as with a retention), then RocksDB flushes. In the
    30-minute soak a table's files were still rising (its stores' first flushes); here,
    with a flush every round, compaction has to drop each deleted key and its tombstone
    together, or the files grow with every round."""
    store = PartitionStore(tmp_path / "0")
    kept_rounds, per_round, rounds = 5, 200, 120
    sizes = []
    try:
        for r in range(rounds):
            for i in range(per_round):
                store.put(f"task-{r}-{i}".encode(), b"%d" % time.time_ns())
                if r >= kept_rounds:
                    store.delete(f"task-{r - kept_rounds}-{i}".encode())
            store.begin_flush()
            store.finish_flush(r)
            store._db.flush()  # what a full memtable does, every round instead of once an hour
            _wait_for_compactions(store)
            sizes.append(_table_file_bytes(store))
        assert len(list(store.items())) == kept_rounds * per_round
        settled, last = max(sizes[20:60]), max(sizes[-40:])
        assert settled > 0
        assert last <= 1.25 * settled, f"table files {settled:,} -> {last:,} bytes over {rounds} flushes"
    finally:
        store.close()


def test_no_kind_of_write_goes_to_a_write_ahead_log_and_a_close_keeps_them_all(tmp_path: Path) -> None:
    """The changelog is a store's log (runtime/store.py): its writes stay in the memtable,
    none in RocksDB's own log, and a clean close flushes them to table files."""
    path = tmp_path / "p0"
    store = PartitionStore(path)
    _churn(store, rounds=3)  # a checkpoint's flushes
    store.put_all_durable([(b"w", VALUE), (b"k2-0", None)], 7)  # write-through records
    store.put_durable(b"v", VALUE, 8)
    store.apply_changelog([(9, b"r", VALUE)], 9)  # a restore
    assert _memtables(store) > 0 and _wal_bytes(path) == 0, (_memtables(store), _wal_bytes(path))
    keys = sorted(key for key, _ in store.items())
    store.close()
    reopened = PartitionStore(path)
    try:
        assert sorted(key for key, _ in reopened.items()) == keys and len(keys) == 49 + 3
        assert reopened.changelog_offset == 9
    finally:
        reopened.close()


def test_the_recorded_changelog_offset_is_what_the_store_holds_through_every_kind_of_write(tmp_path: Path) -> None:
    # put_durable keeps the recorded offset in memory (it used to read it back on every
    # write): each way of writing it, and a reopened store, must agree with RocksDB.
    path = tmp_path / "p0"
    store = PartitionStore(path)
    assert store.changelog_offset is None
    store.put_durable(b"a", b"1", 5)
    store.put_durable(b"b", b"2", 3)  # an older acknowledgement does not move it back
    assert store.changelog_offset == 5
    store.put(b"c", b"3")
    store.begin_flush()
    store.finish_flush(9)
    assert store.changelog_offset == 9
    store.apply_changelog([(12, b"d", b"4")], 12)
    assert store.changelog_offset == 12
    store.close()
    reopened = PartitionStore(path)
    assert reopened.changelog_offset == 12
    reopened.put_durable(b"a", None, 13)
    assert reopened.changelog_offset == 13 and reopened.get(b"a") is None
    reopened.reset()
    assert reopened.changelog_offset is None
    reopened.put_durable(b"e", b"5", 0)
    reopened.close()
    assert PartitionStore(path).changelog_offset == 0


def test_a_scan_stops_at_the_end_of_its_prefix_among_tombstones(tmp_path: Path) -> None:
    """A scan's iterator is bounded by the prefix's end (prefix_read_options): what it
    yields is what an unbounded walk of every key gives, with the prefix's neighbours live,
    deleted, or the bound itself."""
    store = PartitionStore(tmp_path / "p0")
    try:
        live = [b"s/run-1/0", b"s/run-1/1", b"s/run-10/0", b"s/run-2/0", b"s/run-1\xff", b"s/run-2"]
        dead = [f"s/run-{i}/{k}".encode() for i in range(3, 300) for k in range(3)]
        store.put_all_durable([(key, VALUE) for key in live + dead], 1)
        store.put_all_durable([(key, None) for key in dead], 2)
        everything = [key for key, _ in store.items()]
        for prefix in (b"s/run-1/", b"s/run-1", b"s/run-2/", b"s/run-3/", b"s/", b"s/run-1\xff", b"t/"):
            assert [key for key, _ in store.scan(prefix)] == [k for k in everything if k.startswith(prefix)], prefix
        assert [key for key, _ in store.scan(b"s/run-1/", start=b"s/run-1/1")] == [b"s/run-1/1"]
    finally:
        store.close()


def test_a_prefix_scan_lists_the_keys_of_its_prefix_in_order_and_stops_at_its_end(tmp_path: Path) -> None:
    # The scan is bounded inside RocksDB (its first key past the prefix): it must still list
    # every key of the prefix, 0xff bytes included, past the tombstones of its neighbours.
    store = PartitionStore(tmp_path / "p0")
    try:
        keys = [b"s/t1/a", b"s/t1/b", b"s/t1/\xff\xff", b"s/t10/a", b"s/t1\xff", b"s/t2/a", b"\xff\xff"]
        store.put_all_durable([(key, b"v") for key in keys], 1)
        store.put_all_durable([(f"s/t1{i}/{j}".encode(), b"v") for i in range(3) for j in range(50)], 2)
        store.put_all_durable([(f"s/t1{i}/{j}".encode(), None) for i in range(3) for j in range(50)], 3)
        assert [key for key, _ in store.scan(b"s/t1/")] == [b"s/t1/a", b"s/t1/b", b"s/t1/\xff\xff"]
        assert [key for key, _ in store.scan(b"s/t1")] == [b"s/t1/a", b"s/t1/b", b"s/t1/\xff\xff", b"s/t10/a", b"s/t1\xff"]
        assert [key for key, _ in store.scan(b"s/", start=b"s/t10")] == [b"s/t10/a", b"s/t1\xff", b"s/t2/a"]
        assert [key for key, _ in store.scan(b"\xff")] == [b"\xff\xff"]
        assert [key for key, _ in store.scan(b"")] == sorted(keys)
        assert list(store.scan(b"s/t3/")) == []
    finally:
        store.close()


_KILLED_WRITER = """
import os, signal, sys, time
from pathlib import Path
from agentstream.runtime.store import PartitionStore

store = PartitionStore(Path(sys.argv[1]))
for offset in range(5):
    store.put_all_durable([(b"before-%d" % offset, b"x" * 100)], offset)
assert store.flush_if_older(age_s=0.0)
deadline = time.monotonic() + 30
while store._db.property_int_value("rocksdb.num-immutable-mem-table") or store._db.property_int_value(
        "rocksdb.cur-size-active-mem-table") > 4096 or not store._db.property_int_value("rocksdb.total-sst-files-size"):
    assert time.monotonic() < deadline, "the flush asked for did not reach a table file within 30 s"
    time.sleep(0.01)
for offset in range(5, 10):
    store.put_all_durable([(b"after-%d" % offset, b"x" * 100)], offset)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_kill_9_leaves_the_writes_up_to_the_last_flush_with_their_offset(tmp_path: Path) -> None:
    """No write-ahead log (runtime/store.py): a kill -9 loses the writes since the last memtable
    flush, and what is left is the table as of the offset it records, which the next start
    replays the changelog from."""
    path = tmp_path / "p0"
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    store = PartitionStore(path)
    try:
        assert sorted(key for key, _ in store.items()) == [b"before-%d" % i for i in range(5)]
        assert store.changelog_offset == 4
    finally:
        store.close()


class _Clock:
    """A stand-in for the store module's ``time``: ``monotonic()`` reads ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


def test_a_stores_oldest_unflushed_write_is_flushed_once_it_is_old_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock(1_000.0)
    monkeypatch.setattr(store_module, "time", clock)  # the store's clock only: the writes' times are the test's
    store = PartitionStore(tmp_path / "p0")
    try:
        assert not store.flush_if_older(age_s=0.0)  # nothing written: nothing to flush
        store.put_all_durable([(b"a", VALUE)], 0)
        assert not store.flush_if_older(age_s=60.0, now=1_059.0)
        clock.now = 1_030.0
        store.put_all_durable([(b"b", VALUE)], 1)  # a later write does not make the oldest younger
        assert store.flush_if_older(age_s=60.0, now=1_060.5), "60.5 s after the oldest write (30.5 after the newest)"
        assert not store.flush_if_older(age_s=60.0, now=1_200.0)  # flushed: nothing older left
        monkeypatch.undo()
        deadline = time.monotonic() + 30  # the flush runs in RocksDB's background
        while not _table_file_bytes(store):
            assert time.monotonic() < deadline, "the flush asked for did not reach a table file within 30 s"
            time.sleep(0.01)
        assert sorted(key for key, _ in store.items()) == [b"a", b"b"]
    finally:
        store.close()


def test_no_flush_is_asked_for_while_one_is_under_way(tmp_path: Path) -> None:
    """Asking RocksDB for a flush while one is under way blocks the caller until it ends
    (a manual flush may not stall writes), and the caller is the event loop: the store
    leaves its mark and asks at a later call instead."""
    store = PartitionStore(tmp_path / "p0")
    try:
        caught = 0
        for round_ in range(5):  # a flush of a few MB may end before the check: a few rounds catch one under way
            store.put_all_durable([(f"{round_}/{n}".encode(), VALUE) for n in range(4_000)], round_)
            store._db.flush(wait=False)  # what the memtable budget or a full memtable starts
            store.put_all_durable([(f"{round_}/late".encode(), VALUE)], round_ + 100)
            if store._db.property_int_value("rocksdb.num-immutable-mem-table"):
                caught += 1
                assert not store.flush_if_older(age_s=0.0), "asked for a flush while one was under way"
            deadline = time.monotonic() + 30
            while store._db.property_int_value("rocksdb.num-immutable-mem-table"):
                assert time.monotonic() < deadline, "the flush under way did not end within 30 s"
                time.sleep(0.01)
            assert store.flush_if_older(age_s=0.0), "once it has ended, the store's mark makes the next call ask"
        assert caught, "no round caught a flush under way: the test did not test"
    finally:
        store.close()


_KEYS = [b"c/t1", b"c/t2", b"a/x:r:0", b"s/r/0", b"c", b"a/"]
_PREFIXES = [b"c/", b"a/", b"s/", b"z/"]
_OPS = st.lists(st.tuples(st.sampled_from(["put", "delete", "durable", "flush", "abort", "restore", "reset", "ask"]),
                          st.sampled_from(_KEYS), st.sampled_from(_PREFIXES)), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_may_hold_is_false_only_while_no_key_of_the_prefix_is_stored_buffered_or_flushing(tmp_path: Path, ops: list[tuple[str, bytes, bytes]]) -> None:
    # Its answers are kept (a cancel is asked for at every step boundary): every kind of
    # write after a False must turn it, or a reader would skip a key that is there.
    store = PartitionStore(tmp_path / f"p{uuid.uuid4().hex}")
    offset = 0
    try:
        for op, key, prefix in ops:
            offset += 1
            if op == "put":
                store.put(key, b"v")
            elif op == "delete":
                store.delete(key)
            elif op == "durable":
                store.put_all_durable([(key, b"v"), (b"s/other", None)], offset)
            elif op == "flush" and not store._flushing:
                store.begin_flush()  # the flush's writes stay in flight until the next one ends
            elif op == "abort" and store._flushing:
                store.abort_flush() if offset % 2 else store.finish_flush(offset)
            elif op == "restore":
                store.apply_changelog([(offset, key, b"v")], offset)
            elif op == "reset" and not store._pending and not store._flushing:
                store.reset()
            elif op == "ask":
                store.may_hold(prefix)  # answers kept from here on
            for asked in _PREFIXES:
                held = any(k.startswith(asked) for k, _ in store.items())
                assert store.may_hold(asked) or not held, (asked, ops)
    finally:
        store.close()


def test_a_restore_brings_back_no_value_the_loop_has_since_overwritten(tmp_path: Path) -> None:
    # A restore on the executor thread may apply a changelog batch after the loop landed
    # newer writes of its keys (a partition kept for one topic while another topic's is
    # assigned): those keys keep the loop's values; the batch's other records are applied.
    store = PartitionStore(tmp_path / "p0")
    try:
        store.put_durable(b"t/task", b"head", 100)
        with store.restoring():
            store.put_durable(b"s/task/1", b"step", 104)  # the loop, while the restore reads
            store.put_durable(b"t/task", None, 105)  # the run's end tombstones its head
            store.apply_changelog([(100, b"t/task", b"head"), (103, b"other", b"v"), (104, b"s/task/1", b"step")], 104)
        assert store.get(b"t/task") is None and store.get(b"s/task/1") == b"step" and store.get(b"other") == b"v"
        assert store.changelog_offset == 105
        store.apply_changelog([(106, b"t/task", b"again")], 106)  # no restore running: applied as read
        assert store.get(b"t/task") == b"again" and store.changelog_offset == 106
    finally:
        store.close()


def test_a_restore_keeps_the_value_of_a_checkpoint_flushed_during_it(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    try:
        with store.restoring():
            store.put(b"k", b"new")
            store.begin_flush()
            store.finish_flush(110)
            store.apply_changelog([(107, b"k", b"old"), (111, b"later", b"v")], 111)
        assert store.get(b"k") == b"new" and store.get(b"later") == b"v" and store.changelog_offset == 111
    finally:
        store.close()


def test_a_store_wiped_during_its_restore_takes_every_record_of_the_changelog(tmp_path: Path) -> None:
    # A wipe (a store ahead of its changelog: topic recreated) drops what the loop wrote
    # before it, so those writes must not keep the changelog's records of their keys out.
    store = PartitionStore(tmp_path / "p0")
    try:
        with store.restoring() as recorded:
            assert recorded is None
            store.put_all_durable([(b"k1", b"mine"), (b"k2", b"mine")], 53)
            store.reset()
            store.apply_changelog([(52, b"k1", b"logged")], 52)
        assert store.get(b"k1") == b"logged" and store.get(b"k2") is None and store.changelog_offset == 52
    finally:
        store.close()


def test_a_write_landing_while_the_changelog_end_is_read_does_not_wipe_the_store(bootstrap: str, tmp_path: Path) -> None:
    # The store's recorded offset is read before the changelog's end: a write the loop lands
    # in between (recorded past the end read) is no sign of a store ahead of its changelog.
    store = PartitionStore(tmp_path / "p0")
    store.put_durable(b"a", b"1", 9)
    changelog = ("store-test.changelog", 0)

    def end_read_while_the_loop_writes(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        store.put_durable(b"b", b"2", 10)  # acknowledged just after the end below was read
        return {changelog: (0, 10)}

    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"store-test-{uuid.uuid4().hex}"})
    try:
        [report] = restore(reader, {changelog: store}, end_read_while_the_loop_writes)
        assert not report.wiped and report.records == 0
        assert store.get(b"a") == b"1" and store.get(b"b") == b"2" and store.changelog_offset == 10
    finally:
        reader.close()
        store.close()


def test_may_hold_answers_from_the_store_once(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    try:
        store.put_all_durable([(b"c/t1", b"v")], 1)
        assert store.may_hold(b"c/") and not store.may_hold(b"a/")
        store._db.put(b"a/behind-its-back", b"v")  # not through the store: the kept answer stands
        assert not store.may_hold(b"a/")
        store.put_all_durable([(b"c/t1", None)], 2)
        assert store.may_hold(b"c/")  # a delete leaves True: read as before
    finally:
        store.close()


def test_may_hold_keeps_no_answer_read_across_a_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A restore runs on an executor thread and may land between may_hold's read and its
    # keeping the answer: here it lands inside the read (the read saw none of its keys).
    store = PartitionStore(tmp_path / "p0")
    read = store.scan

    def read_then_restore(prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        found = list(read(prefix, start))
        store.apply_changelog([(1, b"c/t1", b"v")], 1)
        return iter(found)

    try:
        monkeypatch.setattr(store, "scan", read_then_restore)
        assert not store.may_hold(b"c/"), "the read before the restore found nothing"
        monkeypatch.setattr(store, "scan", read)
        assert store.may_hold(b"c/"), "a False read across a restore was kept: the restored cancel would be skipped"
    finally:
        store.close()


def test_a_value_whose_checkpoint_failed_reads_back_decoded_as_before(tmp_path: Path) -> None:
    # An aborted flush puts its writes back in the buffer; a handler still running (a
    # drain after the CheckpointError) must read the value it wrote, not its JSON bytes,
    # and a later checkpoint must write the same bytes.
    store = PartitionStore(tmp_path / "p0")
    try:
        record = {"open": {"task": "t1"}, "turns": [1, 2]}
        store.put_value(b"session-1", record, jsoncodec.dumps)
        store.put_value(b"session-3", {"turns": []}, jsoncodec.dumps)
        store.delete(b"session-2")
        store.begin_flush()
        assert store.get_value(b"session-1", jsoncodec.loads) is record  # in flight: as written
        newer = {"turns": [3]}
        store.put_value(b"session-3", newer, jsoncodec.dumps)  # written while the flush is out
        store.abort_flush()
        assert store.get_value(b"session-1", jsoncodec.loads) == record
        assert store.get_value(b"session-2", jsoncodec.loads) is None
        assert store.get_value(b"session-3", jsoncodec.loads) == newer  # the newer write wins
        assert store.begin_flush() == {b"session-1": jsoncodec.dumps(record), b"session-2": None,
                                       b"session-3": jsoncodec.dumps(newer)}
        store.finish_flush(7)
        assert store.get_value(b"session-1", jsoncodec.loads) == record
    finally:
        store.close()
