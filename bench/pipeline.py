"""Pipeline benchmark: tasks/s and added latency per hop through router → specialist → supervisor,
against the same three hops as a raw confluent-kafka relay and as a faust-streaming relay, in one run.

    python -m bench.pipeline [--quick] [--seconds 4] [--levels 100,200,...] [--variants pipeline,raw,faust]
                             [--profile billing,router,supervisor] [--broker kafka|tansu] [--at-once TASKS]
                             [--partitions N (with --variants pipeline only)] [--no-requests]
                             [--broker-warm-up TASKS] [--paced-warm-up SECONDS]

Variants (each with four 6-partition topics: source → after hop 1 → after hop 2 → sink;
``--partitions N`` gives the pipeline's topics N, and then runs the pipeline alone):

- ``pipeline``: the real services, one process each, as in production (``agentstream worker
  router``, ``... specialist --type billing``, ``... supervisor``) under a fresh topology prefix.
  Every task is a billing ticket (``"Please check invoice INV-100k for me"``, ``requested_agent=
  "billing"``) answered by the zero-latency ScriptedModel: two model calls and two tool calls
  (lookup_invoice, search_kb), every step checkpointed, as a real billing task would be. Stages: TaskSubmitted on
  ``tasks``, RoutedTask on ``specialist.billing``, SpecialistResult on ``supervisor``,
  TaskResult on ``results``.
- ``raw``: three plain confluent-kafka consume → produce processes (the clients.py settings,
  flush + commit every second, like bench.relay's raw hop). Each hop writes a record of the
  size the pipeline writes at that stage (sizes measured from the pipeline's warm-up records
  when it runs first), so the relay moves the same bytes over the same partitions.
- ``faust``: one faust-streaming app with three agents relaying the same way (memory store,
  ``broker_session_timeout=6.0``, ``topic_disable_leader=True``, ``web_enabled=False``), run as
  ``--faust-workers`` worker processes (default 1: faust's unit of deployment is the app).

Load: the offered rate is swept (``--levels``, each level ``--seconds`` long, at least 400 tasks,
and at least 8 x the variant's p95 latency at its first level: faust's batched fetches swing its
latency by a second, which would skew the rate of a short level), tasks paced about every
millisecond over 1000 session keys. A variant's sweep stops at its first saturated level:
fewer than 90 % of the offered rate achieved (a backlog builds up and latency
grows without bound), or not all tasks through within the drain time. A saturated level
whose backlog drained is tried once more and counts only if it saturates again (the machines are
shared: a burst of other jobs should not end a sweep). A variant that never saturates gets one
more level with everything produced at once, which measures its ceiling.

Measurements, by a group-less reader in this process:
- throughput (achieved): 1 / the slope of sink arrival time over submission order (least squares):
  the offered rate while a variant keeps up, its drain rate once a backlog builds (all at once or
  not all through: tasks received / (last arrival - first submit));
- end-to-end latency: arrival at the sink minus the submit time;
- added latency per hop, from Kafka record timestamps (CreateTime, set by the producing client,
  ms resolution): hop k = timestamp of the task's record on stage k minus that on stage k-1. The
  reader reads all of the sink but only partition 0 of the three earlier stages: every topic is
  keyed by session (co-partitioned), so that is every chain of 1/6 of the sessions at a sixth of
  the reading cost (1/N with ``--partitions N``);
- pipeline only: the timestamps inside the events (routed_at, started_at, finished_at,
  completed_at) split the specialist and supervisor hops into their phases.
CPU seconds per worker (and per thread), broker, this process and everything else on the machine
are recorded per level with bench.relay's meter. Pipeline only: the requests each worker's Kafka
clients sent per task in a level, by type (``agentstream_kafka_requests_total``, from librdkafka's
statistics every ``REQUEST_STATS_S``: each worker serves its metrics on a port of its own),
counted from the level's start to ``REQUEST_SETTLE_S`` after its end, so that the statistics
of its last second are in (bench/RESULTS.md "Session 46"): Fetch and other include the idle
requests of those ~2 s. ``--no-requests`` runs the workers as before session 46 (no metrics
port, no statistics, no pause after a level), for comparisons with older runs. The report's
``config`` names the workers' settings taken from the environment (``AGENTSTREAM_LINGER_MS``, ...).

Before the measured levels, not measured: ``--broker-warm-up`` tasks at once, then
``--paced-warm-up`` seconds at the first level's rate (20 by default since session 46): a
paced load sets off compiling in a JVM broker that the burst did not, which ran in the first
measured level before (the broker's CPU by kind of thread, printed per level, shows it).

The broker is bench.relay's: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else ``--broker kafka`` (Apache
Kafka 4, one KRaft node; the default where ``java`` and ``mvn`` exist) or ``--broker tansu``
started here, and named in the output, the JSON and the plot's title.

Results: a table on stdout, ``bench/out/pipeline-<timestamp>.json`` and ``.png`` (throughput and
latency against the offered load). ``--profile WORKERS`` adds one unmeasured pipeline level at the
saturating rate (``--profile-rate``: at that rate) with ``py-spy record --gil`` attached to each named
worker.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from agentstream.broker import BOOTSTRAP_ENV, free_port
from agentstream.client import new_task
from agentstream.clients import admin_config, consumer_config, producer_config, reader_config
from agentstream.errors import AgentStreamError
from agentstream.events import ROUTED_TASK, SPECIALIST_RESULT, TASK_RESULT, TASK_SUBMITTED
from agentstream.runtime.errors import ProcessorError
from agentstream.runtime.lag import end_offsets
from agentstream.serde import SchemaSet
from agentstream.settings import (
    COMMIT_INTERVAL_ENV,
    FETCH_WAIT_ENV,
    GROUP_PROTOCOL_ENV,
    KAFKA_STATS_ENV,
    LINGER_ENV,
    LOG_LEVEL_ENV,
    MAX_INFLIGHT_ENV,
    METRICS_PORT_ENV,
    QUIET_PAUSE_ENV,
    MODEL_ENV,
    PREFIX_ENV,
    SCRIPTED_CALL_LOG_ENV,
    SCRIPTED_FAILURE_RATE_ENV,
    SCRIPTED_LATENCY_ENV,
    STATE_DIR_ENV,
    TOPOLOGY_ENV,
)
from agentstream.stack import Stack
from agentstream.topology import APP_TOPOLOGY_FILE, DEFAULT_APP, load_topology
from agentstream.topology_admin import apply
from bench._worker_metrics import KAFKA_REQUESTS, requests_per_task, scrape_counter
from bench.relay import (
    OUT_DIR,
    PARTITIONS,
    REPO,
    SESSION_KEYS,
    CpuMeter,
    Hop,
    add_broker_argument,
    broker,
    broker_kind,
    create_topics,
    delete_topics,
    machine,
    percentile,
    runtime_source,
    start_profiler,
    stop_profiler,
    summarize_profile,
    jit_compiler_seconds,
    wait_for_quiet,
    wait_while_running,
)

VARIANTS = ("pipeline", "raw", "faust")
AGENT_TYPE = "billing"
PIPELINE_WORKERS = ("router", AGENT_TYPE, "supervisor")
HOPS = {"pipeline": PIPELINE_WORKERS, "raw": ("hop1", "hop2", "hop3"), "faust": ("agent1", "agent2", "agent3")}
TEXTS = tuple(f"Please check invoice INV-100{k} for me" for k in range(1, 5))
TENANT = "bench"
SAMPLE_PARTITION = 0  # the earlier stages are read on this partition only
DEFAULT_LEVELS = (100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10_000, 15_000, 20_000, 30_000, 50_000)
QUICK_LEVELS = (100, 1000, 10_000)
WARMUP_TASKS = 60  # sessions spread over every partition (murmur2 of 60 keys misses none in practice)
# Tasks produced at once before the measured levels (--broker-warm-up), not measured. A broker
# started by the run is cold: Apache Kafka's JVM compiles its hot paths while the first levels
# run, and four levels of 1,500 tasks at 150/s on one fresh broker cost it 10.9, 9.8, 7.5 and
# 6.4 CPU-s, with the hop latencies falling in step (billing p50 150 -> 63 ms). 12,000 tasks
# also give each of the SESSION_KEYS sessions the 10 turns of memory a long-lived session
# carries (topology sessions.remember_turns), which the workers' CPU per task grows with.
BROKER_WARMUP_TASKS = 12_000
BROKER_WARMUP_LEVEL = 9999  # its tasks' level number: apart from every measured level
PACED_WARMUP_LEVEL = 9998  # --paced-warm-up's
# Seconds at the first level's rate before it, not measured (--paced-warm-up): with none, the
# broker's JIT compilers took 1.0-1.9 CPU-s of a 250 tasks/s level; after 20 s of it, 0.09-0.30
# (bench/RESULTS.md "Session 46").
PACED_WARMUP_S = 20.0
SATURATED_SHARE = 0.9  # achieved below this share of the offered rate: saturated
BURST_MAX_TASKS = 300_000
MIN_LEVEL_TASKS = 400  # low levels last longer, so that partition 0 yields ~65 sampled chains
QUICK_MIN_TASKS = 100
LEVEL_STRETCH = 8.0  # a level lasts at least this many times the variant's p95 latency at its first level
MAX_LEVEL_SECONDS = 20.0
IDLE_SECONDS = 3.0
# The pipeline's workers count their Kafka clients' requests from librdkafka's statistics,
# every this many seconds; a level's count is read this long after its end.
REQUEST_STATS_S = 1
REQUEST_SETTLE_S = 1.5 * REQUEST_STATS_S
# The workers' settings a run may take from the environment, written into its report.
WORKER_ENV = (LINGER_ENV, FETCH_WAIT_ENV, QUIET_PAUSE_ENV, COMMIT_INTERVAL_ENV, MAX_INFLIGHT_ENV, GROUP_PROTOCOL_ENV,
              KAFKA_STATS_ENV)
# Avro sizes of TaskSubmitted, RoutedTask, SpecialistResult, TaskResult of a billing ticket
# (measured 2026-11-22); used only when the pipeline variant does not run first to measure them.
FALLBACK_SIZES = (88, 110, 958, 964)

# Relay (raw, faust) values: kind, level, sequence number, then padding to the stage's size.
_RELAY_HEADER = struct.Struct("<BHI")
EVENT, WARMUP = 1, 2
_SESSION_KEYS = [f"session-{k:04d}" for k in range(SESSION_KEYS)]

Ident = Callable[[bytes], "tuple[int, int] | None"]  # value -> (level, seq); None for warm-up


# -- what a task looks like on the wire ----------------------------------------------------
def pipeline_task_id(level: int, seq: int) -> str:
    return f"L{level}-{seq}"


def avro_task_id(value: bytes) -> bytes:
    """The first field of every event schema, ``task_id``, read straight from the single-object
    encoding (10 header bytes, then a zigzag varint length and UTF-8) without a full decode."""
    pos, shift, raw = 10, 0, 0
    while True:
        byte = value[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    length = (raw >> 1) ^ -(raw & 1)
    return value[pos : pos + length]


def pipeline_ident(value: bytes) -> tuple[int, int] | None:
    task_id = avro_task_id(value)
    if not task_id.startswith(b"L"):
        return None  # a warm-up task
    level, _, seq = task_id[1:].partition(b"-")
    return int(level), int(seq)


def relay_ident(value: bytes) -> tuple[int, int] | None:
    kind, level, seq = _RELAY_HEADER.unpack_from(value)
    return (level, seq) if kind == EVENT else None


def relay_value(kind: int, level: int, seq: int, size: int) -> bytes:
    return _RELAY_HEADER.pack(kind, level, seq) + b"x" * max(0, size - _RELAY_HEADER.size)


# -- the raw hop and the faust app (run as child processes) ----------------------------------
def run_raw_hop(bootstrap: str, src: str, dst: str, group: str, size: int, commit_interval: float = 1.0) -> dict[str, Any]:
    """bench.relay's raw hop, except that each record leaves with the size the pipeline writes
    at this stage (header kept, padding swapped): same loop, settings and commit order."""
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    head = _RELAY_HEADER.size
    padding = b"x" * max(0, size - head)
    consumer = Consumer(consumer_config(bootstrap, group))
    producer = Producer(producer_config(bootstrap))
    consumer.subscribe([src])
    relayed = commits = 0
    uncommitted = False

    def checkpoint() -> None:
        nonlocal commits, uncommitted
        if producer.flush(30):
            raise RuntimeError(f"records of {dst} unacknowledged after 30 s")
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if positions:
            consumer.commit(offsets=positions, asynchronous=False)
            commits += 1
        uncommitted = False

    next_checkpoint = time.monotonic() + commit_interval
    try:
        while not stopping:
            first = consumer.poll(0.1)
            batch = [first, *consumer.consume(499, 0)] if first is not None else []
            for msg in batch:
                if msg.error() is not None:
                    continue
                value = (msg.value() or b"")[:head] + padding
                while True:
                    try:
                        producer.produce(dst, value, msg.key())
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


def run_faust_app(bootstrap: str, topics: list[str], sizes: list[int], app_id: str, datadir: str) -> dict[str, Any]:
    """One faust app, three agents: agent k relays stage k-1 to stage k, resized like the raw hop."""
    import faust
    from faust.worker import Worker as FaustWorker

    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=datadir,
        topic_partitions=PARTITIONS,
        topic_allow_declare=False,  # the bench creates the topics
        topic_disable_leader=True,
        web_enabled=False,
        broker_session_timeout=6.0,  # Tansu joins a group in half the session timeout
        broker_heartbeat_interval=1.5,
        consumer_auto_offset_reset="earliest",
    )
    channels = [app.topic(t, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw") for t in topics]
    relayed = [0] * (len(topics) - 1)
    head = _RELAY_HEADER.size

    def relay_agent(index: int) -> None:
        dst, padding = channels[index + 1], b"x" * max(0, sizes[index] - head)

        async def relay(stream: Any) -> None:
            async for key, value in stream.items():
                await dst.send(key=key, value=value[:head] + padding)
                relayed[index] += 1

        app.agent(channels[index], name=f"{app_id}.agent{index + 1}")(relay)

    for index in range(len(relayed)):
        relay_agent(index)
    try:
        # The worker handles SIGTERM itself: it stops the agents and the consumer, then exits.
        FaustWorker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()
    except SystemExit:
        pass
    return {"processed": sum(relayed), "per_agent": relayed}


def child_main(kind: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.pipeline {kind}")
    parser.add_argument("--bootstrap", required=True)
    if kind == "hop":
        parser.add_argument("--src", required=True)
        parser.add_argument("--dst", required=True)
        parser.add_argument("--group", required=True)
        parser.add_argument("--size", type=int, required=True)
    else:
        parser.add_argument("--topics", required=True, help="the four stage topics, comma-separated")
        parser.add_argument("--sizes", required=True, help="record sizes of stages 2-4, comma-separated")
        parser.add_argument("--app-id", required=True)
        parser.add_argument("--datadir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if kind == "hop":
        stats = run_raw_hop(args.bootstrap, args.src, args.dst, args.group, args.size)
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        stats = run_faust_app(args.bootstrap, args.topics.split(","), sizes, args.app_id, args.datadir)
    # On a line of its own: faust's worker leaves terminal control codes on stdout.
    print("\nSTATS " + json.dumps(stats), flush=True)
    return 0


# -- worker processes ------------------------------------------------------------------------
class Worker(Hop):
    """A bench.relay Hop whose stats may also come from an agentstream worker's last log line."""

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        stats = super().stop(timeout)
        if "error" in stats:
            found = re.findall(r"exiting: (\d+) processed, (\d+) failed", self.log_tail(200))
            if found and self.proc.returncode == 0:
                return {"processed": int(found[-1][0]), "failed": int(found[-1][1])}
        return stats


def spawn(name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None) -> Worker:
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=REPO,
            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
        )
    return Worker(name, proc, log_path)


@dataclass
class Variant:
    name: str
    topics: list[str]  # source, after hop 1, after hop 2, sink
    workers: list[Worker]
    make: Callable[[int, int], tuple[bytes, bytes]]  # (level, seq) -> key, value; level 0 is warm-up
    ident: Ident
    details: Callable[[int, bytes], dict[str, int]] | None = None  # stage, value -> event timestamps
    cleanup: Callable[[], None] = lambda: None
    notes: dict[str, Any] = field(default_factory=dict)
    prefix: str = ""  # pipeline: every topic it wrote to starts with this
    sink_partitions: int = PARTITIONS  # partitions of the last topic, all of which the tap reads
    metrics_ports: dict[str, int] = field(default_factory=dict)  # pipeline: each worker's, by name


def app_with_partitions(work_dir: Path, partitions: int) -> Path:
    """A copy of the shipped app in ``work_dir`` whose topology's ``default_partitions`` is
    ``partitions`` (its tools, data and prompts are found next to its topology file)."""
    app = work_dir / "app"
    shutil.copytree(DEFAULT_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    topology_file = app / APP_TOPOLOGY_FILE
    text, found = re.subn(r"(?m)^default_partitions: *\d+", f"default_partitions: {partitions}",
                          topology_file.read_text())
    if found != 1:
        raise RuntimeError(f"{DEFAULT_APP / APP_TOPOLOGY_FILE} has no single 'default_partitions:' line to replace for "
                           f"--partitions; run without --partitions, or set it in the file")
    topology_file.write_text(text)
    return app


def listed_partitions(admin: AdminClient, topic: str, expected: int) -> int:
    """The partitions the broker lists for ``topic``, which must be the ``expected`` count."""
    listed = admin.list_topics(topic, timeout=30).topics[topic]
    count = len(listed.partitions)
    if listed.error is not None or count != expected:
        raise RuntimeError(f"{topic} has {count} partitions ({listed.error or 'no error'}), expected {expected} "
                           "from the topology just applied; check the broker's log for why it made the topic so")
    return count


def start_pipeline(bootstrap: str, work_dir: Path, schemas: SchemaSet, partitions: int | None = None,
                   count_requests: bool = True) -> Variant:
    """The shipped app's workers on topics of a new prefix; ``partitions``: its topics' count
    instead of the shipped topology's; ``count_requests``: each worker serves its metrics on
    a port of its own and counts its clients' requests."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    app = app_with_partitions(work_dir, partitions) if partitions is not None else None
    topology = load_topology(app, prefix=prefix)
    admin = AdminClient(admin_config(bootstrap))
    apply(admin, topology)
    topics = [topology.topic("tasks"), topology.specialist_topic(AGENT_TYPE), topology.topic("supervisor"),
              topology.topic("results")]
    sink_partitions = listed_partitions(admin, topics[-1], topology.topic_spec("results").partitions)
    env = {**os.environ, BOOTSTRAP_ENV: bootstrap, PREFIX_ENV: prefix, STATE_DIR_ENV: str(work_dir / "state")}
    for name in (SCRIPTED_LATENCY_ENV, SCRIPTED_CALL_LOG_ENV, SCRIPTED_FAILURE_RATE_ENV, MODEL_ENV, TOPOLOGY_ENV, LOG_LEVEL_ENV):
        env.pop(name, None)  # the shipped topology, the zero-latency ScriptedModel, INFO logs as in production
    if app is not None:
        env[TOPOLOGY_ENV] = str(app)
    commands = Stack(work_dir / "state", topology_path=app, prefix=prefix).worker_commands()
    ports = distinct_ports(PIPELINE_WORKERS) if count_requests else {}
    if not count_requests:  # as before session 46, whatever the caller's shell sets
        env.pop(KAFKA_STATS_ENV, None)
        env.pop(METRICS_PORT_ENV, None)
    counting = {name: {METRICS_PORT_ENV: str(port), KAFKA_STATS_ENV: str(REQUEST_STATS_S)} for name, port in ports.items()}
    workers = [spawn(name, commands[name], work_dir / f"{name}.log", {**env, **counting.get(name, {})})
               for name in PIPELINE_WORKERS]

    def make(level: int, seq: int) -> tuple[bytes, bytes]:
        session = _SESSION_KEYS[seq % SESSION_KEYS]
        task_id = pipeline_task_id(level, seq) if level else f"W-{seq}"
        task = new_task(TEXTS[seq % len(TEXTS)], session, TENANT, task_id=task_id, requested_agent=AGENT_TYPE)
        return session.encode(), schemas.encode(TASK_SUBMITTED, task)

    names = {1: ROUTED_TASK, 2: SPECIALIST_RESULT, 3: TASK_RESULT}
    fields = {1: ("routed_at",), 2: ("started_at", "finished_at"), 3: ("completed_at",)}

    def details(stage: int, value: bytes) -> dict[str, int]:
        if stage not in names:
            return {}
        record = schemas.decode_as(names[stage], value)
        return {name: record[name] for name in fields[stage]}

    def cleanup() -> None:
        admin = AdminClient(admin_config(bootstrap))
        delete_topics(admin, [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix + ".")])

    notes = {"prefix": prefix, "partitions": sink_partitions}  # as the broker lists them
    return Variant("pipeline", topics, workers, make, pipeline_ident, details, cleanup, notes, prefix, sink_partitions,
                   ports)


def distinct_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A free port for each name, no two alike (each is free when chosen; a worker binds it soon after)."""
    ports: set[int] = set()
    while len(ports) < len(names):
        ports.add(free_port())
    return dict(zip(names, sorted(ports)))


def records_per_task(bootstrap: str, variant: Variant) -> dict[str, float]:
    """Records the pipeline wrote to each of its topics per task that reached the results topic
    (the broker's work; read after the workers stopped)."""
    admin = AdminClient(admin_config(bootstrap))
    topics = sorted(t for t in admin.list_topics(timeout=30).topics if t.startswith(variant.prefix + "."))
    per_topic: dict[str, int] = {}
    for (topic, _), end in end_offsets(bootstrap, topics).items():
        name = topic.removeprefix(variant.prefix + ".")
        per_topic[name] = per_topic.get(name, 0) + end
    results = per_topic.get(variant.topics[-1].removeprefix(variant.prefix + "."), 0)
    if not results:
        return {}
    counts = {name: round(count / results, 2) for name, count in sorted(per_topic.items(), key=lambda kv: -kv[1]) if count}
    return {"all topics": round(sum(per_topic.values()) / results, 2), **counts}


def start_relay(kind: str, bootstrap: str, work_dir: Path, sizes: list[int], faust_workers: int) -> Variant:
    run = uuid.uuid4().hex[:6]
    topics = [f"bench.pipeline.{kind}{run}.stage{k}" for k in range(4)]
    admin = AdminClient(admin_config(bootstrap))
    create_topics(admin, topics, 1)
    python = [sys.executable, "-m", "bench.pipeline", kind, "--bootstrap", bootstrap]
    if kind == "hop":
        workers = [
            spawn(f"hop{k}", [*python, "--src", topics[k - 1], "--dst", topics[k], "--group", f"bench-pipeline-{run}-hop{k}",
                              "--size", str(sizes[k])], work_dir / f"hop{k}.log")
            for k in (1, 2, 3)
        ]
    else:
        app_id = f"bench-pipeline-faust-{run}"
        workers = [
            spawn(f"faust{w}", [*python, "--topics", ",".join(topics), "--sizes", ",".join(map(str, sizes[1:])),
                                "--app-id", app_id, "--datadir", str(work_dir / f"faust{w}")], work_dir / f"faust{w}.log")
            for w in range(1, faust_workers + 1)
        ]

    def make(level: int, seq: int) -> tuple[bytes, bytes]:
        return _SESSION_KEYS[seq % SESSION_KEYS].encode(), relay_value(EVENT if level else WARMUP, level, seq, sizes[0])

    def cleanup() -> None:
        delete_topics(admin, topics)

    name = "raw" if kind == "hop" else "faust"
    return Variant(name, topics, workers, make, relay_ident, None, cleanup, {"sizes": sizes})


# -- load and measurement --------------------------------------------------------------------
class Feeder(threading.Thread):
    """Produces ``tasks`` source records at ``rate`` per second (paced about every ms), or at once."""

    def __init__(self, producer: Producer, topic: str, make: Callable[[int, int], tuple[bytes, bytes]],
                 level: int, tasks: int, rate: float | None) -> None:
        super().__init__(name="feeder", daemon=True)
        self.producer, self.topic, self.make = producer, topic, make
        self.level, self.tasks, self.rate = level, tasks, rate
        self.sent_ns = [0] * tasks
        self.done = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._feed()
        except Exception as exc:  # reported by the level, which would otherwise just time out
            self.error = exc
        finally:
            self.done.set()

    def _feed(self) -> None:
        producer, topic, make, level, rate, sent = self.producer, self.topic, self.make, self.level, self.rate, self.sent_ns
        step = max(1, int(rate / 1000)) if rate else 1000
        began = time.monotonic()
        for seq in range(self.tasks):
            key, value = make(level, seq)
            sent[seq] = time.time_ns()
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            if seq % step == step - 1:
                producer.poll(0)
                if rate:
                    ahead = (seq + 1) / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        if producer.flush(60):
            raise RuntimeError(f"the feeder's records to {topic} were not all acknowledged within 60 s")


class LevelData:
    """What the tap saw of one level's tasks."""

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks
        self.arrival_ns = [0] * tasks
        self.received = 0
        self.duplicates = 0
        self.first_arrival_ns = 0
        self.last_arrival_ns = 0
        self.stamps: dict[int, list[int]] = {}  # seq -> CreateTime (ms) on each stage, sampled partition only
        self.details: dict[int, dict[str, int]] = {}


class Tap:
    """A group-less reader: all of the sink, and the sampled partition of the three earlier stages."""

    def __init__(self, bootstrap: str, variant: Variant) -> None:
        self.reader = Consumer(reader_config(bootstrap, {"enable.partition.eof": False}))
        self.stage_of = {topic: stage for stage, topic in enumerate(variant.topics)}
        self.sink = len(variant.topics) - 1
        self.ident, self.details = variant.ident, variant.details
        self.reader.assign(
            [TopicPartition(variant.topics[-1], p, 0) for p in range(variant.sink_partitions)]
            + [TopicPartition(t, SAMPLE_PARTITION, 0) for t in variant.topics[:-1]]
        )
        self.levels: dict[int, LevelData] = {}
        self.warmups = 0
        self.sizes: dict[int, list[int]] = {}  # stage -> sizes of the warm-up records seen there

    def expect(self, level: int, tasks: int) -> LevelData:
        self.levels[level] = LevelData(tasks)
        return self.levels[level]

    def drain(self, timeout: float) -> None:
        first = self.reader.poll(timeout)
        if first is None:
            return
        msgs = [first, *self.reader.consume(999, 0)]
        now = time.time_ns()
        for msg in msgs:
            if msg.error() is not None:
                raise RuntimeError(f"reading {msg.topic()} failed: {msg.error()}")
            self._record(msg, now)

    def _record(self, msg: Message, now: int) -> None:
        value = msg.value() or b""
        stage = self.stage_of[msg.topic()]
        ident = self.ident(value)
        if ident is None:
            if stage == self.sink:
                self.warmups += 1
            self.sizes.setdefault(stage, []).append(len(value))
            return
        level, seq = ident
        if level == BROKER_WARMUP_LEVEL:  # the relays copy these sizes: those of sessions with memory
            self.sizes.setdefault(stage, []).append(len(value))
        data = self.levels.get(level)
        if data is None:
            return
        if stage == self.sink:
            if data.arrival_ns[seq]:
                data.duplicates += 1
                return
            data.arrival_ns[seq] = now
            data.received += 1
            data.first_arrival_ns = data.first_arrival_ns or now
            data.last_arrival_ns = now
            if msg.partition() != SAMPLE_PARTITION:
                return
        stamps = data.stamps.setdefault(seq, [0, 0, 0, 0])
        if not stamps[stage]:
            stamps[stage] = msg.timestamp()[1]
            if self.details is not None:
                data.details.setdefault(seq, {}).update(self.details(stage, value))

    def close(self) -> None:
        self.reader.close()


@dataclass
class LevelResult:
    variant: str
    level: int
    offered_per_s: float | None  # None: everything produced at once
    tasks: int
    attempt: int = 1  # a saturated level is tried twice
    sent_per_s: float = 0.0
    received: int = 0
    duplicates: int = 0
    achieved_per_s: float = 0.0
    complete: bool = False
    saturated: bool = False
    why: str = ""
    e2e_ms: dict[str, float] = field(default_factory=dict)
    backlog_growth_ms: float = 0.0
    hops_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    phases_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    sampled_chains: int = 0
    window_s: float = 0.0  # the CPU meter's window: submitting and draining
    cpu_s: dict[str, float] = field(default_factory=dict)
    thread_cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)
    requests_per_task: dict[str, dict[str, float]] = field(default_factory=dict)  # pipeline: worker -> type -> requests
    error: str | None = None


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {name: round(float(percentile(ordered, q)), 2) for name, q in (("p50", .5), ("p95", .95), ("p99", .99), ("max", 1.))}


# The phases of the pipeline's specialist and supervisor hops, from the events' own timestamps
# (ms) and the records' CreateTime (stage index): (name, start, end).
PHASES = (
    ("billing: fetch + accept (head write-through) + session order", 1, "started_at"),
    ("billing: agent loop (2 model calls, 2 tool calls, 3 step checkpoints)", "started_at", "finished_at"),
    ("billing: result send", "finished_at", 2),
    ("supervisor: fetch + decide", 2, "completed_at"),
    ("supervisor: marker write-through + result send", "completed_at", 3),
)


def achieved_rate(data: LevelData, first_sent_ns: int, paced: bool) -> float:
    """Tasks/s out of the sink. Paced and complete: 1 / the slope of arrival time over submission
    order. Unlike received / (last - first arrival), the slope does not swing with the latency of
    the first and last few tasks (faust's batched fetches move those by a second); when a backlog
    builds up, arrivals fall behind the submissions and the slope is the drain rate. Everything
    at once, or not all through: received / (last arrival - first submit), as partitions then
    drain at their own pace and arrivals no longer follow submission order.
    """
    points = [(seq, arrival / 1e9) for seq, arrival in enumerate(data.arrival_ns) if arrival]
    if not paced or len(points) < max(10, data.tasks):
        span = (data.last_arrival_ns - first_sent_ns) / 1e9
        return len(points) / span if span > 0 else 0.0
    slope, _ = statistics.linear_regression([p[0] for p in points], [p[1] for p in points])
    return 1 / slope if slope > 0 else float("inf")


def summarize_level(result: LevelResult, data: LevelData, feeder: Feeder, hop_names: tuple[str, ...]) -> None:
    sent = feeder.sent_ns
    result.received, result.duplicates = data.received, data.duplicates
    result.complete = data.received >= data.tasks
    sent_span = (sent[-1] - sent[0]) / 1e9 if sent[-1] else 0.0
    result.sent_per_s = round(data.tasks / sent_span, 1) if sent_span > 0 else 0.0
    result.achieved_per_s = round(achieved_rate(data, sent[0], result.offered_per_s is not None), 1)
    latency = [(a - s) / 1e6 for a, s in zip(data.arrival_ns, sent) if a]  # in submission order
    result.e2e_ms = quantiles(latency)
    if len(latency) >= 20:
        fifth = len(latency) // 5
        result.backlog_growth_ms = round(statistics.median(latency[-fifth:]) - statistics.median(latency[:fifth]), 1)
    chains = [s for s in data.stamps.values() if all(s)]
    result.sampled_chains = len(chains)
    for k, name in enumerate(hop_names, 1):
        result.hops_ms[name] = quantiles([s[k] - s[k - 1] for s in chains])
    delivery = [data.arrival_ns[seq] / 1e6 - s[3] for seq, s in data.stamps.items() if all(s)]
    result.hops_ms["delivery to the reader"] = quantiles(delivery)
    if data.details:
        for name, start, end in PHASES:
            spans = []
            for seq, stamps in data.stamps.items():
                got = data.details.get(seq, {})
                a = stamps[start] if isinstance(start, int) else got.get(start, 0)
                b = stamps[end] if isinstance(end, int) else got.get(end, 0)
                if a and b:
                    spans.append(b - a)
            result.phases_ms[name] = quantiles(spans)
    offered = result.offered_per_s
    if not result.complete:
        result.saturated, result.why = True, f"{data.tasks - data.received} of {data.tasks} tasks not through in time"
    elif offered and result.achieved_per_s < SATURATED_SHARE * offered:
        result.saturated, result.why = True, f"achieved {result.achieved_per_s / offered:.0%} of the offered rate"


def run_level(variant: Variant, tap: Tap, producer: Producer, level: int, rate: float | None, tasks: int,
              drain_s: float, broker_pid: int | None) -> LevelResult:
    result = LevelResult(variant.name, level, rate, tasks)
    data = tap.expect(level, tasks)
    requests_before = worker_requests(variant, result)
    meter = CpuMeter(variant.workers, broker_pid)
    began = time.monotonic()
    feeder = Feeder(producer, variant.topics[0], variant.make, level, tasks, rate)
    feeder.start()
    try:
        wait_while_running(
            variant.workers, lambda: data.received >= tasks or feeder.error is not None,
            (tasks / rate if rate else tasks / 2000) + drain_s, lambda: tap.drain(0.02), f"level {level} at the sink",
        )
    except TimeoutError:
        pass  # incomplete: reported as saturated
    except RuntimeError as exc:
        result.error = str(exc)
    meter.read(result)
    result.window_s = round(time.monotonic() - began, 3)
    feeder.done.wait(60)
    if feeder.error is not None:
        result.error = f"feeder: {feeder.error}"
    name_workers(result, variant)
    summarize_level(result, data, feeder, HOPS[variant.name])
    if requests_before is not None and result.received:
        time.sleep(REQUEST_SETTLE_S)  # the statistics of the level's last second
        requests_after = worker_requests(variant, result)
        if requests_after is not None:
            result.requests_per_task = requests_per_task(requests_before, requests_after, result.received)
    return result


def worker_requests(variant: Variant, result: LevelResult) -> dict[str, dict[str, float]] | None:
    """Requests each worker's clients have sent so far, by request type; None when they are
    not counted, or a worker did not answer (said in the level's error)."""
    if not variant.metrics_ports:
        return None
    try:
        return {name: {request: sent for (request,), sent in scrape_counter(port, KAFKA_REQUESTS, ("request",)).items()}
                for name, port in variant.metrics_ports.items()}
    except OSError as exc:
        result.error = result.error or f"a worker's metrics did not answer: {exc}"
        return None


def name_workers(result: LevelResult, variant: Variant) -> None:
    """bench.relay's meter names the workers hop1..n; give them their real names."""
    names = {f"hop{k}": w.name for k, w in enumerate(variant.workers, 1)}
    result.cpu_s = {names.get(k, k): v for k, v in result.cpu_s.items()}
    result.thread_cpu_s = {names.get(k, k): v for k, v in result.thread_cpu_s.items()}


def idle_cores(variant: Variant, broker_pid: int | None, seconds: float) -> dict[str, float]:
    """CPU (in cores) each process uses with the workers up and no load: polling and fetch waits."""
    window = LevelResult(variant.name, 0, None, 0)
    meter = CpuMeter(variant.workers, broker_pid)
    began = time.monotonic()
    time.sleep(seconds)
    meter.read(window)
    elapsed = time.monotonic() - began
    name_workers(window, variant)
    return {name: round(cpu / elapsed, 3) for name, cpu in window.cpu_s.items()}


def warm_up(variant: Variant, tap: Tap, producer: Producer) -> float:
    """Tasks over many sessions through all three hops, so that joins, restores, metadata and the
    idempotent producer's handshake are behind us before the clock starts."""
    started = time.monotonic()
    for seq in range(WARMUP_TASKS):
        key, value = variant.make(0, seq)
        producer.produce(variant.topics[0], value, key)
    producer.flush(30)
    wait_while_running(variant.workers, lambda: tap.warmups >= WARMUP_TASKS, 180, lambda: tap.drain(0.05),
                       f"the {variant.name} warm-up tasks")
    return time.monotonic() - started


def warm_the_broker(variant: Variant, tap: Tap, producer: Producer, tasks: int, broker_pid: int | None) -> None:
    """``tasks`` at once through the variant, not measured: the broker (and the workers) run
    their hot paths before the clock starts, as a broker that has been up for a while has."""
    tap.sizes.clear()  # measured again on the warm-up's tasks, whose sessions have their memory
    warmed = run_unmeasured(variant, tap, producer, "broker warm-up", BROKER_WARMUP_LEVEL, None, tasks,
                            15 + tasks / 100, broker_pid, "give a smaller --broker-warm-up, or 0")
    print(f"  {variant.name}: broker warm-up, {warmed.received:,} tasks at once in {warmed.window_s:.1f} s "
          f"({broker_figures(warmed)}not measured)", flush=True)


def warm_paced(variant: Variant, tap: Tap, producer: Producer, rate: int, seconds: float, broker_pid: int | None) -> None:
    """``seconds`` at the first level's ``rate``, not measured: a JVM broker compiles code for
    a paced load that the burst of the broker warm-up did not set off, and spent 1.0-1.9
    CPU-s of a 250 tasks/s level's 5.5-6.1 on it when the level came first (bench/RESULTS.md
    "Session 46")."""
    tasks = max(1, round(rate * seconds))
    warmed = run_unmeasured(variant, tap, producer, "paced warm-up", PACED_WARMUP_LEVEL, rate, tasks,
                            15 + 2 * tasks / rate, broker_pid, "give a lower first level, or --paced-warm-up 0")
    print(f"  {variant.name}: paced warm-up, {warmed.received:,} tasks at {rate}/s in {warmed.window_s:.1f} s "
          f"({broker_figures(warmed)}not measured)", flush=True)


def run_unmeasured(variant: Variant, tap: Tap, producer: Producer, name: str, level: int, rate: float | None, tasks: int,
                   drain_s: float, broker_pid: int | None, fix: str) -> LevelResult:
    """A warm-up level, kept in the report's notes under ``name``; RuntimeError (naming
    ``fix``) unless all of it got through: its leftovers would run into the idle measure and
    the first level unseen."""
    warmed = run_level(variant, tap, producer, level, rate, tasks, drain_s, broker_pid)
    variant.notes[name.replace(" ", "_").replace("-", "_")] = {
        "rate": rate, "tasks": tasks, "received": warmed.received, "complete": warmed.complete, "error": warmed.error,
        "window_s": warmed.window_s, "cpu_s": warmed.cpu_s, "broker_threads_cpu_s": warmed.thread_cpu_s.get("broker", {})}
    if warmed.error or not warmed.complete:
        raise RuntimeError(f"the {name} of {variant.name} did not finish: {warmed.received:,} of {tasks:,} tasks through "
                           f"({warmed.error or 'timed out'}); {fix}")
    return warmed


def broker_figures(result: LevelResult) -> str:
    """The broker's CPU in a level, and its JIT compilers' when it is a JVM started here."""
    if "broker" not in result.cpu_s:
        return ""
    compilers = jit_compiler_seconds(result.thread_cpu_s.get("broker", {}))
    jit = f", its JIT compilers {compilers:.2f}" if compilers is not None else ""
    return f"broker {result.cpu_s['broker']:.1f} CPU-s{jit}; "


def sweep(variant: Variant, bootstrap: str, levels: list[int], seconds: float, min_tasks: int, broker_pid: int | None,
          burst: bool, stretch: float, at_once: int = 0, broker_warmup: int = 0, paced_warmup_s: float = 0.0,
          ) -> tuple[list[LevelResult], float, Tap, Producer]:
    producer = Producer(producer_config(bootstrap))
    tap = Tap(bootstrap, variant)
    warmup_s = warm_up(variant, tap, producer)
    tap.drain(0.5)  # the warm-up's last records on the sampled stages
    print(f"  {variant.name}: workers ready, warm-up took {warmup_s:.1f} s", flush=True)
    if broker_warmup:
        warm_the_broker(variant, tap, producer, broker_warmup, broker_pid)
    if paced_warmup_s and not at_once and levels:
        warm_paced(variant, tap, producer, levels[0], paced_warmup_s, broker_pid)
    idle = idle_cores(variant, broker_pid, IDLE_SECONDS)
    variant.notes["idle_cores"] = idle
    print(f"  {variant.name}: idle CPU (cores): " + ", ".join(f"{name} {cores:.2f}" for name, cores in idle.items()),
          flush=True)
    results: list[LevelResult] = []

    def run(rate: float | None, tasks: int, drain_s: float) -> LevelResult:
        result = run_level(variant, tap, producer, len(results) + 1, rate, tasks, drain_s, broker_pid)
        result.attempt = 1 + sum(1 for r in results if r.offered_per_s == rate)
        results.append(result)
        print_level(result)
        return result

    if at_once:
        # Only levels of everything at once: the workers batch as much as they can all the
        # level long, so CPU per task does not swing with how far other jobs made them lag.
        for _ in levels:
            run(None, at_once, 15 + at_once / 100)
        return results, warmup_s, tap, producer
    for rate in levels:
        tasks = max(min_tasks, round(rate * seconds))
        drain_s = 15 + 2 * tasks / rate  # a level offered at twice the capacity needs as long again to drain
        result = run(rate, tasks, drain_s)
        if len(results) == 1 and stretch and result.e2e_ms:
            # Latency that swings by a good part of a level skews its rate at both ends (faust's
            # batched fetches move arrivals by a second): make levels long against the latency.
            longer = min(MAX_LEVEL_SECONDS, stretch * result.e2e_ms["p95"] / 1000)
            if longer > seconds:
                seconds = longer
                variant.notes["level_seconds"] = round(seconds, 1)
                tasks = max(min_tasks, round(rate * seconds))
                drain_s = 15 + 2 * tasks / rate
                print(f"    (levels of {variant.name} last {seconds:.1f} s from here: {stretch:g} x its p95 latency)")
        if result.saturated and result.complete and not result.error:
            # The backlog drained: try once more, so that a burst of other jobs on this shared
            # machine does not end the sweep. The level counts as saturated if both attempts are.
            result = run(rate, tasks, drain_s)
        if result.error or result.saturated:
            break
    else:
        if burst and results:
            best = max(r.achieved_per_s for r in results)
            tasks = int(min(BURST_MAX_TASKS, max(1000, best * seconds * 1.5)))
            run(None, tasks, 15 + tasks / 2000)
    return results, warmup_s, tap, producer


# -- profiling ---------------------------------------------------------------------------------
def profile_pipeline(variant: Variant, tap: Tap, producer: Producer, level: int, rate: float, seconds: float,
                     workers: list[str], stamp: str) -> dict[str, Any]:
    """One more level at ``rate`` with py-spy attached to each named worker; not measured."""
    spies = {}
    for name in workers:
        worker = next(w for w in variant.workers if w.name == name)
        path = OUT_DIR / f"pipeline-{stamp}-profile-{name}.txt"
        spies[name] = (path, start_profiler(worker.proc.pid, path))
    try:
        result = run_level(variant, tap, producer, level, rate, max(20, round(rate * seconds)), 15 + 2 * seconds, None)
    finally:
        for _, spy in spies.values():
            stop_profiler(spy)
    # Per-task figures are this level's CPU over its own tasks through: not an at-once
    # run's count, nor those offered (a level that saturates leaves some behind).
    out: dict[str, Any] = {"offered_per_s": rate, "achieved_per_s": result.achieved_per_s, "tasks": result.received,
                           "thread_cpu_s": result.thread_cpu_s}
    for name, (path, _) in spies.items():
        if path.exists():
            out[name] = {"file": str(path.relative_to(REPO)), **summarize_profile(path)}
    return out


def print_profile(profile: dict[str, Any]) -> None:
    print(f"\npy-spy --gil profiles (250 Hz, samples of the thread holding the GIL) at {profile['offered_per_s']:,.0f} "
          f"tasks/s offered, {profile['achieved_per_s']:,.0f} achieved, {profile.get('tasks', 0):,} tasks through:")
    for name, summary in profile.items():
        if not isinstance(summary, dict) or "samples" not in summary:
            continue
        total = summary["samples"] or 1
        busiest = ", ".join(f"{t} {cpu:.2f}" for t, cpu in list(profile["thread_cpu_s"].get(name, {}).items())[:4])
        main_us = 1e6 * profile["thread_cpu_s"].get(name, {}).get("main", 0.0) / max(1, profile.get("tasks", 0))
        print(f"  {name}: {summary['samples']} samples in {summary['file']}; CPU s by thread: {busiest} "
              f"(main: {main_us:,.0f} us per task)")
        for title in ("threads", "inclusive", "self"):
            print(f"    by {title}:")
            for what, count in summary[title][:12]:
                print(f"      {100 * count / total:5.1f}%  {what}")


# -- reporting -------------------------------------------------------------------------------
def _fmt_rate(rate: float | None) -> str:
    return "at once" if rate is None else f"{rate:,.0f}"


def worker_cpu_us(result: LevelResult) -> float:
    """CPU time of all the variant's workers together per task."""
    workers = [v for k, v in result.cpu_s.items() if k not in ("bench", "broker", "machine", "others")]
    return 1e6 * sum(workers) / result.tasks if workers and result.tasks else float("nan")


def others_share(result: LevelResult) -> float:
    capacity = result.window_s * len(os.sched_getaffinity(0))
    return result.cpu_s.get("others", 0.0) / capacity if capacity else float("nan")


def print_level(r: LevelResult) -> None:
    e2e = r.e2e_ms
    status = r.error or (f"SATURATED: {r.why}" if r.saturated else "ok")
    print(f"    {_fmt_rate(r.offered_per_s):>8} offered: {r.achieved_per_s:>9,.0f}/s achieved, e2e p50 {e2e.get('p50', 0):>7.1f} "
          f"p99 {e2e.get('p99', 0):>7.1f} ms, {worker_cpu_us(r):>6.0f} us CPU/task  {status}", flush=True)


def print_report(results: list[LevelResult], summary: dict[str, Any], broker_name: str = "") -> None:
    if broker_name:
        print(f"\nbroker: {broker_name}")
    print(f"\n{'variant':<9}{'offered/s':>10}{'sent/s':>9}{'achieved/s':>11}{'e2e p50':>9}{'p95':>8}{'p99':>8}"
          f"{'growth':>8}{'CPU/task':>10}{'broker':>8}{'others':>8}  status")
    for r in results:
        e2e = r.e2e_ms
        status = r.error or (f"saturated: {r.why}" if r.saturated else "ok")
        status += f" (attempt {r.attempt})" if r.attempt > 1 else ""
        print(f"{r.variant:<9}{_fmt_rate(r.offered_per_s):>10}{r.sent_per_s:>9,.0f}{r.achieved_per_s:>11,.0f}"
              f"{e2e.get('p50', 0):>9.1f}{e2e.get('p95', 0):>8.1f}{e2e.get('p99', 0):>8.1f}{r.backlog_growth_ms:>8.0f}"
              f"{worker_cpu_us(r):>8.0f}us{r.cpu_s.get('broker', 0):>7.2f}s{max(0.0, others_share(r)):>8.0%}  {status}")
    print("(ms; growth: e2e p50 of the last fifth of the level minus the first fifth; CPU/task: all the variant's\n"
          " workers; broker: its CPU s in the level; others: CPU of anything else, share of all cores)")
    kinds = [r for r in results if r.thread_cpu_s.get("broker")]
    if kinds:
        print("\nbroker CPU s by kind of thread (a JVM's compilers apart: compiling the level set off)")
        for r in kinds:
            top = list(r.thread_cpu_s["broker"].items())[:4]
            print(f"  {r.variant:<9}{_fmt_rate(r.offered_per_s):>8}: " + ", ".join(f"{kind} {cpu:.2f}" for kind, cpu in top))
    print(f"\nadded latency per hop, ms p50 / p95 / p99 (CreateTime differences; tasks of partition {SAMPLE_PARTITION})")
    for r in results:
        hops = "  ".join(
            f"{name} {q.get('p50', 0):.0f}/{q.get('p95', 0):.0f}/{q.get('p99', 0):.0f}" for name, q in r.hops_ms.items() if q
        )
        print(f"  {r.variant:<9}{_fmt_rate(r.offered_per_s):>8}: {hops}  (n={r.sampled_chains})")
    counted = [r for r in results if r.requests_per_task]
    if counted:
        print("\nclient requests per task, Produce / Fetch / other (librdkafka statistics)")
        for r in counted:
            print(f"  {_fmt_rate(r.offered_per_s):>8}/s offered: " + "  ".join(
                f"{name} {q['Produce']:.2f}/{q['Fetch']:.2f}/{q['other']:.2f}" for name, q in r.requests_per_task.items()))
    phased = [r for r in results if r.phases_ms]
    if phased:
        print("\npipeline hops by phase, ms p50 / p95 / p99 (event timestamps and CreateTime)")
        for r in phased:
            print(f"  {_fmt_rate(r.offered_per_s):>8}/s offered:")
            for name, q in r.phases_ms.items():
                if q:
                    print(f"      {name:<64} {q['p50']:>6.0f} {q['p95']:>6.0f} {q['p99']:>6.0f}")
    print("\nsummary")
    for variant, s in summary["variants"].items():
        sat = s["saturated_at_offered"]
        if not s["saturated"]:
            sat_text = "did not saturate"
        else:
            sat_text = f"saturated at {sat:,.0f}/s offered" if sat else "its ceiling: everything at once"
        kept_up = s["max_sustained_offered"]
        print(f"  {variant:<9} capacity {s['capacity_per_s']:>9,.0f} tasks/s ({sat_text}; "
              f"highest level kept up with: {f'{kept_up:,.0f}/s' if kept_up else 'none'})")
        for hop, q in s["hops_ms_at_lowest_level"].items():
            if q:
                print(f"      {hop:<24} p50 {q['p50']:>6.1f}  p95 {q['p95']:>6.1f}  p99 {q['p99']:>6.1f} ms at the lowest level")
    for name, ratio in summary["ratios"].items():
        print(f"  {name}: {ratio:.3f}")


def summarize(results: list[LevelResult]) -> dict[str, Any]:
    summary: dict[str, Any] = {"variants": {}, "ratios": {}}
    for variant in VARIANTS:
        mine = [r for r in results if r.variant == variant and r.error is None]
        if not mine:
            continue
        final = {r.offered_per_s: r for r in mine}  # the last attempt at each level
        saturated = next((r for r in final.values() if r.saturated), None)
        kept_up = [rate for rate, r in final.items() if not r.saturated and rate]
        summary["variants"][variant] = {
            "capacity_per_s": max(r.achieved_per_s for r in mine),
            "saturated": saturated is not None,
            "saturated_at_offered": saturated.offered_per_s if saturated else None,
            "max_sustained_offered": max(kept_up) if kept_up else None,
            "hops_ms_at_lowest_level": mine[0].hops_ms,
            "e2e_ms_at_lowest_level": mine[0].e2e_ms,
        }
    capacity = {v: s["capacity_per_s"] for v, s in summary["variants"].items()}
    for base in ("raw", "faust"):
        if "pipeline" in capacity and capacity.get(base):
            summary["ratios"][f"pipeline/{base} (capacity)"] = capacity["pipeline"] / capacity[base]
    return summary


def plot(results: list[LevelResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tp, ax_e2e, ax_hop) = plt.subplots(1, 3, figsize=(17, 5.2))
    colors = {"pipeline": "tab:red", "raw": "tab:blue", "faust": "tab:green"}
    paced = [r for r in results if r.offered_per_s and r.error is None]
    for variant in VARIANTS:
        mine = list({r.offered_per_s: r for r in paced if r.variant == variant}.values())  # last attempts
        if not mine:
            continue
        x = [r.offered_per_s for r in mine]
        color = colors[variant]
        ax_tp.plot(x, [r.achieved_per_s for r in mine], "o-", color=color, label=variant)
        for r in mine:
            if r.saturated:
                ax_tp.plot(r.offered_per_s, r.achieved_per_s, "x", color="black", markersize=11)
        ax_e2e.plot(x, [r.e2e_ms.get("p50", float("nan")) for r in mine], "o-", color=color, label=f"{variant} p50")
        ax_e2e.plot(x, [r.e2e_ms.get("p99", float("nan")) for r in mine], "^--", color=color, label=f"{variant} p99")
        for hop, style in zip(HOPS[variant], ("o-", "s--", "^:")):
            ax_hop.plot(x, [r.hops_ms.get(hop, {}).get("p50", float("nan")) for r in mine], style, color=color,
                        label=f"{variant} {hop}")
    if paced:
        top = max(r.offered_per_s or 0 for r in paced)
        ax_tp.plot([min(r.offered_per_s or 1 for r in paced), top], [min(r.offered_per_s or 1 for r in paced), top],
                   color="grey", linewidth=0.8, label="achieved = offered")
    ax_tp.set(xscale="log", yscale="log", xlabel="offered tasks/s", ylabel="achieved tasks/s",
              title="throughput (x: saturated level)")
    ax_e2e.set(xscale="log", yscale="log", xlabel="offered tasks/s", ylabel="ms", title="end-to-end latency")
    ax_hop.set(xscale="log", yscale="log", xlabel="offered tasks/s", ylabel="ms", title="added latency per hop, p50")
    ax_hop.axhline(15, color="grey", linewidth=0.8, linestyle=":")
    for ax in (ax_tp, ax_e2e, ax_hop):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def services_source() -> dict[str, Any]:
    """Which service code was measured: a digest of services/**/*.py and the files changed since
    the commit (other work in progress shares this working tree)."""
    files = sorted((REPO / "services" / "agentstream").rglob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:12]
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--", "services", "examples/support_desk", "schemas"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        status = ""
    return {"services_sha256": digest, "services_uncommitted": [line[3:] for line in status.splitlines()]}


# -- main ------------------------------------------------------------------------------------
def run_variant(name: str, bootstrap: str, broker_pid: int | None, args: argparse.Namespace, sizes: list[int],
                schemas: SchemaSet, stamp: str, report: dict[str, Any]) -> tuple[list[LevelResult], list[int]]:
    work_dir = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{name}-"))
    variant: Variant | None = None
    tap: Tap | None = None
    try:
        if name == "pipeline":
            variant = start_pipeline(bootstrap, work_dir, schemas, args.partitions, count_requests=not args.no_requests)
        else:
            variant = start_relay("hop" if name == "raw" else "faust", bootstrap, work_dir, sizes, args.faust_workers)
        print(f"{name}: {', '.join(f'{w.name} (pid {w.proc.pid})' for w in variant.workers)}", flush=True)
        results, warmup_s, tap, producer = sweep(variant, bootstrap, args.levels, args.seconds, QUICK_MIN_TASKS if args.quick else MIN_LEVEL_TASKS,
                                                    broker_pid, not args.quick, 0 if args.quick else LEVEL_STRETCH,
                                                    args.at_once, args.broker_warm_up, args.paced_warm_up)
        report["variants"][name] = {"warmup_s": round(warmup_s, 1), **variant.notes}
        if name == "pipeline":
            measured = [round(statistics.mean(tap.sizes[s])) for s in range(4) if tap.sizes.get(s)]
            if len(measured) == 4:
                sizes = measured
            report["variants"][name]["stage_bytes"] = measured
            if args.profile and results:
                top = results[-1]
                rate = args.profile_rate or top.offered_per_s or top.achieved_per_s
                report["profile"] = profile_pipeline(variant, tap, producer, len(results) + 1, rate, args.seconds,
                                                     args.profile, stamp)
        return results, sizes
    finally:
        if tap is not None:
            tap.close()
        if variant is not None:
            notes = report["variants"].setdefault(name, {})
            notes["workers"] = {w.name: w.stop() for w in variant.workers}
            if variant.prefix:
                with contextlib.suppress(KafkaException, ProcessorError):
                    notes["records_per_task"] = records_per_task(bootstrap, variant)
            variant.cleanup()
        shutil.rmtree(work_dir, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run: levels {QUICK_LEVELS}, 1.5 s each, no burst "
                                                                     "(the broker warm-up still runs: --broker-warm-up 0 skips it)")
    parser.add_argument("--seconds", type=float, help="length of each load level (default 4, --quick 1.5)")
    parser.add_argument("--levels", help="offered loads in tasks/s, comma-separated (default %s)" % ",".join(map(str, DEFAULT_LEVELS)))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="which to run, comma-separated (default all)")
    parser.add_argument("--faust-workers", type=int, default=1, help="worker processes of the faust app (default 1)")
    parser.add_argument("--at-once", type=int, default=0, metavar="TASKS",
                        help="instead of the sweep: one level per --levels entry (its rate unused) of TASKS tasks "
                             "produced at once, for CPU per task at saturation (A/B runs)")
    parser.add_argument("--broker-warm-up", type=int, default=BROKER_WARMUP_TASKS, metavar="TASKS",
                        help=f"before the measured levels of each variant, TASKS tasks at once, not measured: a "
                             f"freshly started broker is slower while it warms up (default {BROKER_WARMUP_TASKS}; 0: off)")
    parser.add_argument("--profile", help=f"pipeline workers to profile with py-spy, comma-separated ({','.join(PIPELINE_WORKERS)})")
    parser.add_argument("--profile-rate", type=float, metavar="TASKS_PER_S",
                        help="offered rate of the --profile level (default: the last level's; a paced rate shows "
                             "what a task costs below saturation, where each wakes the workers on its own)")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="before each variant wait up to this many s for other load to settle (default 60; 0: off)")
    parser.add_argument("--partitions", type=int, metavar="N",
                        help="partitions of each of the pipeline's topics (the shipped topology's default_partitions "
                             "otherwise): what the broker and the workers pay for the partitions a fetch names")
    parser.add_argument("--paced-warm-up", type=float, metavar="SECONDS",
                        help=f"after the broker warm-up, this many seconds at the first level's rate, not measured: a "
                             f"JVM broker compiles for a paced load then, not in the first level (default "
                             f"{PACED_WARMUP_S:g}, --quick and --at-once 0; 0: none, as before session 46)")
    parser.add_argument("--no-requests", action="store_true",
                        help="do not count the workers' Kafka requests (no metrics port, no librdkafka statistics, "
                             "no pause after a level): as runs before session 46")
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (1.5 if args.quick else 4.0)
    args.levels = [int(x) for x in args.levels.split(",")] if args.levels else list(QUICK_LEVELS if args.quick else DEFAULT_LEVELS)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.profile = [w.strip() for w in args.profile.split(",")] if args.profile else []
    if args.profile_rate is not None and (args.profile_rate <= 0 or not args.profile):
        parser.error(f"--profile-rate must be above 0 and go with --profile (got {args.profile_rate}, "
                     f"--profile {','.join(args.profile) or 'not given'})")
    if unknown := [v for v in args.variants if v not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; valid variants are {list(VARIANTS)}")
    if unknown := [w for w in args.profile if w not in PIPELINE_WORKERS]:
        parser.error(f"unknown workers to profile {unknown}; valid workers are {list(PIPELINE_WORKERS)}")
    if args.seconds <= 0 or any(level <= 0 for level in args.levels) or args.faust_workers < 1:
        parser.error("--seconds, every level and --faust-workers must be > 0")
    if args.partitions is not None and args.partitions <= SAMPLE_PARTITION:
        parser.error(f"--partitions {args.partitions}: give at least {SAMPLE_PARTITION + 1} (the hops are sampled on "
                     f"partition {SAMPLE_PARTITION})")
    if args.partitions is not None and args.variants != ["pipeline"]:
        parser.error(f"--partitions applies to the pipeline's topics only, and the relays keep {PARTITIONS}: "
                     f"add --variants pipeline (got --variants {','.join(args.variants)})")
    if args.paced_warm_up and args.at_once:
        parser.error(f"--paced-warm-up {args.paced_warm_up:g} warms paced levels up, and --at-once runs none: drop one")
    if args.paced_warm_up is None:
        args.paced_warm_up = 0.0 if args.quick or args.at_once else PACED_WARMUP_S
    if not math.isfinite(args.paced_warm_up) or args.paced_warm_up < 0:
        parser.error(f"--paced-warm-up {args.paced_warm_up:g}: give a number of seconds >= 0 (0: none)")
    if args.broker_warm_up < 0:
        parser.error(f"--broker-warm-up {args.broker_warm_up}: give a number of tasks >= 0 (0: no warm-up)")
    # The pipeline runs first: the relays copy the record sizes it writes at each stage.
    args.variants.sort(key=VARIANTS.index)
    return args


def bench_main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    started = time.monotonic()
    host = machine()
    schemas = SchemaSet.load()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "pipeline", "started": stamp, "command": "python -m bench.pipeline " + " ".join(argv),
        "machine": host, "runtime_source": {**runtime_source(), **services_source()},
        "config": {"levels": args.levels, "seconds": args.seconds, "variants": args.variants,
                   "partitions": PARTITIONS,  # the relays' topics
                   "pipeline_partitions": args.partitions,  # --partitions; None: the shipped topology's
                   "session_keys": SESSION_KEYS, "sample_partition": SAMPLE_PARTITION, "agent_type": AGENT_TYPE,
                   "texts": list(TEXTS), "faust_workers": args.faust_workers, "at_once": args.at_once, "broker_warm_up": args.broker_warm_up,
                   "paced_warm_up_s": args.paced_warm_up,
                   "saturated_share": SATURATED_SHARE,
                   "worker_env": {name: os.environ[name] for name in WORKER_ENV if os.environ.get(name)},
                   "request_stats_s": None if args.no_requests else REQUEST_STATS_S,
                   "request_settle_s": None if args.no_requests else REQUEST_SETTLE_S},
        "variants": {},
    }
    results: list[LevelResult] = []
    sizes = list(FALLBACK_SIZES)
    with broker(args.broker) as (bootstrap, broker_pid, broker_name):
        report["broker"] = broker_name
        report["broker_kind"] = broker_kind(broker_name)
        print(f"pipeline bench: {', '.join(args.variants)}; levels {args.levels} tasks/s x {args.seconds:g} s; "
              f"broker {broker_name} at {bootstrap}")
        print(f"machine: {host['nproc']} x {host['cpu_model']}, load average {' '.join(host['loadavg_at_start'])}")
        print(f"pipeline: every task to {AGENT_TYPE!r} via requested_agent, zero-latency ScriptedModel (no real LLM)")
        for name in args.variants:
            waited = wait_for_quiet(args.quiet_wait) if args.quiet_wait else 0.0
            print(f"\n{name}: (waited {waited:.0f} s for a quiet machine)", flush=True)
            try:
                mine, sizes = run_variant(name, bootstrap, broker_pid, args, sizes, schemas, stamp, report)
            except (TimeoutError, RuntimeError, KafkaException, AgentStreamError) as exc:
                print(f"  {name} failed: {exc}", flush=True)
                report["variants"].setdefault(name, {})["error"] = str(exc)
                continue
            results.extend(mine)
            if name == "pipeline":
                print(f"  stage record sizes (bytes), copied by the relays: {sizes}")
                written = report["variants"][name].get("records_per_task", {})
                print("  records written per completed task: " + ", ".join(f"{t} {n:g}" for t, n in written.items()))
    summary = summarize(results)
    print_report(results, summary, report.get("broker", ""))
    if "profile" in report:
        print_profile(report["profile"])
    report["relay_stage_bytes"] = sizes
    report["levels"] = [asdict(r) for r in results]
    report["summary"] = summary
    report["runtime_s"] = round(time.monotonic() - started, 1)
    out = OUT_DIR / f"pipeline-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    png = out.with_suffix(".png")
    try:
        plot(results, png, f"bench.pipeline {stamp}: {host['nproc']} x {host['cpu_model']}, {report['broker']}")
        print(f"\nwrote {out.relative_to(REPO)} and {png.relative_to(REPO)} ({report['runtime_s']:.0f} s in all)")
    except ImportError:
        print(f"\nwrote {out.relative_to(REPO)}; no plot: matplotlib is not installed (pip install matplotlib)")
    return 0 if results and all(r.error is None for r in results) else 1


def main() -> int:
    if sys.argv[1:2] in (["hop"], ["faust"]):
        return child_main(sys.argv[1], sys.argv[2:])
    return bench_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
