"""Store memory benchmark: a process's RSS under a churn of session records, with the
runtime's store settings against RocksDB's defaults, in the same run.

    python -m bench.store_memory [--sessions 2000] [--updates 36000] [--partitions 6]

Each variant runs in its own process (RSS is per process) with the stores a router has: four
tables x ``--partitions`` partitions, each its own RocksDB (runtime/store.py). The churn is
the router's: every update reads one session's record, appends a turn (an input of 100-300
and an answer of 400-900 characters), keeps the last 10 turns and writes it back; a dedupe
marker is written beside it; every 50 updates each store is checkpointed (its buffered
writes go to RocksDB in one batch). Sessions are picked at random (seeded, the same in both
variants).

Variants: ``runtime`` — the stores as the workers open them (one block cache per process
that also holds index and filter blocks, a shared memtable budget). ``per-store-cache`` —
the same, except each store has RocksDB's default table options (its own 32 MB block cache;
index and filter blocks outside it): the settings before the soak found the router growing.

Reported: RSS every ``--sample-every`` updates, and at the end RocksDB's block-cache usage
and live table-file bytes (``rocksdb.total-sst-files-size`` summed over the stores).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._procs import REPO, machine, source_state, write_report

VARIANTS = ("per-store-cache", "runtime")
TABLES = 4  # dedupe, sessions, retrying, parked: the router's
REMEMBERED_TURNS = 10
CHECKPOINT_EVERY = 50


def _use_rocksdb_default_table_options() -> None:
    """Give every store RocksDB's default table options (the baseline variant)."""
    from rocksdict import BlockBasedOptions

    from agentstream.runtime import store

    store._table_options = BlockBasedOptions  # type: ignore[assignment]


def churn(root: Path, sessions: int, updates: int, partitions: int, sample_every: int, shared_cache: bool) -> dict[str, Any]:
    """The child's work: the churn above, sampling RSS; returns the figures."""
    import psutil

    from agentstream.runtime.store import PartitionStore

    stores = [PartitionStore(root / f"table{t}" / str(p)) for t in range(TABLES) for p in range(partitions)]
    session_stores, dedupe_stores = stores[:partitions], stores[partitions: 2 * partitions]
    rng = random.Random(7)
    process = psutil.Process()
    samples: list[tuple[int, int]] = [(0, process.memory_info().rss)]
    for update in range(1, updates + 1):
        session = rng.randrange(sessions)
        store = session_stores[session % partitions]
        key = f"session-{session}".encode()
        raw = store.get(key)
        turns = json.loads(raw) if raw else []
        turns.append({"input": "i" * rng.randint(100, 300), "answer": "a" * rng.randint(400, 900)})
        store.put(key, json.dumps(turns[-REMEMBERED_TURNS:]).encode())
        dedupe_stores[session % partitions].put(f"task-{update}".encode(), b"1")
        if update % CHECKPOINT_EVERY == 0:
            for each in stores:
                if each.dirty:
                    each.begin_flush()
                    each.finish_flush(update)
        if update % sample_every == 0:
            samples.append((update, process.memory_info().rss))
    # A store reports the usage of its cache: the one shared cache, or its own.
    usage = [int(s._db.property_int_value("rocksdb.block-cache-usage") or 0) for s in stores]
    cache = max(usage) if shared_cache else sum(usage)
    sst = sum(int(s._db.property_int_value("rocksdb.total-sst-files-size") or 0) for s in stores)
    for each in stores:
        each.close()
    return {"samples": samples, "block_cache_bytes": cache, "sst_bytes": sst}


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"store-memory-{variant}-") as root:
        done = subprocess.run(
            [sys.executable, "-m", "bench.store_memory", "--child", variant, "--root", root,
             "--sessions", str(args.sessions), "--updates", str(args.updates),
             "--partitions", str(args.partitions), "--sample-every", str(args.sample_every)],
            cwd=REPO, capture_output=True, text=True, timeout=1800,
        )
    if done.returncode != 0:
        return {"variant": variant, "error": done.stderr[-2000:]}
    return {"variant": variant, "error": None, **json.loads(done.stdout.splitlines()[-1])}


def print_table(trials: list[dict[str, Any]]) -> None:
    ok = [t for t in trials if not t["error"]]
    for trial in trials:
        if trial["error"]:
            print(f"{trial['variant']}: FAILED\n{trial['error']}")
    if not ok:
        return
    print(f"\n{'updates':>8}  " + "  ".join(f"{t['variant'] + ' RSS MB':>22}" for t in ok))
    for row in zip(*(t["samples"] for t in ok)):
        print(f"{row[0][0]:>8}  " + "  ".join(f"{rss / 1e6:>22.1f}" for _, rss in row))
    for trial in ok:
        print(f"{trial['variant']}: block cache {trial['block_cache_bytes'] / 1e6:.1f} MB in use at the end; "
              f"live table files {trial['sst_bytes'] / 1e6:.1f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=36000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--sample-every", type=int, default=4000)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        shared = args.child == "runtime"
        if not shared:
            _use_rocksdb_default_table_options()
        print(json.dumps(churn(Path(args.root), args.sessions, args.updates, args.partitions, args.sample_every, shared)))
        return 0
    stamp = time.strftime("%Y%m%dT%H%M%S")
    trials = [run_variant(variant, args) for variant in VARIANTS]
    print(f"store memory: {args.sessions} sessions, {args.updates} updates, {TABLES} tables x {args.partitions} partitions")
    print_table(trials)
    report = {"benchmark": "store_memory", "started": stamp, "command": " ".join(sys.argv), "machine": machine(),
              "source": source_state("runtime"), "config": vars(args), "trials": trials}
    print(f"wrote {write_report('store_memory', stamp, report).relative_to(REPO)}")
    return 0 if all(not t["error"] for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
