"""What each tenant has in flight and has spent per UTC day: pure accounting over a key/value
store, fed with the tasks and results a reader of the whole topics sees (ledger_reader.py).

A task is in flight from its TaskSubmitted until its TaskResult, whatever the status:
queued behind its session, running, or waiting for a human. Its result closes it and adds
its ``usage.cost_usd`` to the tenant's spend on the UTC day of ``completed_at``. The two
topics are read with no order between them, so a result may come before its task: the
result's mark (``done``) keeps a late task from opening, and a repeated result from being
counted twice.

Store keys (text, so a look at the store reads plainly)::

    run/<tenant>\\x1f<task_id>   -> submitted_at   (in flight)
    done/<task_id>               -> completed_at   (answered; kept DONE_KEPT_MS)
    spend/<tenant>\\x1f<day>      -> usd            (day: days since 1970-01-01, UTC)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

DAY_MS = 86_400_000
# How long a task's result mark is kept: a task submitted again after this (same task_id)
# opens again. Seven days, the retention of the tasks topic in the shipped topologies.
DONE_KEPT_MS = 7 * DAY_MS
SEP = "\x1f"  # ids are printable text (router/decide.py), so a control character separates them
RUN, DONE, SPEND = b"run/", b"done/", b"spend/"


class Store(Protocol):
    """What the ledger needs of its store (runtime.store.PartitionStore has it)."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]: ...


def countable(record: Mapping[str, Any]) -> bool:
    """Whether a task or result has ids the ledger can key (the router rejects the others:
    empty ids, or ids with control characters, SEP among them)."""
    ids = (record.get("tenant_id"), record.get("task_id"))
    return all(isinstance(value, str) and value and value.isprintable() for value in ids)


def utc_day(ms: int) -> int:
    """The UTC day of an epoch-milliseconds time, as days since 1970-01-01."""
    return ms // DAY_MS


class TenantLedger:
    """Tenants' tasks in flight and spend per day, kept in ``store`` and summed in memory."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._running: dict[str, dict[str, int]] = {}  # tenant -> task_id -> submitted_at
        self._spend: dict[tuple[str, int], float] = {}  # (tenant, day) -> usd
        for key, value in store.scan(RUN):
            tenant, task_id = key[len(RUN):].decode().split(SEP, 1)
            self._running.setdefault(tenant, {})[task_id] = int(value)
        for key, value in store.scan(SPEND):
            tenant, day = key[len(SPEND):].decode().split(SEP, 1)
            self._spend[(tenant, int(day))] = float(value)

    # -- what the reader feeds in ----------------------------------------------------------
    def submitted(self, task: Mapping[str, Any]) -> None:
        """A TaskSubmitted: in flight unless it was answered already (or is in flight)."""
        tenant, task_id = task["tenant_id"], task["task_id"]
        if task_id in self._running.get(tenant, {}) or self._store.get(DONE + task_id.encode()) is not None:
            return
        at = int(task["submitted_at"])
        self._running.setdefault(tenant, {})[task_id] = at
        self._store.put(_run_key(tenant, task_id), str(at).encode())

    def answered(self, result: Mapping[str, Any]) -> None:
        """A TaskResult: closes its task and adds its cost to the tenant's day, once."""
        tenant, task_id = result["tenant_id"], result["task_id"]
        done_key = DONE + task_id.encode()
        if self._store.get(done_key) is not None:
            return  # a repeated result: counted already
        completed_at = int(result["completed_at"])
        self._store.put(done_key, str(completed_at).encode())
        if self._running.get(tenant, {}).pop(task_id, None) is not None:
            self._store.delete(_run_key(tenant, task_id))
        cost = float((result.get("usage") or {}).get("cost_usd") or 0.0)
        if cost > 0:
            day = (tenant, utc_day(completed_at))
            self._spend[day] = self._spend.get(day, 0.0) + cost
            self._store.put(_spend_key(*day), repr(self._spend[day]).encode())

    def prune_marks(self, now_ms: int) -> int:
        """Forget result marks older than DONE_KEPT_MS (a scan of the store, nothing the
        router reads); returns how many went."""
        old = [key for key, value in self._store.scan(DONE) if int(value) < now_ms - DONE_KEPT_MS]
        for key in old:
            self._store.delete(key)
        return len(old)

    def prune_days(self, now_ms: int) -> int:
        """Forget the spend of days before yesterday; returns how many tenant days went."""
        old = [entry for entry in self._spend if entry[1] < utc_day(now_ms) - 1]
        for tenant, day in old:
            del self._spend[(tenant, day)]
            self._store.delete(_spend_key(tenant, day))
        return len(old)

    # -- what the router asks --------------------------------------------------------------
    def spent(self, tenant: str, day: int) -> float:
        """The tenant's spend in USD on ``day`` (utc_day) from the results read so far."""
        return self._spend.get((tenant, day), 0.0)

    def in_flight_before(self, tenant: str, task: Mapping[str, Any]) -> int:
        """The tenant's tasks in flight that were submitted before ``task`` (by submitted_at,
        then task_id): so two routers deciding two tasks of one tenant agree on which came
        first, and the later one is the one refused when only one fits."""
        mine = (int(task["submitted_at"]), task["task_id"])
        return sum(1 for task_id, at in self._running.get(tenant, {}).items() if (at, task_id) < mine)

    def in_flight(self, tenant: str) -> int:
        return len(self._running.get(tenant, {}))


def _run_key(tenant: str, task_id: str) -> bytes:
    return RUN + f"{tenant}{SEP}{task_id}".encode()


def _spend_key(tenant: str, day: int) -> bytes:
    return SPEND + f"{tenant}{SEP}{day}".encode()
