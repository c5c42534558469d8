"""The gateway's view in RocksDB (rocksdict): task views, their events and the approval
requests. One store per gateway process, rebuilt from the topics
at every start (``ViewStore.fresh``): the topics are the truth, the store a local index
that keeps the view out of the heap.

Keys (UTF-8): ``t/<task_id>`` a task's view, ``e/<task_id>/<offset>`` its events by
task-events offset (zero-padded, so key order is offset order), ``a/<approval_id>`` an
approval request and the offsets of its decisions (and of those its agent refused).
(Each tenant's spend and tasks in flight are the tenancy ledger's, read by its own
reader: tenancy/ledger_reader.py.)
Values are JSON.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Options, Rdict, WriteBatch

from agentstream.runtime.store import prefix_read_options

_OFFSET_DIGITS = 20
APPROVALS = b"a/"  # the prefix of approval entries


def task_key(task_id: str) -> bytes:
    return f"t/{task_id}".encode()


def event_key(task_id: str, offset: int) -> bytes:
    return f"e/{task_id}/{offset:0{_OFFSET_DIGITS}d}".encode()


def approval_key(approval_id: str) -> bytes:
    return APPROVALS + approval_id.encode()


class ViewBatch:
    """Writes of one poll, applied together; reads see them before they are written."""

    def __init__(self, store: ViewStore) -> None:
        self._store = store
        self._pending: dict[bytes, Any] = {}

    def get(self, key: bytes) -> Any:
        return self._pending[key] if key in self._pending else self._store.get(key)

    def put(self, key: bytes, value: Any) -> None:
        self._pending[key] = value

    def __len__(self) -> int:
        return len(self._pending)

    def commit(self) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in self._pending.items():
            batch.put(key, json.dumps(value, separators=(",", ":")).encode())
        self._store.write(batch)
        self._pending = {}


class ViewStore:
    """One RocksDB of JSON values; thread-safe for one writer (the reader thread) and many
    readers (request handlers), as RocksDB is."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.path = path
        self._db = Rdict(str(path), options, access_type=AccessType.read_write())

    @classmethod
    def fresh(cls, path: Path) -> ViewStore:
        """An empty store at ``path`` (what an earlier run left is dropped: it may miss records
        that the topics' retention has since removed, or hold a broker's that is gone)."""
        shutil.rmtree(path, ignore_errors=True)
        return cls(path)

    def get(self, key: bytes) -> Any:
        raw = self._db.get(key)
        return None if raw is None else json.loads(bytes(raw))

    def write(self, batch: WriteBatch) -> None:
        self._db.write(batch)

    def batch(self) -> ViewBatch:
        return ViewBatch(self)

    def scan(self, prefix: bytes, start: bytes | None = None, limit: int | None = None) -> Iterator[tuple[bytes, Any]]:
        """Keys with ``prefix`` in key order (from ``start`` when given) and their values."""
        count = 0
        options = prefix_read_options(prefix, fill_cache=True)  # held while the iterator lives (its bound is in it)
        for key, value in self._db.items(from_key=start or prefix, read_opt=options):
            raw = bytes(key)
            if not raw.startswith(prefix) or (limit is not None and count >= limit):
                return
            count += 1
            yield raw, json.loads(bytes(value))

    def task(self, task_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.get(task_key(task_id))
        return found

    def recent_tasks(self, tenant_id: str, limit: int) -> list[dict[str, Any]]:
        """The tenant's ``limit`` latest task views, newest submission first. A scan of every
        task view: the view holds what the topics retain, which a console list can afford;
        a per-tenant time index would be the next step if retention grows large."""
        found = [view for _, view in self.scan(b"t/") if view.get("tenant_id") == tenant_id]
        found.sort(key=lambda view: view.get("submitted_at") or view.get("first_event_at") or 0, reverse=True)
        return found[:limit]

    def events_after(self, task_id: str, offset: int, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        """The task's events after task-events ``offset``, in offset order."""
        start = event_key(task_id, offset + 1) if offset >= 0 else None
        prefix = f"e/{task_id}/".encode()
        return [(int(key[len(prefix):]), value) for key, value in self.scan(prefix, start, limit)]

    def close(self) -> None:
        self._db.close()
