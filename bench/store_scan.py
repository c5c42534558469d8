"""Store scan benchmark: a prefix scan among the tombstones finished runs leave, bounded at
the end of its prefix (the runtime's scan) against the same walk without the bound, in the
same run.

    python -m bench.store_scan [--runs 6000] [--scans 2000] [--open-every 0]

One store (runtime/store.py) lives through ``--runs`` specialist runs the way a checkpoints
table does: each run writes its head, three step records and, when it ends, a done marker
and the tombstones of its steps and head, each an acknowledged write of its own; with
``--open-every N`` one run in N stays open (its steps live: a run in flight or waiting for
a decision). Then the
steps of ``--scans`` of those runs are scanned (what the end of a run, the approval gate and
a resume read): ``bounded`` is ``PartitionStore.scan``; ``unbounded`` is the same iterator
with the cache setting only, which walks on until it meets a live key past the prefix and so
steps over the tombstones of the later runs up to the next open one (all of them when none
is open: the worst case). Reported: CPU microseconds per scan, and the
keys each variant found (the open runs' steps: they must be the same). No broker.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench._procs import REPO, machine, source_state, write_report

STEPS = 3
VALUE = b"x" * 700  # about a model step's checkpoint record


def live_through_runs(store: Any, runs: int, open_every: int) -> None:
    """Each run's records written and then tombstoned, as the specialist does."""
    offset = 0
    for number in range(runs):
        run = f"billing-{number:07d}"
        steps = [f"s/{run}/{step:04d}".encode() for step in range(STEPS)]
        for key in [f"h/{run}".encode(), *steps]:
            offset += 1
            store.put_all_durable([(key, VALUE)], offset)
        if open_every and number % open_every == open_every - 1:
            continue  # still open
        offset += 1
        ends = [(f"d/{run}".encode(), b"1"), *((key, None) for key in steps), (f"h/{run}".encode(), None)]
        store.put_all_durable(ends, offset)


def unbounded_scan(store: Any) -> Callable[[bytes], Iterable[tuple[bytes, bytes]]]:
    """The scan as it was before the bound: only the prefix check in Python stops it."""
    from rocksdict import ReadOptions

    options = ReadOptions()
    options.fill_cache(False)

    def scan(prefix: bytes) -> Iterable[tuple[bytes, bytes]]:
        for key, value in store._db.items(from_key=prefix, read_opt=options):
            raw = bytes(key)
            if not raw.startswith(prefix):
                break
            yield raw, bytes(value)

    return scan


def time_scans(scan: Callable[[bytes], Iterable[tuple[bytes, bytes]]], prefixes: list[bytes]) -> tuple[float, int]:
    """CPU µs per scan, and how many keys the scans yielded in all."""
    found = 0
    started = time.process_time()
    for prefix in prefixes:
        found += sum(1 for _ in scan(prefix))
    return (time.process_time() - started) / len(prefixes) * 1e6, found


def run(runs: int, scans: int, open_every: int) -> dict[str, Any]:
    from agentstream.runtime.store import PartitionStore

    with tempfile.TemporaryDirectory(prefix="store-scan-") as root:
        store = PartitionStore(Path(root) / "p0")
        try:
            live_through_runs(store, runs, open_every)
            prefixes = [f"s/billing-{number:07d}/".encode() for number in range(min(scans, runs))]
            variants = {"bounded": store.scan, "unbounded": unbounded_scan(store)}
            trials = []
            for name, scan in variants.items():
                us_per_scan, found = time_scans(scan, prefixes)
                trials.append({"variant": name, "us_per_scan": us_per_scan, "keys_found": found})
            files = store._db.property_value("rocksdb.num-files-at-level0")
        finally:
            store.close()
    finished = runs - (runs // open_every if open_every else 0)
    return {"runs": runs, "open_every": open_every, "scans": len(prefixes), "tombstones": finished * (STEPS + 1), "level0_files": files,
            "trials": trials}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6000, help="runs the store lives through (default 6000)")
    parser.add_argument("--scans", type=int, default=2000, help="runs whose steps are scanned (default 2000)")
    parser.add_argument("--open-every", type=int, default=0,
                        help="one run in this many stays open (default 0: every run ends, the worst case)")
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    result = run(args.runs, args.scans, args.open_every)
    print(f"store scan: {result['scans']} scans of one run's steps, {result['tombstones']} tombstones in the store")
    for trial in result["trials"]:
        print(f"  {trial['variant']:10s} {trial['us_per_scan']:8.1f} µs CPU per scan  ({trial['keys_found']} keys found)")
    report = {"benchmark": "store_scan", "started": stamp, "command": " ".join(sys.argv), "machine": machine(),
              "source": source_state("runtime"), "config": vars(args), "result": result}
    print(f"wrote {write_report('store_scan', stamp, report).relative_to(REPO)}")
    found = {trial["keys_found"] for trial in result["trials"]}
    return 0 if len(found) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
