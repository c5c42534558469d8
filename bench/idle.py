"""Idle cost of the demo's five workers, and what the consumers' fetch wait costs and buys.

Issue 18: with `agentstream dev` doing nothing, the broker used about a quarter of a core,
because every group member polled with a 20-ms fetch wait. For each broker (Apache Kafka and
the embedded Tansu) and each fetch wait (the old 20 ms beside the default the workers now
pick, ``broker.fetch_wait_for``), in the same run:

- **idle CPU**: the router, the three specialists and the supervisor of the support desk
  started with ``AGENTSTREAM_FETCH_WAIT_MS``, assigned, one task through them, and settled
  (past the quiet spell after which a worker pauses its inputs where the wait is short:
  runtime/idle_partitions.py), then the broker's and the workers' CPU over a window with no
  task (in cores);
- **a task after the idle window**: one billing task submitted, submitted → its TaskResult
  in ms (the first after a quiet spell waits for each worker's check of its paused inputs),
  then one more right after it (its inputs fetched again);
- **fetches /s**: one group member built by ``clients.consumer_config`` (what a worker's
  consumer is) on an idle 6-partition topic, counting its Fetch requests from librdkafka's
  statistics;
- **latency at low load**: the same member reading records produced one at a time at
  ``--rate`` per second: p50 and p95 from produce to consume, in ms (what a hop adds).

``python -m bench.idle [--broker kafka|tansu|both] [--window S] [--rate R] [--records N]``
prints a table; ``--smoke`` runs it at a tiny size (tests/unit cannot: this starts brokers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from agentstream.clients import KAFKA_FETCH_WAIT_MS, TANSU_FETCH_WAIT_MS, admin_config, consumer_config, producer_config
from agentstream.runtime.idle_partitions import CHECK_INTERVAL_S, quiet_pause_for
from agentstream.settings import FETCH_WAIT_ENV, QUIET_PAUSE_ENV
from bench._procs import REPO, AgentStack, TopicWatcher, billing_task, broker, machine, wait_until, write_report
from bench.relay import cpu_seconds

WORKERS = {"router": ("router", ""), "billing": ("specialist", "billing"), "technical": ("specialist", "technical"),
           "account": ("specialist", "account"), "supervisor": ("supervisor", "")}
SETTLE_S = 3.0  # after the warm-up task: its commits are behind us (and a quiet spell, where one applies)
TASK_TIMEOUT_S = 60.0
WATCHER_READY_S = 1.0
PROBE_PARTITIONS = 6
WARMUP_RECORDS = 5  # not counted: the member's first fetches of each partition find its position
RECORD_TIMEOUT_S = 30.0  # one record of the hop probe not read by then: the probe is broken, not slow


@dataclass
class Row:
    broker: str
    fetch_wait_ms: int  # 0: the broker alone, no client connected
    quiet_pause_s: float  # the workers' (0: their inputs are never paused; runtime/idle_partitions.py)
    broker_cores: float
    workers_cores: float
    fetches_per_s: float
    p50_ms: float
    p95_ms: float
    first_task_ms: float = float("nan")  # submitted -> TaskResult, the first task after the idle window
    next_task_ms: float = float("nan")  # ... and the one right after it


def idle_cores(bootstrap: str, broker_pid: int | None, wait_ms: int, quiet_s: float,
               window: float) -> tuple[float, float, float, float]:
    """(broker cores, the five workers' cores) over ``window`` seconds with nothing to do,
    then the ms from submit to result of the first task after it and of the next one."""
    env = {FETCH_WAIT_ENV: str(wait_ms), QUIET_PAUSE_ENV: str(quiet_s)}
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as directory:
        stack = AgentStack(bootstrap, Path(directory), call_log=False, env=env)
        run = uuid.uuid4().hex[:6]
        producer = stack.producer()  # an idle producer sends nothing: no fetches, no cost in the window
        try:
            for name, (kind, agent_type) in WORKERS.items():
                stack.start(name, kind, agent_type=agent_type or "billing")
            stack.wait_assigned()
            with results_watcher(stack) as watcher:  # stopped before the window: none of our readers fetches then
                task_round_trip(stack, watcher, producer, billing_task(0, run, f"warm-{run}"))  # every hop has run once
            # Settling: the window must not hold the restores, nor the quiet spell before a pause.
            time.sleep(SETTLE_S + quiet_s + 2 * CHECK_INTERVAL_S)
            pids = [w.proc.pid for w in stack.workers.values()]
            before_broker = cpu_seconds(broker_pid) if broker_pid else float("nan")
            before = sum(cpu_seconds(pid) for pid in pids)
            began = time.monotonic()
            time.sleep(window)  # the measured idle window
            elapsed = time.monotonic() - began
            workers = (sum(cpu_seconds(pid) for pid in pids) - before) / elapsed
            brokers = ((cpu_seconds(broker_pid) - before_broker) / elapsed) if broker_pid else float("nan")
            with results_watcher(stack) as watcher:
                first = task_round_trip(stack, watcher, producer, billing_task(1, run, f"s-{run}"))
                following = task_round_trip(stack, watcher, producer, billing_task(2, run, f"s-{run}"))
        finally:
            stack.stop_all()
    return round(brokers, 4), round(workers, 4), first, following


@contextmanager
def results_watcher(stack: AgentStack) -> Iterator[TopicWatcher]:
    """A reader of the results topic, given a second to connect and make its first fetch
    before a task is timed."""
    results = stack.topology.topic("results")
    watcher = TopicWatcher(stack.bootstrap, [results], stack.schemas, stack.topology.topic_spec("results").partitions)
    watcher.start()
    try:
        time.sleep(WATCHER_READY_S)  # its first fetch, which a task's time should not include
        yield watcher
    finally:
        watcher.stop()


def task_round_trip(stack: AgentStack, watcher: TopicWatcher, producer: Producer, task: dict[str, object]) -> float:
    """ms from submitting ``task`` (on ``producer``, connected before) to its TaskResult's arrival at ``watcher``."""
    sent = time.monotonic()
    stack.submit([task], producer)
    producer.flush(TASK_TIMEOUT_S)
    wait_until(lambda: any(r["task_id"] == task["task_id"] for _, r in watcher.of("TaskResult")), TASK_TIMEOUT_S,
               f"the TaskResult of {task['task_id']}")
    arrived = min(at for at, r in watcher.of("TaskResult") if r["task_id"] == task["task_id"])
    return round((arrived - sent) * 1000, 1)


@contextmanager
def probe_member(bootstrap: str, topic: str, wait_ms: int) -> Iterator[tuple[Consumer, list[int]]]:
    """A group member as a worker's (``consumer_config``), with librdkafka statistics each
    second; the list holds its cumulative Fetch request count at each report."""
    fetches: list[int] = []

    def on_stats(raw: str) -> None:
        brokers = json.loads(raw).get("brokers", {}).values()
        fetches.append(sum(int(b.get("req", {}).get("Fetch", 0)) for b in brokers if b.get("nodeid", -1) >= 0))

    config = consumer_config(bootstrap, f"bench-idle-{uuid.uuid4().hex[:8]}", fetch_wait_ms=wait_ms)
    consumer = Consumer({**config, "statistics.interval.ms": 1000, "stats_cb": on_stats})
    assigned: list[bool] = []
    consumer.subscribe([topic], on_assign=lambda c, parts: assigned.append(True))
    deadline = time.monotonic() + 60
    while not assigned:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the probe member got no partitions of {topic} within 60 s")
        consumer.poll(0.1)
    try:
        yield consumer, fetches
    finally:
        consumer.close()


def fetch_rate(consumer: Consumer, fetches: list[int], window: float) -> float:
    """Fetch requests per second of an idle member, between two statistics reports."""
    end = time.monotonic() + window + 2.5  # two reports around the window
    while time.monotonic() < end:
        consumer.poll(0.1)
    counted = fetches[-(int(window) + 1):]
    return round((counted[-1] - counted[0]) / max(1, len(counted) - 1), 1) if len(counted) > 1 else float("nan")


def hop_latency(bootstrap: str, consumer: Consumer, topic: str, records: int, rate: float) -> tuple[float, float]:
    """p50 and p95 (ms) from produce to consume, one record at a time at ``rate`` per second."""
    producer = Producer(producer_config(bootstrap))
    taken: list[float] = []
    for seq in range(records):
        sent = time.monotonic()
        producer.produce(topic, str(sent).encode(), f"k{seq}")
        producer.poll(0)
        deadline = sent + RECORD_TIMEOUT_S
        while True:  # this record, before the next one: a latency, not a queue
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error() and float(msg.value()) == sent:
                taken.append((time.monotonic() - sent) * 1000)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"record {seq} of the hop probe on {topic} was not read within {RECORD_TIMEOUT_S:.0f} s")
        time.sleep(max(0.0, 1 / rate - (time.monotonic() - sent)))  # pacing the offered load
    producer.flush(10)
    taken = taken[WARMUP_RECORDS:] if len(taken) > 2 * WARMUP_RECORDS else taken
    cuts = statistics.quantiles(taken, n=20)
    return round(statistics.median(taken), 1), round(cuts[18], 1)


def broker_floor(broker_pid: int | None, window: float) -> float:
    """The broker's own idle cores, with no client connected (its floor: a JVM's timers, Tansu's)."""
    if broker_pid is None:
        return float("nan")
    before, began = cpu_seconds(broker_pid), time.monotonic()
    time.sleep(window)  # the measured idle window
    return round((cpu_seconds(broker_pid) - before) / (time.monotonic() - began), 4)


# (fetch wait ms, the workers' quiet pause s: None by the wait, as a worker picks it)
Variant = tuple[int, float | None]


def measure(kind: str, variants: list[Variant], window: float, rate: float, records: int) -> list[Row]:
    rows = []
    with broker(kind) as (bootstrap, broker_pid, _description):
        floor = broker_floor(broker_pid, window)
        rows.append(Row(kind, 0, 0.0, floor, 0.0, 0.0, float("nan"), float("nan")))
        print(f"| {kind} | no client | - | {floor:.3f} | - | - | - | - | - | - |", flush=True)
        topic = f"bench.idle.{uuid.uuid4().hex[:8]}"
        admin = AdminClient(admin_config(bootstrap))  # kept: a dropped client fails its futures
        admin.create_topics([NewTopic(topic, PROBE_PARTITIONS, 1)])[topic].result(30)
        for wait_ms, setting in variants:
            quiet_s = quiet_pause_for(setting, wait_ms)
            broker_cores, workers_cores, first_ms, next_ms = idle_cores(bootstrap, broker_pid, wait_ms, quiet_s, window)
            with probe_member(bootstrap, topic, wait_ms) as (consumer, fetches):
                per_s = fetch_rate(consumer, fetches, window)
                p50, p95 = hop_latency(bootstrap, consumer, topic, records, rate)
            rows.append(Row(kind, wait_ms, quiet_s, broker_cores, workers_cores, per_s, p50, p95, first_ms, next_ms))
            print(_line(rows[-1]), flush=True)
    return rows


def variants_for(kind: str) -> list[Variant]:
    """The old 20 ms (Tansu's default) and Kafka's 500 ms on both brokers, with 100 ms between
    on Tansu: what a longer wait would cost there (broker.fetch_wait_for picks by broker); on
    both, 20 ms again with the quiet pause off, the baseline of that pause."""
    if kind == "kafka":  # 20 ms turns the quiet pause on there too: its baseline beside it
        return [(TANSU_FETCH_WAIT_MS, None), (TANSU_FETCH_WAIT_MS, 0.0), (KAFKA_FETCH_WAIT_MS, None)]
    return [(TANSU_FETCH_WAIT_MS, None), (TANSU_FETCH_WAIT_MS, 0.0), (100, None), (KAFKA_FETCH_WAIT_MS, None)]


# A tiny run: a short quiet spell, so the pause is reached without waiting the default's.
SMOKE_VARIANTS: list[Variant] = [(TANSU_FETCH_WAIT_MS, 1.0), (KAFKA_FETCH_WAIT_MS, None)]

HEADER = ("| broker | fetch wait ms | quiet pause s | broker cores idle | 5 workers cores idle | fetches /s (one member) "
          "| hop p50 ms | hop p95 ms | first task after idle ms | next task ms |")


def _line(row: Row) -> str:
    return (f"| {row.broker} | {row.fetch_wait_ms} | {row.quiet_pause_s:g} | {row.broker_cores:.3f} | {row.workers_cores:.3f} | "
            f"{row.fetches_per_s} | {row.p50_ms} | {row.p95_ms} | {row.first_task_ms} | {row.next_task_ms} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--broker", choices=("kafka", "tansu", "both"), default="both")
    parser.add_argument("--window", type=float, default=20.0, help="idle seconds measured (default 20)")
    parser.add_argument("--rate", type=float, default=20.0, help="records per second of the latency probe")
    parser.add_argument("--records", type=int, default=200, help="records of the latency probe (default 200)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run (3 s windows, 20 records, 20 ms with a 1 s quiet pause and 500 ms)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.window, args.records = 3.0, 20
    kinds = ["kafka", "tansu"] if args.broker == "both" else [args.broker]
    variants = (lambda kind: SMOKE_VARIANTS) if args.smoke else variants_for
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|---|---|")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    rows = [row for kind in kinds for row in measure(kind, variants(kind), args.window, args.rate, args.records)]
    report = {"machine": machine(), "window_s": args.window, "rate": args.rate, "records": args.records,
              "rows": [asdict(row) for row in rows]}
    out = write_report("idle", stamp, report)
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
