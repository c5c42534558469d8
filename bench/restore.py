"""Restore benchmark: time for a fresh router worker to restore N sessions from its table
changelog, against a bare confluent-kafka read of the same changelog.

    python -m bench.restore [--sessions 10000,100000] [--turns 2] [--quick] [--profile]

Per size N, under a fresh topic prefix:

1. N session records are produced to the changelog of the router's ``sessions`` table
   exactly as the table writes them: key = session id, value = the table's JSON encoding
   (``Table.encode_value``) of an idle session's record (router/session_gate.py: no task
   open or waiting) whose memory holds ``--turns`` turns (the topology's
   ``sessions.remember_turns`` keeps up to 10), partition = the session's partition (our
   producer's murmur2 partitioner, as the app's input topic uses). Sessions moved from the
   specialists to the router (session_memory.py); this benchmark followed.
2. Baseline: a group-less confluent-kafka reader (``clients.reader_config``, the settings
   the restore uses) assigns every partition at offset 0 and consumes to the end
   (partition EOF), batch by batch, keeping nothing. Run before and after the worker.
3. A fresh ``agentstream worker router`` with an empty state dir:
   from process start to its ``assigned`` line (start-up, group join, restore, resume
   hooks), and the restore alone from its ``restored <topic>[p] ... in S s`` lines. The
   restored stores are counted afterwards (every session must be there).
4. The same worker restarted on the state it left (nothing to restore): the fixed cost.

Ratio = restore seconds ÷ raw read seconds: what applying the records to RocksDB adds.
``--profile`` attaches ``py-spy record --gil`` to the worker of the largest size.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from agentstream.clients import producer_config, reader_config
from agentstream.router.session_gate import new_record
from agentstream.session_memory import turn_from_result
from agentstream.runtime.store import PartitionStore
from agentstream.runtime.table import Table
from agentstream.settings import STATE_DIR_ENV
from bench._procs import OUT_DIR, REPO, AgentStack, Proc, broker, machine, source_state, write_report
from bench.relay import add_broker_argument, broker_kind, start_profiler, stop_profiler, summarize_profile, wait_for_quiet

AGENT = "router"
TABLE = "sessions"
BILLING = "billing"  # the specialist the remembered tasks went to


@dataclass
class RawRead:
    seconds: float
    records: int
    bytes: int


@dataclass
class SizeResult:
    sessions: int
    turns: int
    value_bytes_mean: float = 0.0
    changelog_mb: float = 0.0
    produce_s: float = 0.0
    raw: list[RawRead] = field(default_factory=list)
    start_to_consuming_s: float = float("nan")  # process start → "consuming ... as group" (imports, clients)
    start_to_assigned_s: float = float("nan")  # → "assigned" (join + restore + resume hooks)
    restore_s: float = float("nan")  # from the "restored ... in S s" lines
    restored_records: int = 0
    restored_keys: int = 0
    warm_start_to_assigned_s: float = float("nan")
    ratio_restore_over_raw: float = float("nan")
    restore_records_per_s: float = float("nan")
    raw_records_per_s: float = float("nan")
    error: str | None = None


def session_value(table: Table, i: int, run: str, turns: int) -> bytes:
    """An idle session's record in the router's table, remembering ``turns`` finished tasks."""
    memory = [
        turn_from_result(
            f"Please check invoice INV-{1000 + (i + turn) % 4} for me (ticket {i}, turn {turn})",
            {"task_id": f"t-{run}-{i}-{turn}", "status": "COMPLETED", "agents": [BILLING],
             "output": ("[scripted model] Reply to: \"Please check invoice for me\"\n"
                        f"- According to lookup_invoice: invoice_id=INV-{1000 + (i + turn) % 4}, status=paid, "
                        "amount_eur=129.0, due_date=2026-10-01, customer=ACME GmbH\n- According to search_kb: "
                        "KB-12 \"Invoices and receipts\": Download invoices from the billing page; corrections "
                        "take 3 business days.")},
        )
        for turn in range(turns)
    ]
    return table.encode_value({**new_record(), "turns": memory, "at": int(time.time() * 1000)})


def produce_sessions(bootstrap: str, topic: str, count: int, turns: int) -> tuple[float, int]:
    table = Table(TABLE, topic)
    run = uuid.uuid4().hex[:6]
    producer = Producer(producer_config(bootstrap, {"linger.ms": 20, "batch.size": 1_000_000}))
    total = 0
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for i in range(count):
        value = session_value(table, i, run, turns)
        total += len(value)
        while True:
            try:
                producer.produce(topic, value, f"s-{run}-{i}", on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(120) or errors:
        raise RuntimeError(f"producing the changelog failed: {errors[:3]}")
    return total / count, total


def raw_read(bootstrap: str, topic: str, partitions: int) -> RawRead:
    """Consume every partition from 0 to its end (EOF from the fetch high watermark), as the restore does."""
    reader = Consumer(reader_config(bootstrap, {"group.id": f"bench-restore-{uuid.uuid4().hex[:6]}"}))
    started = time.monotonic()
    reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    open_partitions = set(range(partitions))
    records = size = 0
    try:
        while open_partitions:
            if time.monotonic() - started > 300:
                raise TimeoutError(f"raw read of {topic} did not reach the end within 300 s")
            first = reader.poll(0.2)
            for msg in [first, *reader.consume(2000, 0)] if first is not None else []:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(msg.partition())
                    continue
                records += 1
                size += len(msg.value() or b"") + len(msg.key() or b"")
        seconds = time.monotonic() - started
    finally:
        reader.close()
    return RawRead(round(seconds, 3), records, size)


_RESTORED = re.compile(r"restored (\S+)\[(\d+)\] from offset (\d+): (\d+) records in ([\d.]+) s")


def start_worker(stack: AgentStack, state_dir: Path, name: str) -> Proc:
    return Proc(name, ["-m", "agentstream", "worker", AGENT],
                {**stack.env, STATE_DIR_ENV: str(state_dir)}, stack.base / f"{name}.log")


def count_keys(state_dir: Path, stack: AgentStack) -> int:
    base = state_dir / AGENT / stack.topology.group(AGENT) / TABLE
    keys = 0
    for partition_dir in sorted(base.iterdir()) if base.exists() else []:
        store = PartitionStore(partition_dir)
        try:
            keys += sum(1 for _ in store.items())
        finally:
            store.close()
    return keys


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def run_size(bootstrap: str, sessions: int, turns: int, profile_to: Path | None) -> SizeResult:
    result = SizeResult(sessions, turns)
    base = Path(tempfile.mkdtemp(prefix=f"restore-{sessions}-"))
    stack = AgentStack(bootstrap, base)
    topic = stack.topology.changelog_topic(AGENT, TABLE)
    partitions = stack.topology.topic_spec(stack.topology.agent(AGENT).input).partitions
    worker: Proc | None = None
    spy = None
    try:
        started = time.monotonic()
        result.value_bytes_mean, total = produce_sessions(bootstrap, topic, sessions, turns)
        result.produce_s = round(time.monotonic() - started, 2)
        result.changelog_mb = round(total / 2**20, 1)
        result.raw.append(raw_read(bootstrap, topic, partitions))
        state = base / "fresh"
        worker = start_worker(stack, state, "fresh")
        if profile_to is not None:
            spy = start_profiler(worker.pid, profile_to)
        consuming_at, _ = worker.wait_for_line(r": consuming ", 120)
        assigned_at, _ = worker.wait_for_line(r": assigned ", 600)
        result.start_to_consuming_s = round(consuming_at - worker.started, 3)
        result.start_to_assigned_s = round(assigned_at - worker.started, 3)
        if spy is not None:
            stop_profiler(spy)
            spy = None
        code = worker.stop(60)
        if code != 0:
            raise RuntimeError(f"the worker exited {code}:\n{worker.tail()}")
        # Read once the worker is gone: with KIP-848 a partition may come in a later
        # assignment than the first "assigned" line, and be restored after it.
        restored = [m for _, line in worker.matching(r" restored ") if (m := _RESTORED.search(line)) and m.group(1) == topic]
        result.restored_records = sum(int(m.group(4)) for m in restored)
        result.restore_s = max((float(m.group(5)) for m in restored), default=float("nan"))
        result.restored_keys = count_keys(state, stack)
        warm = start_worker(stack, state, "warm")
        warm_at, _ = warm.wait_for_line(r": assigned ", 120)
        result.warm_start_to_assigned_s = round(warm_at - warm.started, 3)
        warm.stop(60)
        result.raw.append(raw_read(bootstrap, topic, partitions))
        raw_s = statistics.median(r.seconds for r in result.raw)
        # A small restore logs 0.00 s (two decimals): no rate then, rather than a crash.
        result.ratio_restore_over_raw = _ratio(result.restore_s, raw_s)
        result.restore_records_per_s = _ratio(result.restored_records, result.restore_s)
        result.raw_records_per_s = _ratio(result.raw[0].records, raw_s)
        if result.restored_keys != sessions:
            result.error = f"{result.restored_keys} of {sessions} sessions in the restored stores"
    except (TimeoutError, RuntimeError) as exc:
        result.error = str(exc)
    finally:
        if spy is not None:
            stop_profiler(spy)
        if worker is not None and worker.proc.poll() is None:
            worker.stop(30)
        stack.delete_topics()
        shutil.rmtree(base, ignore_errors=True)
    return result


def print_table(results: list[SizeResult]) -> None:
    print(f"\n{'sessions':>9}{'MB':>7}{'raw read s':>12}{'raw rec/s':>11}{'restore s':>11}{'restore rec/s':>15}{'ratio':>7}"
          f"{'start→assigned s':>18}{'of which start-up':>19}{'warm restart s':>16}")
    for r in results:
        if r.error and not r.raw:
            print(f"{r.sessions:>9} ERROR {r.error.splitlines()[0]}")
            continue
        raw = "/".join(f"{x.seconds:.2f}" for x in r.raw)
        print(f"{r.sessions:>9,}{r.changelog_mb:>7.1f}{raw:>12}{r.raw_records_per_s:>11,.0f}{r.restore_s:>11.2f}"
              f"{r.restore_records_per_s:>15,.0f}{r.ratio_restore_over_raw:>7.2f}{r.start_to_assigned_s:>18.2f}"
              f"{r.start_to_consuming_s:>19.2f}{r.warm_start_to_assigned_s:>16.2f}"
              + (f"  ERROR {r.error}" if r.error else ""))
    print("(raw read: bare confluent-kafka consume to EOF of the same changelog, before/after the worker; restore s: the\n"
          " worker's own 'restored ... in S s'; start→assigned: process start to its 'assigned' line; start-up: to its\n"
          " 'consuming' line; warm restart: the same state dir again, nothing to restore)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restore", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="10000,100000", help="sizes to restore (default 10000,100000)")
    parser.add_argument("--turns", type=int, default=2, help="history turns per session record (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1000,10000 sessions")
    parser.add_argument("--profile", action="store_true", help="py-spy --gil on the worker restoring the largest size")
    parser.add_argument("--quiet-wait", type=float, default=15.0)
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sessions.split(",")]
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    results: list[SizeResult] = []
    profile: dict[str, Any] | None = None
    with broker(args.broker) as (bootstrap, _, broker_name):
        print(f"restore bench: sessions {sizes}, {args.turns} turns each; broker {broker_name}; "
              f"{host['nproc']} x {host['cpu_model']}")
        for size in sizes:
            wait_for_quiet(args.quiet_wait)
            profile_to = OUT_DIR / f"restore-{stamp}-profile-{size}.txt" if args.profile and size == max(sizes) else None
            if profile_to is not None:
                OUT_DIR.mkdir(parents=True, exist_ok=True)
            r = run_size(bootstrap, size, args.turns, profile_to)
            results.append(r)
            print(f"  {size:,} sessions: " + (r.error or f"restore {r.restore_s:.2f} s, raw read "
                  f"{statistics.median(x.seconds for x in r.raw):.2f} s, start→assigned {r.start_to_assigned_s:.2f} s"), flush=True)
            if profile_to is not None and profile_to.exists():
                profile = {"file": str(profile_to.relative_to(REPO)), "sessions": size, **summarize_profile(profile_to, top=25)}
    print_table(results)
    if profile is not None:
        total = profile["samples"] or 1
        print(f"\npy-spy --gil on the restoring worker ({profile['sessions']:,} sessions), {profile['samples']} samples:")
        for title in ("threads", "self", "inclusive"):
            print(f"  by {title}:")
            for name, count in profile[title][:12]:
                print(f"    {100 * count / total:5.1f}%  {name}")
    report = {
        "benchmark": "restore",
        "started": stamp,
        "command": "python -m bench.restore " + " ".join(argv),
        "machine": host,
        "source": source_state("runtime", "router"),
        "broker": broker_name,
        "broker_kind": broker_kind(broker_name),
        "config": {"sessions": sizes, "turns": args.turns, "table": TABLE, "agent": AGENT},
        "results": [asdict(r) for r in results],
        "profile": profile,
    }
    out = write_report("restore", stamp, report)
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0 if all(r.error is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
