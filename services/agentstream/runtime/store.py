"""One RocksDB store (rocksdict) per table and assigned partition, with a write buffer.

Writes are buffered until the next checkpoint; only after their changelog records are
acknowledged by the broker do they reach RocksDB, in one write batch together with the
changelog offset they correspond to. So the local store never holds a value the
changelog lacks, and a restore can always resume from the recorded offset.

The changelog is the store's log, so RocksDB's own write-ahead log is off (Kafka Streams
runs its RocksDB stores so too): a write batch goes to the memtable only, and reaches disk
when the memtable is flushed (when it fills, when the process's memtable budget is reached,
and on close). A kill -9 loses the batches of memtables not flushed yet; what is on disk is
the batches up to some point in the order they were written, each with the changelog offset
it recorded. That is the table as of that offset because a partition's writes reach its
store in offset order: a checkpoint's flush writes the buffer with the checkpoint's offset,
one at a time; a restore applies the changelog in order; and write-through records are
stored as their delivery reports are settled, in offset order (runtime/write_through.py
``_store_landed``). The next start replays the changelog from the offset on disk. That is
right only while the changelog still holds every tombstone written since that offset
(``delete.retention.ms``, 7 days in the shipped topologies): a quiet store's writes could
otherwise sit in its memtable for longer, and a replay from so old an offset would miss a
delete the cleaner has dropped and bring the key back. So the owner of a store flushes it
once its oldest unflushed write is ``MAX_UNFLUSHED_S`` old (:meth:`PartitionStore.flush_if_older`;
Kafka Streams flushes its stores at every commit; the processor's checkpoints ask after each
periodic one (runtime/checkpointing.py), and every ``stall_s / 3`` while its slots are all taken): what is on disk trails
the store by about a minute (plus the commit interval), and a start after a kill -9 replays
at most that, or a memtable. With the
log on, each batch was also a write(2) to the log file: 8.4 against 4.9 µs of CPU per
one-record batch (bench/RESULTS.md, sessions 15 and 16).
"""

from __future__ import annotations

import contextlib
import functools
import math
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from pathlib import Path

from rocksdict import (
    AccessType, BlockBasedOptions, Cache, Options, Rdict, ReadOptions, WriteBatch, WriteBufferManager, WriteOptions,
)

from agentstream.runtime.errors import ProcessorError

# User keys are UTF-8 text or caller bytes; a NUL-prefixed key is reserved for metadata.
_META_PREFIX = b"\x00agentstream:"
_CHANGELOG_OFFSET_KEY = _META_PREFIX + b"changelog-offset"
_OFFSET = struct.Struct(">q")
_FIRST_USER_KEY = b"\x01"  # every key below it is metadata (or the empty key, which no table writes)
_DEFAULT_FAMILY = "default"  # RocksDB's column family; a store uses no other

# All stores of a process share one memtable budget. Each store is its own RocksDB, and
# RocksDB's default memtable (64 MB, with the write-ahead log behind it) is flushed only when
# full: with a store per table and partition, a steady churn of puts and deletes (step
# checkpoints, expiring dedupe markers) grew a worker's memory and disk for hours while its
# live data stayed small (bench/soak.py). With the budget, RocksDB flushes the store being
# written once all memtables together pass ~90 % of it; table files take the writes, and
# compaction drops the deleted keys.
MEMTABLE_BUDGET_BYTES = 16 * 1024 * 1024  # per process, all stores together
MEMTABLE_BYTES = 1024 * 1024  # per store: a flush at most this big; RocksDB sizes arena blocks from it (1/8)

# All stores of a process also share one block cache, which holds the index and filter blocks
# too. Left to its defaults each RocksDB has its own 32 MB cache and keeps index and filter
# blocks outside any cache: a worker has a store per table and partition (the router 4 x 6),
# and under churn each cache fills with blocks of table files that compaction has already
# replaced. A churn of session records (2,000 sessions, 36,000 updates, ~2 MB of live table
# files) took a process from 55 to 264 MB with per-store caches and to 77 MB with one shared
# 8 MB cache (bench/RESULTS.md, "Router memory").
BLOCK_CACHE_BYTES = 16 * 1024 * 1024  # per process, all stores together

# RocksDB's info LOG (flushes, compactions, a statistics dump every 10 minutes) is unbounded
# by default and was most of a dedupe table's growth on disk in the soak. Keep two files of
# at most this size per store: enough to read what the last flushes and compactions did.
INFO_LOG_BYTES = 256 * 1024
INFO_LOG_FILES = 2

# A store's oldest write not yet in a table file is flushed once it is this old (module
# docstring): far below any delete.retention.ms a topology should have, and one small table
# file per store and minute at most.
MAX_UNFLUSHED_S = 60.0
_IMMUTABLE_MEMTABLES = "rocksdb.num-immutable-mem-table"  # memtables switched out and not yet flushed

DELETED = None  # a buffered delete
Dumps = Callable[[Any], bytes]
Loads = Callable[[bytes], Any]


_ABSENT = object()


def _identity(value: bytes) -> bytes:
    return value


class PartitionStore:
    """Key/value bytes of one table partition, read-your-writes through the buffer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = self._open(path)
        # Buffered writes: key -> (value, dumps) — serialised once, at the checkpoint.
        self._pending: dict[bytes, tuple[Any, Dumps] | None] = {}
        # The buffer a checkpoint is flushing, serialised: what its changelog records hold and
        # finish_flush writes to RocksDB (None: a delete).
        self._flushing: dict[bytes, bytes | None] = {}
        # The same buffer, as written: read back while it is in flight,
        # and put back as it was if the checkpoint fails (its bytes would read back undecoded).
        self._flushing_entries: dict[bytes, tuple[Any, Dumps] | None] = {}
        # The recorded changelog offset, read once: every write of it goes through this
        # class, and a write-through put (several per task) would otherwise read it back.
        self._offset: int | None | object = _ABSENT
        self._unflushed_since: float | None = None  # monotonic time of the oldest write only in a memtable
        # may_hold's answers: a prefix under which nothing is stored (False) stays so until a
        # key under it is written; one that held a key (True) stays True for the store's life.
        # A restore (apply_changelog, reset) runs on an executor thread, possibly while the
        # loop asks (a partition kept for one topic while another's is assigned): it forgets
        # the answers and bumps the generation, so an answer computed across it is not kept.
        self._holds: dict[bytes, bool] = {}
        self._holds_generation = 0
        self._holds_lock = threading.Lock()
        # Held while a write that records a changelog offset lands: the loop's
        # (put_all_durable, finish_flush), a restore's (apply_changelog, reset: on the
        # executor thread). While a restore runs (restoring()), the loop's writes note each
        # key's changelog offset, so that the restore applies no older record of it.
        self._offset_lock = threading.Lock()
        self._written_in_restore: dict[bytes, float] | None = None

    # -- reads and writes from handlers ------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            entry = self._pending[key]
            return None if entry is None else entry[1](entry[0])
        if key in self._flushing:
            return self._flushing[key]
        value = self._db.get(key)
        return value if value is None else bytes(value)

    def get_value(self, key: bytes, loads: Loads, flushed: bytes | None = None) -> Any:
        """The decoded value (None if absent); a buffered value, or one a checkpoint is
        flushing, is the object written (not a copy: assign a changed value back, as
        Table.__setitem__ says). ``flushed``: the key's stored bytes, just read by a scan
        (not read again)."""
        entry = self._pending.get(key, _ABSENT)
        if entry is _ABSENT:
            entry = self._flushing_entries.get(key, _ABSENT)
        if entry is not _ABSENT:
            return None if entry is None else entry[0]  # type: ignore[index]
        raw = flushed if flushed is not None else self._db.get(key)
        return None if raw is None else loads(bytes(raw))

    def put(self, key: bytes, value: bytes) -> None:
        self.put_value(key, value, _identity)

    def put_value(self, key: bytes, value: Any, dumps: Dumps) -> None:
        if key[:1] == b"\x00":
            raise ProcessorError(f"Table key {key!r} starts with NUL, which is reserved for metadata.")
        self._pending[key] = (value, dumps)
        if self._holds:
            self._written(key)

    def delete(self, key: bytes) -> None:
        self._pending[key] = DELETED

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every live key and value, buffer included (for tests and inspection)."""
        merged: dict[bytes, bytes | None] = {}
        for key, value in self._db.items():
            if not bytes(key).startswith(_META_PREFIX):
                merged[bytes(key)] = bytes(value)
        merged.update(self._flushing)
        merged.update(self._serialised_pending())
        for key, maybe in merged.items():
            if maybe is not None:
                yield key, maybe

    def may_hold(self, prefix: bytes) -> bool:
        """False only if no key starting with ``prefix`` is stored, buffered or being flushed:
        a reader that finds False skips the reads of keys under it (a cancel checked at every
        step boundary, the approvals of a run: most partitions never hold one). Answered from
        the store once, then kept: a write under the prefix turns False to True; deletes leave
        True as it is (a prefix that held keys is read as before). Every write checks the
        prefixes answered False, so they are meant to be a small fixed set."""
        held = self._holds.get(prefix)
        if held is None:
            generation = self._holds_generation
            held = any(key.startswith(prefix) for key in (*self._pending, *self._flushing)) or \
                next(self.scan(prefix), None) is not None
            with self._holds_lock:
                if generation == self._holds_generation:  # no restore ran while it was read
                    self._holds[prefix] = held
        return held

    def _written(self, key: bytes) -> None:
        # A copy: a restore on the executor thread may clear the answers meanwhile.
        for prefix, held in list(self._holds.items()):
            if not held and key.startswith(prefix):
                self._holds[prefix] = True

    def _forget_holds(self) -> None:
        """Restored or reset keys: may_hold asks the store again."""
        with self._holds_lock:
            self._holds_generation += 1
            self._holds.clear()

    # -- checkpoint --------------------------------------------------------------------
    def begin_flush(self) -> dict[bytes, bytes | None]:
        """Move the buffer aside for a checkpoint; new writes go to a fresh buffer."""
        if self._flushing:
            raise ProcessorError(f"A checkpoint of {self.path} is already in progress.")
        self._flushing, self._flushing_entries, self._pending = self._serialised_pending(), self._pending, {}
        return self._flushing

    def _serialised_pending(self) -> dict[bytes, bytes | None]:
        return {key: None if entry is None else entry[1](entry[0]) for key, entry in self._pending.items()}

    def finish_flush(self, changelog_offset: int | None) -> None:
        """The flushed writes are in the changelog up to ``changelog_offset``: persist them."""
        batch = WriteBatch(raw_mode=True)
        for key, value in self._flushing.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        with self._offset_lock:
            if self._written_in_restore is not None:
                _note_written(self._written_in_restore, self._flushing, changelog_offset)
            self._write_recording(batch, changelog_offset)
        self._flushing, self._flushing_entries = {}, {}

    def abort_flush(self) -> None:
        """The checkpoint failed: keep the writes buffered (they win over older ones)."""
        restored = self._flushing_entries
        restored.update(self._pending)  # newer writes win
        self._pending, self._flushing, self._flushing_entries = restored, {}, {}

    # -- restore -----------------------------------------------------------------------
    @property
    def changelog_offset(self) -> int | None:
        """Offset of the last changelog record this store contains, or None."""
        if self._offset is _ABSENT:
            raw = self._db.get(_CHANGELOG_OFFSET_KEY)
            self._offset = None if raw is None else int(_OFFSET.unpack(bytes(raw))[0])
        return self._offset  # type: ignore[return-value]

    @contextlib.contextmanager
    def restoring(self) -> Iterator[int | None]:
        """Around a restore of this store (on the executor thread), entered before the
        changelog's end is read; yields the store's recorded offset, read as the loop's
        writes start being noted. The loop may be writing the store (a partition kept for
        one topic while another topic's is assigned), and the changelog the restore reads
        may end with records older than writes the loop lands meanwhile (apply_changelog)."""
        with self._offset_lock:
            self._written_in_restore = {}
            recorded = self.changelog_offset
        try:
            yield recorded
        finally:
            with self._offset_lock:
                self._written_in_restore = None

    def apply_changelog(self, records: list[tuple[int, bytes, bytes | None]], last_offset: int) -> None:
        """Restored changelog records (offset, key, value; None deletes), in offset order, read
        up to ``last_offset``. In a restore (restoring()), a record of a key the loop has
        written since, at a later offset, is not applied: it would bring the older value
        back (a head the run's end tombstoned, say)."""
        batch = WriteBatch(raw_mode=True)
        with self._offset_lock:
            newer = self._written_in_restore or {}
            for offset, key, value in records:
                if newer.get(key, -1) > offset:
                    continue
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            self._write_recording(batch, last_offset)
        self._forget_holds()

    def put_durable(self, key: bytes, value: bytes | None, changelog_offset: int) -> None:
        """A write-through record the changelog has acknowledged at ``changelog_offset``."""
        self.put_all_durable([(key, value)], changelog_offset)

    def put_all_durable(self, records: list[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        """Write-through records (key, value; None deletes) the changelog has acknowledged,
        the last of them at ``changelog_offset``; in one RocksDB batch."""
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
                if self._holds:
                    self._written(key)
        with self._offset_lock:
            if self._written_in_restore is not None:
                _note_written(self._written_in_restore, [key for key, _ in records], changelog_offset)
            self._write_recording(batch, changelog_offset)

    def _write_recording(self, batch: WriteBatch, changelog_offset: int | None) -> None:
        """Write ``batch`` with ``changelog_offset`` as the recorded offset, unless the store
        has recorded a later one (an older acknowledgement; a restore's batch landing after
        the loop's later write); under ``_offset_lock``."""
        recorded = self.changelog_offset
        newer = changelog_offset is not None and (recorded is None or changelog_offset > recorded)
        if newer:
            batch.put(_CHANGELOG_OFFSET_KEY, _OFFSET.pack(changelog_offset))
        self._write(batch)
        if newer:
            self._offset = changelog_offset

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Keys starting with ``prefix`` and their values, in key order (flushed data only),
        from ``start`` (a key with that prefix) when given. Metadata keys are never listed.
        What a scan reads stays out of the block cache (prefix_read_options)."""
        begin = max(prefix if start is None else max(start, prefix), _FIRST_USER_KEY)
        options = prefix_read_options(prefix, fill_cache=False)  # held while the iterator lives (its bound is in it)
        for key, value in self._db.items(from_key=begin, read_opt=options):
            raw = bytes(key)
            if not raw.startswith(prefix):
                break
            yield raw, bytes(value)

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def close(self) -> None:
        self._db.close()

    def _write(self, batch: WriteBatch) -> None:
        self._db.write(batch, write_opt=_write_options())
        if self._unflushed_since is None:
            self._unflushed_since = time.monotonic()

    def flush_if_older(self, age_s: float | None = None, now: float | None = None) -> bool:
        """Flush the memtable to a table file if its oldest write is ``age_s`` (default
        ``MAX_UNFLUSHED_S``) old (module docstring); in RocksDB's background, not waited for,
        and not while an earlier flush is under way. True if a flush was asked for."""
        since = self._unflushed_since
        limit = MAX_UNFLUSHED_S if age_s is None else age_s
        if since is None or (time.monotonic() if now is None else now) - since < limit:
            return False
        if self._db.property_int_value(_IMMUTABLE_MEMTABLES):
            # A flush is under way (the memtable budget's, or a full memtable's): asking for
            # another would block until it ends (RocksDB does not let a manual flush stall
            # writes). The mark stays: a later call asks once that one is done.
            return False
        # Cleared before the flush is asked for: a write between the two stays marked.
        self._unflushed_since = None
        self._db.flush(wait=False)
        return True

    def reset(self) -> None:
        """Delete every entry (and the recorded changelog offset): the store restores from scratch."""
        if self._pending or self._flushing:
            raise ProcessorError(f"{self.path} has unflushed writes; it cannot be reset.")
        with self._offset_lock:
            self._db.close()
            shutil.rmtree(self.path, ignore_errors=True)
            self._db = self._open(self.path)
            self._offset = None
            if self._written_in_restore is not None:
                self._written_in_restore.clear()  # what was noted is gone: no record is older than it
        self._unflushed_since = None
        self._forget_holds()

    @staticmethod
    def _open(path: Path) -> Rdict:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(MEMTABLE_BYTES)
        options.set_write_buffer_manager(_write_buffer_manager())
        options.set_block_based_table_factory(_table_options())
        options.set_max_log_file_size(INFO_LOG_BYTES)
        options.set_keep_log_file_num(INFO_LOG_FILES)
        # The column family's options named too: given none, rocksdict opens an existing
        # store with the column-family options it reads back from the store's OPTIONS file,
        # where a cache cannot be written, so every reopened store had a block cache of its
        # own (8 MB each, not the shared one): a worker restarted on its state grew by many
        # MB more than a fresh one (bench/RESULTS.md "Waiting memory").
        return Rdict(str(path), options, column_families={_DEFAULT_FAMILY: options}, access_type=AccessType.read_write())

    @staticmethod
    def wipe(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


@functools.cache
def _write_buffer_manager() -> WriteBufferManager:
    """The process's one budget (made on first use: no RocksDB object at import)."""
    return WriteBufferManager(MEMTABLE_BUDGET_BYTES, False)  # False: never stall writers, flush instead


def _note_written(noted: dict[bytes, float], keys: Iterable[bytes], changelog_offset: int | None) -> None:
    """The loop's write of ``keys`` during a restore, at the batch's (last) offset; a write
    with no offset counts as newer than any record the restore reads."""
    noted.update(dict.fromkeys(keys, math.inf if changelog_offset is None else changelog_offset))


@functools.cache
def _write_options() -> WriteOptions:
    """Every write batch's options: no write-ahead log (the changelog is the log: module
    docstring)."""
    options = WriteOptions()
    options.disable_wal = True
    return options


@functools.cache
def _block_cache() -> Cache:
    """The process's one block cache (made on first use, like the memtable budget)."""
    return Cache(BLOCK_CACHE_BYTES)


def prefix_read_options(prefix: bytes, *, fill_cache: bool) -> ReadOptions:
    """Read options of a scan of the keys starting with ``prefix``.

    The upper bound stops RocksDB's iterator at the end of the prefix. Without it, a scan
    whose prefix holds no live key after the last one it yields skips every deleted key
    that follows in key order before it reaches a live one: the runs a specialist finished
    leave their step and head tombstones until compaction drops them, so a scan of one run's
    records with no live key after it took ~100 µs over 24,000 tombstones and ~11 µs with
    the bound (`python -m bench.store_scan`; with a live key close after the prefix both
    take ~14 µs).

    ``fill_cache=False`` for the worker's scans, which read each block once (a retention
    walk, what a worker reads when it takes a partition, the records of one run): a worker
    restarted on 10,000 waiting tasks filled 12 MB of the cache with them, pushing out the
    blocks that point reads come back to.

    Keep the options referenced while the iterator lives: rocksdict's iterator does not hold
    them, and once they are collected the bound is gone from under it (a scan then stopped
    early: tests/integration/test_store.py)."""
    options = ReadOptions()
    options.fill_cache(fill_cache)
    end = prefix_end(prefix)
    if end is not None:
        options.set_iterate_upper_bound(end)
    return options


def prefix_end(prefix: bytes) -> bytes | None:
    """The least key above every key that starts with ``prefix``; None when there is none
    (an empty prefix, or one of 0xff bytes only)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _table_options() -> BlockBasedOptions:
    table = BlockBasedOptions()
    table.set_block_cache(_block_cache())
    table.set_cache_index_and_filter_blocks(True)  # bounded by the cache, not per table file
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)  # the newest files' stay hot
    return table
