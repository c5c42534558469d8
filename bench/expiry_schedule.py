"""Expiry schedule benchmark: the router's two expiring tables under the runtime's
``Retention`` (each table and partition on its own schedule, a deep walk paced to end
within a tenth of its retention) against the two rules before it, in the same run, over
the same RocksDB stores.

    python -m bench.expiry_schedule [--partitions 6] [--sessions 1000] [--marks 30000] [--turns 10] [--seconds 300]

The router expires two tables (router/app.py): ``dedupe`` (a mark per task, kept
``dedupe.retention_s``, seven days by default) and ``sessions`` (a record per session
holding its memory, kept ``sessions.idle_retention_s`` after its last task). A walk visits
at most 1,000 keys of a partition per pass. The rules compared:

- ``one schedule`` (until session 10): every table walked at every pass; the next pass one
  commit interval (1 s) later while any walk stopped at its bound, else an interval
  (60 s at these retentions) later. While the dedupe walk went on (30 passes for 30,000
  marks), each session's record (its memory: ``--turns`` turns) was decoded every second.
- ``per table`` (session 10): each table on its own schedule; a walk that stopped at its
  bound goes on one commit interval later: a deep table is walked at 1,000 keys a second
  per partition, then again an interval after each walk ends.
- ``paced`` (the runtime now): each partition on its own schedule; once a walk's length
  is known, its passes are an interval apart unless that would not end it within a tenth
  of the retention.

Each partition gets one store per table, filled with ``--sessions`` idle session records
and ``--marks`` dedupe marks, none old enough to expire (so every variant only reads).
Then each variant serves ``--seconds`` of simulated time from its first pass (a fake
clock: the passes run for real, back to back, and their CPU is measured). Reported per
variant: passes, records of each table decoded, CPU seconds, and that CPU as a share of a
core over the simulated time. No broker.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._procs import REPO, machine, source_state, write_report

DEDUPE_RETENTION_S = 7 * 24 * 3600.0  # the topology's defaults (topology.py, topology_sections.py)
SESSIONS_RETENTION_S = 30 * 24 * 3600.0
RESUME_S = 1.0  # the worker's commit interval: the pace of a walk that stopped at its bound


class Clock:
    """Simulated seconds: the schedules read it, the passes' CPU is real."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """A table's decoder that counts the values it decodes."""

    def __init__(self, loads: Callable[[bytes], Any]) -> None:
        self.loads = loads
        self.count = 0

    def __call__(self, raw: bytes) -> Any:
        self.count += 1
        return self.loads(raw)


def fill(root: Path, partitions: int, sessions: int, marks: int, turns: int) -> dict[str, list[Any]]:
    """Per table, one store per partition: idle sessions with ``turns`` of memory, and marks."""
    from agentstream import jsoncodec
    from agentstream.runtime.store import PartitionStore
    from agentstream.runtime.table import Table
    from bench.restore import session_value

    now_ms = int(time.time() * 1000)
    codec = Table("sessions", "sessions.changelog")
    stores: dict[str, list[Any]] = {"sessions": [], "dedupe": []}
    for p in range(partitions):
        session_store = PartitionStore(root / f"sessions-{p}")
        records = [(f"session-{p}-{i:06d}".encode(), session_value(codec, i, "expiry", turns)) for i in range(sessions)]
        session_store.put_all_durable(records, 1)
        mark_store = PartitionStore(root / f"dedupe-{p}")
        mark = jsoncodec.dumps(now_ms)
        for start in range(0, marks, 10_000):
            chunk = [(f"task-{p}-{i:08d}".encode(), mark) for i in range(start, min(start + 10_000, marks))]
            mark_store.put_all_durable(chunk, 1 + start)
        stores["sessions"].append(session_store)
        stores["dedupe"].append(mark_store)
    return stores


def router_tables(stores: dict[str, list[Any]]) -> list[tuple[Any, float, Any, Any, Counted]]:
    """The router's two expiring tables over ``stores``: (table, retention s, written_at, stamp, decoder)."""
    from agentstream import jsoncodec
    from agentstream.router.session_gate import idle_since
    from agentstream.runtime.expiry import stamp_now, timestamp_value
    from agentstream.runtime.table import Table

    tables = []
    for name, retention_s, written_at, stamp in (
        ("dedupe", DEDUPE_RETENTION_S, timestamp_value, stamp_now),
        ("sessions", SESSIONS_RETENTION_S, idle_since, None),
    ):
        decoder = Counted(jsoncodec.loads)
        table = Table(name, f"{name}.changelog", loads=decoder)
        table.stores = dict(enumerate(stores[name]))
        tables.append((table, retention_s, written_at, stamp, decoder))
    return tables


async def _not_persisted(table: Any, key: str | bytes, value: Any, *, partition: int | None = None) -> None:
    raise AssertionError("nothing here expires, and the router's tables are buffered")


def paced(stores: dict[str, list[Any]], seconds: float) -> dict[str, Any]:
    """The runtime's Retention."""
    from agentstream.runtime.retention import Retention
    from agentstream.runtime.stats import ProcessorStats

    clock = Clock()
    retention = Retention("router", ProcessorStats(), _not_persisted, resume_s=RESUME_S, clock=clock)
    tables = router_tables(stores)
    for table, retention_s, written_at, stamp, _ in tables:
        retention.add(table, retention_s, written_at, stamp=stamp, prefix=b"", write_through=False)
    retention.start()
    owned = set(range(len(stores["dedupe"])))
    first = retention.next_due
    passes = 0
    started = time.process_time()
    while retention.next_due < first + seconds:
        clock.now = retention.next_due
        asyncio.run(retention.run_due(owned, lambda: False))
        passes += 1
    return _outcome("paced", passes, time.process_time() - started, seconds, tables)


def per_table(stores: dict[str, list[Any]], seconds: float) -> dict[str, Any]:
    """Session 10's rule, over the same Expiry walks: each table on its own schedule, the
    next pass of a table RESUME_S later while any of its walks stopped at its bound, else
    its interval later."""
    tables = router_tables(stores)
    walks = _walks(tables)
    due = [interval for _, _, interval in walks]
    start, passes = min(due), 0
    started = time.process_time()
    while min(due) < start + seconds:
        now = min(due)
        for i, (table, expiry, interval) in enumerate(walks):
            if due[i] <= now:
                more = [expiry.sweep(partition, store).full for partition, store in table.stores.items()]
                due[i] = now + (RESUME_S if any(more) else interval)
        passes += 1
    return _outcome("per table", passes, time.process_time() - started, seconds, tables)


def one_schedule(stores: dict[str, list[Any]], seconds: float) -> dict[str, Any]:
    """The rule before per-table schedules, over the same Expiry walks: every table is
    walked at every pass, and the next pass comes RESUME_S later while any walk stopped at
    its bound, else the shortest interval later."""
    tables = router_tables(stores)
    walks = _walks(tables)
    interval = min(interval for _, _, interval in walks)
    now, end, passes = interval, interval + seconds, 0
    started = time.process_time()
    while now < end:
        more = False
        for table, expiry, _ in walks:
            for partition, store in table.stores.items():
                more = expiry.sweep(partition, store).full or more
        passes += 1
        now += RESUME_S if more else interval
    return _outcome("one schedule", passes, time.process_time() - started, seconds, tables)


def _walks(tables: list[Any]) -> list[tuple[Any, Any, float]]:
    """(table, its Expiry, its interval) as Retention.add makes them."""
    from agentstream.runtime.expiry import Expiry

    return [(table, Expiry(int(r * 1000), w, table.decode_value, stamp=s), min(60.0, max(0.5, r / 10)))
            for table, r, w, s, _ in tables]


def _outcome(variant: str, passes: int, cpu_s: float, seconds: float, tables: list[Any]) -> dict[str, Any]:
    decoded = {table.name: decoder.count for table, _, _, _, decoder in tables}
    return {"variant": variant, "passes": passes, "decoded": decoded, "cpu_s": cpu_s, "cores": cpu_s / seconds}


def run(partitions: int, sessions: int, marks: int, turns: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="expiry-schedule-") as root:
        stores = fill(Path(root), partitions, sessions, marks, turns)
        try:
            record_bytes = len(stores["sessions"][0].get(b"session-0-000000") or b"")
            trials = [variant(stores, seconds) for variant in (one_schedule, per_table, paced)]
        finally:
            for group in stores.values():
                for store in group:
                    store.close()
    return {"partitions": partitions, "sessions": sessions, "marks": marks, "turns": turns, "seconds": seconds,
            "session_record_bytes": record_bytes, "trials": trials}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=6, help="partitions the router owns (default 6)")
    parser.add_argument("--sessions", type=int, default=1000, help="idle sessions per partition (default 1000)")
    parser.add_argument("--marks", type=int, default=30_000, help="dedupe marks per partition (default 30000)")
    parser.add_argument("--turns", type=int, default=10, help="turns of memory per session (default 10, the topology's)")
    parser.add_argument("--seconds", type=float, default=300.0, help="simulated seconds of serving (default 300)")
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    result = run(args.partitions, args.sessions, args.marks, args.turns, args.seconds)
    print(f"expiry schedule: {args.partitions} partitions x ({args.sessions} sessions of "
          f"{result['session_record_bytes']} bytes + {args.marks} dedupe marks), {args.seconds:g} s of serving")
    for trial in result["trials"]:
        decoded = ", ".join(f"{name} {count:,}" for name, count in trial["decoded"].items())
        print(f"  {trial['variant']:12s} {trial['passes']:4d} passes  decoded: {decoded}  "
              f"CPU {trial['cpu_s']:.3f} s = {trial['cores']:.3f} cores")
    report = {"benchmark": "expiry_schedule", "started": stamp, "command": " ".join(sys.argv), "machine": machine(),
              "source": source_state("runtime"), "config": vars(args), "result": result}
    print(f"wrote {write_report('expiry_schedule', stamp, report).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
