"""Soak: steady load through the whole stack for a long time, with kills, faults and short dedupe retention.

    python -m bench.soak [--minutes 30] [--rate 20] [--kill-every 300] [--retention-s 120]
                         [--fault-rate 0.01] [--broker kafka|tansu]
    python -m bench.soak --recheck bench/out/soak-<stamp>.json   # judge a saved run again

Router, one specialist per agent type (billing, technical, account) and the supervisor run
as ``agentstream worker`` processes on a broker started here (``--broker``, default Apache
Kafka 4; ``KAFKA_BOOTSTRAP_SERVERS`` wins). Tasks are submitted at ``--rate`` per second
(round robin over the agent types and a pool of sessions); the scripted model fails
``--fault-rate`` of its calls with an HTTP 500 (``AGENTSTREAM_SCRIPTED_FAILURE_RATE``), so
tasks travel the retry tiers and, rarely, the DLQ. Every ``--kill-every`` seconds one worker
gets SIGKILL, in turn the router, a specialist (the next type each time) and the supervisor,
and is started again at once on the same state directory, as an orchestrator with a
persistent volume would.

The topology is a copy of ``examples/support_desk/topology.yaml`` with ``dedupe.retention_s`` set to
``--retention-s`` and the input topics' ``retention.ms`` shortened to match (the loader refuses
a dedupe retention shorter than an input's), so the dedupe tables reach their steady size
within the run.

Every ``--sample-every`` seconds (default 10): the RSS of each worker (after a restart, the new
process), the consumer lag of each group on its input topic (``runtime.lag``), and the keys and
on-disk bytes of the dedupe tables: the router's and the supervisor's ``dedupe`` and the
specialists' done markers (``d/…`` keys of ``checkpoints``; the bytes are the whole
``checkpoints`` directory, in-flight step checkpoints included). Keys are counted from each
table's changelog topic, read on from the previous sample (``ChangelogKeys``): what the
table holds durably, also while its worker restarts.

Checks (exit status 1 if one fails; "n/a" when the run is too short to judge):

- every submitted task ended: a TaskResult or a dead letter, after the load stops;
- no task has two TaskResults (nor a result and a dead letter);
- every killed worker was started again and assigned its partitions;
- RSS flat: per worker process (a restarted one starts small again, so it is judged on its
  own), once it is ``--warmup-s`` old and the sessions are full (sessions / rate x the
  topology's ``sessions.remember_turns`` s: until then the router's session records and the
  history each routed task carries grow by design), the median of its first ``--window-s``
  is compared with the median of its last ``--window-s``; they must agree within ±10 %
  ("n/a" for a process that did not live two windows after that);
- lag bounded: the largest input lag of every group stays below ``--lag-bound-s`` seconds of
  submitted tasks, and returns to 0 once the load stops;
- dedupe flat: keys compared the same way (medians of the first and last window after two
  retentions have passed) agree within ±25 %; so do the maxima of the table files in the
  first and the second half of that span (bytes on disk are a sawtooth of about ten minutes,
  falling at each compaction: a median lands anywhere in it and a shorter window on its phase,
  so each half must be at least ``SAWTOOTH_SPAN_S``, two teeth, or the check is n/a);
  RocksDB's info LOG, which a slowly written table fills towards its cap for an hour or more,
  stays within the cap the store settings give (runtime/store.py), and so does the
  write-ahead log (the stores write none since session 16: any there is a regression).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

if __name__ == "__main__" and not __package__:
    # Run as a file (python bench/soak.py): the repository root importable, as with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition  # noqa: E402

from agentstream.broker import NO_BROKER_ANSWERED  # noqa: E402
from agentstream.client import new_task  # noqa: E402
from agentstream.clients import reader_config  # noqa: E402
from agentstream.errors import BrokerUnavailableError  # noqa: E402
from agentstream.settings import SCRIPTED_FAILURE_RATE_ENV  # noqa: E402
from agentstream.runtime.errors import ProcessorError  # noqa: E402
from agentstream.runtime.lag import consumer_lag, end_offsets  # noqa: E402
from agentstream.runtime.store import INFO_LOG_BYTES, INFO_LOG_FILES  # noqa: E402
from agentstream.specialist.checkpoint import DONE  # noqa: E402
from agentstream.topology import DEFAULT_PATH, load_topology  # noqa: E402
from tests.support_desk import copy_app  # noqa: E402
from bench._procs import REPO, AgentStack, Proc, TopicWatcher, machine, source_state, write_report  # noqa: E402
from bench.relay import add_broker_argument, broker, broker_kind  # noqa: E402

RSS_TOLERANCE = 0.10
DEDUPE_TOLERANCE = 0.25
# A dedupe table's files rise with each flush and fall at each compaction: a sawtooth of about
# ten minutes at 20 tasks/s (soak run 5, bench/RESULTS.md). Windows of 180 s landed on its
# phase (+299 % one way, -50 % the other), so table files are judged over two teeth or more.
SAWTOOTH_SPAN_S = 1200.0
# The inputs of the stages: the loader demands a dedupe retention at least theirs.
INPUT_TOPICS = ("tasks", "specialist.{type}", "supervisor")
# What each agent type is asked; the ids make the scripted model call a tool first.
TEXTS = {
    "billing": "Please check invoice INV-1001 for me",
    "technical": "I cannot log in, my account is ann@example.com",
    "account": "Please update the e-mail of account ann@example.com",
}
DEDUPE_TABLES = {"router": ("dedupe", b""), "supervisor": ("dedupe", b"")}  # agent -> (table, key prefix)
SPECIALIST_DEDUPE = ("checkpoints", DONE.encode())
# The line controls.retry logs when a model call failed with an injected fault (controls/faults.py).
INJECTED_FAULT_LINE = r"after ModelServerError: injected fault"


@dataclass
class SoakConfig:
    minutes: float = 30.0
    rate: float = 20.0  # tasks submitted per second
    kill_every: float = 300.0  # seconds between SIGKILLs; 0: none
    retention_s: int = 120  # dedupe.retention_s of the soak's topology copy
    fault_rate: float = 0.01  # share of model calls failing with an HTTP 500
    latency: str = "0.2-0.6"  # scripted model seconds per call
    sessions: int = 2000  # tasks go round robin over this many sessions
    sample_every: float = 10.0
    warmup_s: float = 180.0  # a process younger than this is not compared (RSS)
    window_s: float = 180.0  # early and late comparison windows
    lag_bound_s: float = 120.0  # lag must stay below this many seconds of submitted tasks
    drain_timeout_s: float = 420.0  # the last retry tier holds a task 300 s

    @property
    def seconds(self) -> float:
        return self.minutes * 60


@dataclass
class Sample:
    at: float  # seconds since the load began
    rss: dict[str, int]  # worker slot -> bytes
    pid: dict[str, int]
    age: dict[str, float]  # seconds the slot's current process has run
    lag: dict[str, int | None]  # group's agent -> summed input lag (None: could not ask)
    keys: dict[str, int | None]  # dedupe table -> live keys (None: could not read)
    bytes: dict[str, int]  # dedupe table directory -> bytes on disk
    wal: dict[str, int]  # of which write-ahead log
    sst: dict[str, int] = field(default_factory=dict)  # of which table files
    info_log: dict[str, int] = field(default_factory=dict)  # of which RocksDB's info LOG


@dataclass
class Kill:
    slot: str
    at: float  # seconds since the load began
    old_pid: int
    new_pid: int = 0
    to_assigned_s: float = float("nan")  # SIGKILL -> the new process's "assigned" line
    later_tasks: int = 0  # tasks submitted after the kill: only the new process can have handled them
    later_ended: int = 0  # of which ended (result or dead letter)
    error: str | None = None
    # Starts again after a start that gave up on a broker slow to answer (a worker's probe
    # waits 5 s, up to 60 s for a busy broker: broker.SLOW_BROKER_WAIT_S; a loaded Tansu
    # once took longer than 5 s): a deployment's supervisor starts it again too.
    extra_starts: int = 0


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable in a run this short
    detail: str


@dataclass
class SoakReport:
    config: SoakConfig
    submitted: int = 0
    results: int = 0
    dead_letters: int = 0
    unfinished: list[str] = field(default_factory=list)
    injected_faults: int = 0  # model calls failed on purpose and retried (worker logs, killed processes included)
    duplicates: int = 0  # results of a task beyond its first, within the dedupe retention of it
    repeated_after_retention: int = 0  # the same, but after the retention: outside the dedupe window
    statuses: dict[str, int] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    final_lag: dict[str, int | None] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)  # of the last process of each slot, on SIGTERM
    load_seconds: float = 0.0
    drain_seconds: float = float("nan")
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    partitions: int = 0  # of every dedupe table: a store each
    remember_turns: int = 0  # the topology's sessions.remember_turns

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok is not False for c in self.checks)


# -- set-up ----------------------------------------------------------------------------------
def short_retention_topology(directory: Path, retention_s: int) -> Path:
    """A copy of the repository topology whose dedupe entries (and input records) live ``retention_s``."""
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    raw["dedupe"] = {"retention_s": retention_s}
    for logical in INPUT_TOPICS:
        raw["topics"][logical]["retention.ms"] = retention_s * 1000
    path = copy_app(directory)  # the app's tools, data and prompts, next to the edited topology
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def slots(stack: AgentStack) -> dict[str, tuple[str, str]]:
    """Worker slot -> (kind, agent): one router, one specialist per type, one supervisor."""
    out = {"router": ("router", "router")}
    out.update({agent: ("specialist", agent) for agent in stack.topology.specialist_types})
    out["supervisor"] = ("supervisor", "supervisor")
    return out


def victims(stack: AgentStack) -> Iterator[str]:
    """router, a specialist, the supervisor, router, the next specialist, ..."""
    specialists = itertools.cycle(stack.topology.specialist_types)
    while True:
        yield "router"
        yield next(specialists)
        yield "supervisor"


# -- what is sampled -------------------------------------------------------------------------
def _dir_bytes(path: Path) -> tuple[int, int, int, int]:
    """Bytes of every file under ``path``; of which RocksDB table files, write-ahead logs and
    info logs (``LOG``, ``LOG.old.*``)."""
    total = tables = wal = info = 0
    for file in path.rglob("*"):
        with contextlib.suppress(OSError):  # RocksDB deletes files as it compacts
            if file.is_file():
                size = file.stat().st_size
                total += size
                tables += size if file.suffix == ".sst" else 0
                wal += size if file.suffix == ".log" else 0
                info += size if file.name == "LOG" or file.name.startswith("LOG.old") else 0
    return total, tables, wal, info


class ChangelogKeys:
    """The live keys under ``prefix`` of one table, from its changelog topic: each count reads
    the records added since the last one (a value adds its key, a tombstone takes it away)
    up to the ends of that moment. The changelog is what a restore would rebuild, so this is
    the table as it stands durably, whether its worker is up or restarting; the workers keep
    RocksDB's write-ahead log off (runtime/store.py), so their stores' files, opened beside
    them, show only what a memtable flush wrote."""

    def __init__(self, bootstrap: str, topic: str, prefix: bytes) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.prefix = prefix
        self.live: set[bytes] = set()
        self._reader: Consumer | None = None
        self._next: dict[int, int] = {}  # partition -> the offset after the last record read

    def count(self, timeout: float = 10.0) -> int:
        ends = {p: end for (_, p), end in end_offsets(self.bootstrap, [self.topic], timeout).items()}
        reader = self._open(ends)
        deadline = time.monotonic() + timeout
        while any(self._next.get(p, 0) < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic} was not read to its ends {ends} within {timeout:.0f} s")
            for msg in reader.consume(1000, 0.2):
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"reading {self.topic}: {msg.error()}")
                    # The end, also of a partition with nothing left to read (position() stays unset there).
                    self._next[msg.partition()] = max(self._next.get(msg.partition(), 0), msg.offset())
                    continue
                self._apply(msg.key() or b"", msg.value())
                self._next[msg.partition()] = msg.offset() + 1
            for tp in reader.position([TopicPartition(self.topic, p) for p in ends]):
                if tp.offset >= 0:  # past a compacted gap or a marker without a record there
                    self._next[tp.partition] = max(self._next.get(tp.partition, 0), tp.offset)
        return len(self.live)

    def _open(self, ends: dict[int, int]) -> Consumer:
        if self._reader is None:
            self._reader = Consumer(reader_config(self.bootstrap))
            self._reader.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(ends)])
        return self._reader

    def _apply(self, key: bytes, value: bytes | None) -> None:
        if not key.startswith(self.prefix):
            return
        if value is None:
            self.live.discard(key)
        else:
            self.live.add(key)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class Sampler(threading.Thread):
    """Every ``interval`` s: RSS of each slot's current process, lag per group, dedupe tables."""

    def __init__(self, stack: AgentStack, began: float, interval: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.stack = stack
        self.began = began
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors: Counter[str] = Counter()
        self._halt = threading.Event()
        topology = stack.topology
        # A worker's state directory is the slot's (AgentStack), under which the service keeps
        # <agent>/<group>/<table>/<partition> (Service, Processor).
        named = [(f"{agent}.{table}", agent, table, prefix) for agent, (table, prefix) in DEDUPE_TABLES.items()]
        named += [(f"{agent}.done", agent, *SPECIALIST_DEDUPE) for agent in topology.specialist_types]
        self.tables = {name: stack.base / agent / agent / topology.group(agent) / table for name, agent, table, _ in named}
        self.agents = ["router", *topology.specialist_types, "supervisor"]
        self._pool: ThreadPoolExecutor  # run()'s, for the parts of each sample
        self.keys = {name: ChangelogKeys(stack.bootstrap, topology.changelog_topic(agent, table), prefix)
                     for name, agent, table, prefix in named}

    def run(self) -> None:
        # The parts of a sample are read side by side: each may wait up to its timeout on a
        # broker busy with a rebalance, and one after the other they once made a sample last
        # longer than a test's late window (ci33 on Tansu: no sample landed in it).
        try:
            with ThreadPoolExecutor(len(self.keys) + len(self.agents), thread_name_prefix="soak-sample") as self._pool:
                while not self._halt.is_set():
                    self.samples.append(self.sample())
                    self._halt.wait(self.interval)
        finally:
            for counter in self.keys.values():  # the pool has joined: no count is still reading
                counter.close()

    def sample(self) -> Sample:
        import psutil

        now = time.monotonic()
        rss, pids, ages = {}, {}, {}
        for slot, proc in list(self.stack.workers.items()):
            try:
                rss[slot] = psutil.Process(proc.pid).memory_info().rss
                pids[slot], ages[slot] = proc.pid, now - proc.started
            except psutil.Error:
                self.errors["rss"] += 1  # killed between the listing and the read
        counts = {name: self._pool.submit(counter.count) for name, counter in self.keys.items()}
        lags = self._lags(self._pool)
        keys: dict[str, int | None] = {}
        sizes, tables, wals, infos = {}, {}, {}, {}
        for name, directory in self.tables.items():
            try:
                keys[name] = counts[name].result()
            except Exception as exc:  # a broker busy with a rebalance may time out: a gap, not a failure
                keys[name] = None
                self.errors[f"keys {name}: {exc}"[:120]] += 1
            sizes[name], tables[name], wals[name], infos[name] = _dir_bytes(directory)
        return Sample(round(now - self.began, 1), rss, pids, ages, self._gather_lags(lags), keys, sizes, wals, tables, infos)

    def lag(self) -> dict[str, int | None]:
        """Each group's input lag, read side by side."""
        with ThreadPoolExecutor(len(self.agents), thread_name_prefix="soak-lag") as pool:
            return self._gather_lags(self._lags(pool))

    def _lags(self, pool: ThreadPoolExecutor) -> dict[str, Future[int]]:
        topology = self.stack.topology
        return {agent: pool.submit(self._lag_of, topology.group(agent), topology.topic(topology.agent(agent).input))
                for agent in self.agents}

    def _lag_of(self, group: str, topic: str) -> int:
        return sum(row.lag for row in consumer_lag(self.stack.bootstrap, group, [topic], 10))

    def _gather_lags(self, lags: dict[str, Future[int]]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for agent, lag in lags.items():
            try:
                out[agent] = lag.result()
            except Exception as exc:  # a broker busy with a rebalance may time out: a gap, not a failure
                out[agent] = None
                self.errors[f"lag {agent}: {exc}"[:120]] += 1
        return out

    def stop(self) -> None:
        self._halt.set()
        self.join(60)


# -- the load ----------------------------------------------------------------------------------
class Load(threading.Thread):
    """Submits tasks at ``rate`` per second on a fixed schedule until ``seconds`` have passed."""

    def __init__(self, stack: AgentStack, config: SoakConfig, began: float) -> None:
        super().__init__(name="soak-load", daemon=True)
        self.stack = stack
        self.config = config
        self.began = began
        self.run_id = uuid.uuid4().hex[:6]
        self.submitted: list[str] = []
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        producer = self.stack.producer()
        agents = self.stack.topology.specialist_types
        total = int(self.config.rate * self.config.seconds)
        try:
            for i in range(total):
                # The schedule, not a condition: task i is due at i / rate seconds.
                if self._halt.wait(max(0.0, self.began + i / self.config.rate - time.monotonic())):
                    break
                agent = agents[i % len(agents)]
                task = new_task(TEXTS.get(agent, TEXTS["billing"]), f"s-{self.run_id}-{i % self.config.sessions}", "soak",
                                task_id=f"soak-{self.run_id}-{i:07d}", requested_agent=agent)
                self.stack.submit([task], producer)
                self.submitted.append(task["task_id"])
            if producer.flush(60):
                self.error = "the producer did not deliver every task within 60 s"
        except Exception as exc:  # reported, not raised: the soak still drains and checks
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._halt.set()
        self.join(90)


def _wait(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _settled_lag(sampler: Sampler, timeout: float) -> dict[str, int | None]:
    """The groups' lags once all are 0 (or the last read at the timeout): the read that
    showed them settled, not another one after it, which a slow broker may leave unread."""
    seen: dict[str, int | None] = {}

    def settled() -> bool:
        seen.clear()
        seen.update(sampler.lag())
        return all(lag == 0 for lag in seen.values())

    _wait(settled, timeout)
    return dict(seen)


def _ends_or_unknown(bootstrap: str, topics: list[str]) -> float:
    """The topics' summed ends; infinite (not there yet) when the broker does not answer
    in time: the wait asks again."""
    try:
        return sum(end_offsets(bootstrap, topics).values())
    except (ProcessorError, KafkaException, BrokerUnavailableError):
        return math.inf


def restart(stack: AgentStack, slot: str, kind: str, agent: str, began: float, retired: list[Proc]) -> Kill:
    old = stack.workers[slot]
    retired.append(old)
    killed = old.kill()
    kill = Kill(slot, round(killed - began, 1), old.pid)
    old.stop(10)  # reaps it and closes its log
    (stack.base / f"{slot}.log").rename(stack.base / f"{slot}.{old.pid}.log")
    deadline = time.monotonic() + 180
    while True:
        new: Proc = stack.start(slot, kind, agent_type=agent)
        kill.new_pid = new.pid
        try:
            at, _ = new.wait_for_line(r": assigned .*\[\d+\]", max(1.0, deadline - time.monotonic()))  # not "nothing"
            kill.to_assigned_s = round(at - killed, 2)
            return kill
        except RuntimeError as exc:  # it exited before its assignment
            if NO_BROKER_ANSWERED not in new.tail() or time.monotonic() >= deadline:
                kill.error = str(exc).splitlines()[0]
                return kill
        except TimeoutError as exc:
            kill.error = str(exc).splitlines()[0]
            return kill
        retired.append(new)
        new.stop(10)
        (stack.base / f"{slot}.log").rename(stack.base / f"{slot}.{new.pid}.log")
        kill.extra_starts += 1


# -- the run -----------------------------------------------------------------------------------
def run_soak(bootstrap: str, config: SoakConfig, base: Path | None = None, progress: Callable[[str], None] = print) -> SoakReport:
    """The soak on a running broker. ``base`` (default: a temporary directory, removed at the
    end) holds the topology copy, the workers' state and their logs; a given one is kept."""
    report = SoakReport(config)
    own_base = base is None
    base = base or Path(tempfile.mkdtemp(prefix="soak-"))
    base.mkdir(parents=True, exist_ok=True)
    topology_path = short_retention_topology(base, config.retention_s)
    stack = AgentStack(bootstrap, base / "workers", latency=config.latency, topology_path=topology_path,
                       env={SCRIPTED_FAILURE_RATE_ENV: str(config.fault_rate)}, call_log=False)
    topology = stack.topology
    partitions = report.partitions = topology.topic_spec("results").partitions
    report.remember_turns = topology.sessions.remember_turns
    watcher = TopicWatcher(bootstrap, [topology.topic("results"), topology.topic("dlq")], stack.schemas, partitions)
    for slot, (kind, agent) in slots(stack).items():
        stack.start(slot, kind, agent_type=agent)
    sampler: Sampler | None = None
    load: Load | None = None
    retired: list[Proc] = []  # killed processes, for their log lines
    try:
        stack.wait_assigned(180)
        watcher.start()
        began = time.monotonic()
        sampler, load = Sampler(stack, began, config.sample_every), Load(stack, config, began)
        sampler.start()
        load.start()
        progress(f"load started: {config.rate:g} tasks/s for {config.minutes:g} min, prefix {stack.prefix}")
        order = victims(stack)
        kinds = slots(stack)
        next_kill = config.kill_every if config.kill_every > 0 else math.inf
        while load.is_alive():
            load.join(min(max(0.0, began + next_kill - time.monotonic()), 5.0))
            if load.is_alive() and time.monotonic() - began >= next_kill:
                slot = next(order)
                kill = restart(stack, slot, *kinds[slot], began, retired)
                report.kills.append(kill)
                again = f" (started {kill.extra_starts + 1} times: no broker answered in time)" if kill.extra_starts else ""
                progress(f"  t={kill.at:.0f}s SIGKILL {slot} (pid {kill.old_pid}); restarted as {kill.new_pid}{again}, "
                         f"assigned after {kill.to_assigned_s} s{'; ' + kill.error if kill.error else ''}")
                next_kill += config.kill_every
        report.load_seconds = round(time.monotonic() - began, 1)
        if load.error:
            report.error = f"submitting: {load.error}"
        wanted = set(load.submitted)
        report.submitted = len(wanted)
        progress(f"load done: {report.submitted} tasks in {report.load_seconds:.0f} s; draining")

        def ended() -> set[str]:
            return {r["task_id"] for _, r in watcher.of("TaskResult")} | {r.get("task_id") for _, r in watcher.of("DeadLetter")}

        drain_began = time.monotonic()
        if _wait(lambda: wanted <= ended(), config.drain_timeout_s):
            report.drain_seconds = round(time.monotonic() - drain_began, 1)
        # Then every group has committed its whole input, and the watcher has read every
        # result and dead letter there is: a duplicate cannot arrive later.
        report.final_lag = _settled_lag(sampler, 120)
        outputs = [topology.topic("results"), topology.topic("dlq")]
        if not _wait(lambda: len(watcher.records) >= _ends_or_unknown(bootstrap, outputs), 60):
            progress("  the watcher had not read to the outputs' ends after 60 s: the counts may miss some")
        results = [r for _, r in watcher.of("TaskResult") if r["task_id"] in wanted]
        letters = [r for _, r in watcher.of("DeadLetter") if r.get("task_id") in wanted]
        report.results, report.dead_letters = len(results), len(letters)
        report.unfinished = sorted(wanted - ended())
        endings = Counter([r["task_id"] for r in results] + [r["task_id"] for r in letters])
        report.duplicates, report.repeated_after_retention = count_repeats(results, letters, config.retention_s)
        report.statuses = dict(Counter(str(r["status"]) for r in results))
        done = set(endings)
        for kill in report.kills:
            # Task i was due at i / rate s; the ids are in submission order.
            later = load.submitted[math.ceil(kill.at * config.rate):]
            kill.later_tasks, kill.later_ended = len(later), len(done.intersection(later))
    except (TimeoutError, RuntimeError) as exc:
        report.error = str(exc)
    finally:
        if load is not None and load.is_alive():
            load.stop()
        if sampler is not None:
            sampler.stop()
            report.samples = sampler.samples
            for what, n in sampler.errors.items():
                progress(f"  sampling gap x{n}: {what}")
        report.exit_codes = stack.stop_all(60)
        report.injected_faults = sum(len(p.matching(INJECTED_FAULT_LINE)) for p in [*retired, *stack.workers.values()])
        if os.environ.get("BENCH_KEEP_LOGS"):
            for log in (stack.base).glob("*.log"):
                shutil.copy(log, Path(os.environ["BENCH_KEEP_LOGS"]) / log.name)
        if watcher.is_alive():
            watcher.stop()
        stack.delete_topics()
        if own_base:
            shutil.rmtree(base, ignore_errors=True)
    report.checks = checks(report)
    return report


# -- the checks -------------------------------------------------------------------------------
def _windows(points: Sequence[tuple[float, float]], start: float, end: float, width: float) -> tuple[list[float], list[float]]:
    """Values of the first ``width`` s after ``start`` and of the last ``width`` s before ``end``."""
    early = [v for t, v in points if start <= t < start + width]
    late = [v for t, v in points if end - width < t <= end]
    return early, late


def _flat(name: str, points: Sequence[tuple[float, float]], start: float, end: float, width: float, tolerance: float,
          statistic: Callable[[list[float]], float] = statistics.median) -> Check:
    """The ``statistic`` of the first and of the last window agree within ``tolerance``. The
    median suits a level with noise (RSS, keys); the maximum suits a sawtooth (bytes on disk,
    which fall at each flush and compaction), whose median lands anywhere in its range."""
    if end - start < 2 * width:
        return Check(name, None, f"n/a: needs {2 * width:.0f} s after t={start:.0f} s, the load ended at {end:.0f} s")
    early, late = _windows(points, start, end, width)
    if len(early) < 3 or len(late) < 3:
        return Check(name, None, f"n/a: {len(early)} early and {len(late)} late samples")
    a, b = statistic(early), statistic(late)
    if a == 0 and b > 0:
        return Check(name, None, f"n/a: none before t={start + width:.0f} s, {b:,.0f} at the end (needs a longer run)")
    change = (b - a) / a if a else 0.0
    return Check(name, abs(change) <= tolerance,
                 f"{statistic.__name__} {a:,.0f} (t {start:.0f}-{start + width:.0f} s) -> {b:,.0f} "
                 f"(t {end - width:.0f}-{end:.0f} s): {change:+.1%} (limit ±{tolerance:.0%})")


def _within(name: str, points: Sequence[tuple[float, float]], bound: float, why: str) -> Check:
    """Every sample at most ``bound``: for what RocksDB's settings cap (WAL, info LOG), which
    grows towards its cap for as long as a slow table takes to fill a memtable."""
    if not points:
        return Check(name, None, "n/a: no samples")
    peak = max(v for _, v in points)
    return Check(name, peak <= bound, f"max {peak:,.0f} bytes, bound {bound:,.0f} ({why})")


def state_filled_s(report: SoakReport) -> float:
    """When every session of the load holds all the turns it remembers: the router's session
    records (and the routed tasks' history) stop growing then. Until that, a worker's state is
    still growing by design, so its RSS is not judged."""
    config = report.config
    return config.sessions / config.rate * report.remember_turns


def _rss_checks(report: SoakReport, slot: str) -> list[Check]:
    """Each process of ``slot`` on its own (a restarted one starts small again): its RSS in
    its first window and in its last window, once it is ``warmup_s`` old and the state has
    filled, agree within ±10 %."""
    config, samples = report.config, report.samples
    pids = sorted({s.pid[slot] for s in samples if slot in s.pid}, key=lambda pid: next(
        s.at for s in samples if s.pid.get(slot) == pid))
    checks = []
    for pid in pids:
        lived = [(s.at, float(s.rss[slot]), s.age[slot]) for s in samples
                 if s.pid.get(slot) == pid and slot in s.rss and s.at <= report.load_seconds]
        if not lived:
            continue
        born = lived[0][0] - lived[0][2]
        start = max(born + config.warmup_s, state_filled_s(report))
        points = [(at, rss) for at, rss, _ in lived]
        checks.append(_flat(f"RSS {slot} (pid {pid})", points, start, lived[-1][0], config.window_s, RSS_TOLERANCE))
    return checks


def _halves(start: float, end: float) -> float:
    """The window for table files: half of the judged span, and at least SAWTOOTH_SPAN_S, so
    that each window holds two teeth of the flush-and-compaction sawtooth and its maximum is a
    peak (a shorter run is n/a)."""
    return max((end - start) / 2, SAWTOOTH_SPAN_S)


def _dedupe_bytes(report: SoakReport, table: str, start: float, end: float) -> list[Check]:
    """The dedupe table's files, by kind: table files must be flat (peaks of the first and
    second half); the write-ahead log and the info log must stay within what the store
    settings allow for its stores."""
    samples, stores = report.samples, report.partitions
    series = {kind: [(s.at, float(getattr(s, kind)[table])) for s in samples if table in getattr(s, kind)]
              for kind in ("sst", "wal", "info_log")}
    info_bound = stores * (INFO_LOG_FILES * INFO_LOG_BYTES + 64 * 1024)  # + the line being written past the cap
    return [
        _flat(f"table files {table}", series["sst"], start, end, _halves(start, end), DEDUPE_TOLERANCE, statistic=max),
        _within(f"WAL {table}", series["wal"], 0, "none: the stores write no write-ahead log (runtime/store.py)"),
        _within(f"info log {table}", series["info_log"], info_bound,
                f"{stores} stores x {INFO_LOG_FILES} files of {INFO_LOG_BYTES:,}"),
    ]


def count_repeats(results: list[dict[str, Any]], letters: list[dict[str, Any]], retention_s: float) -> tuple[int, int]:
    """Endings of a task beyond its first: (within ``retention_s`` of its first result,
    after it). Dedupe entries live ``retention_s``, so a copy that reaches a stage later
    (a router down longer than the retention sends its open tasks again when it returns) is
    outside what the runtime promises to catch; a dead letter beside anything counts within."""
    at: dict[str, list[int]] = {}
    for result in results:
        at.setdefault(result["task_id"], []).append(int(result["completed_at"]))
    for letter in letters:
        at.setdefault(letter["task_id"], []).append(-1)  # no completion time: judged strictly
    within = after = 0
    for times in at.values():
        if len(times) < 2:
            continue
        if -1 not in times and max(times) - min(times) > retention_s * 1000:
            after += len(times) - 1
        else:
            within += len(times) - 1
    return within, after


def checks(report: SoakReport) -> list[Check]:
    config, samples = report.config, report.samples
    out = [
        Check("every task ended", report.submitted > 0 and not report.unfinished and report.error is None,
              f"{report.submitted} submitted: {report.results} results, {report.dead_letters} dead letters, "
              f"{len(report.unfinished)} unfinished" + (f" (e.g. {report.unfinished[:3]})" if report.unfinished else "")
              + (f"; error: {report.error.splitlines()[0]}" if report.error else "")),
        Check("no duplicate results", report.duplicates == 0,
              f"{report.duplicates} tasks ended more than once within the dedupe retention "
              f"({report.repeated_after_retention} more after it, outside the dedupe window)"),
        Check("killed workers restarted",
              all(k.error is None and k.later_ended == k.later_tasks for k in report.kills) if report.kills else None,
              "; ".join(f"{k.slot} at {k.at:.0f} s: assigned after {k.to_assigned_s} s, {k.later_ended}/{k.later_tasks} "
                        "later tasks ended" + (f" ({k.error})" if k.error else "")
                        for k in report.kills) or "n/a: no kill in a run this short"),
    ]
    end = report.load_seconds
    for slot in sorted({s for sample in samples for s in sample.rss}):
        out.extend(_rss_checks(report, slot))
    bound = config.rate * config.lag_bound_s
    for agent in sorted({a for s in samples for a in s.lag}):
        during = [s.lag[agent] for s in samples if s.at <= end and s.lag.get(agent) is not None]
        peak = max(during, default=0)
        final = report.final_lag.get(agent)
        out.append(Check(f"lag {agent}", peak <= bound and final == 0,  # type: ignore[operator]
                         f"max {peak} during the load (bound {bound:.0f} = {config.lag_bound_s:g} s of tasks), {final} after"))
    settled = max(2.0 * config.retention_s, config.warmup_s)
    for table in sorted({t for s in samples for t in s.keys}):
        keys = [(s.at, float(k)) for s in samples if (k := s.keys.get(table)) is not None]
        out.append(_flat(f"keys {table}", keys, settled, end, config.window_s, DEDUPE_TOLERANCE))
        out.extend(_dedupe_bytes(report, table, settled, end))
    return out


# -- output -------------------------------------------------------------------------------------
def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def print_report(report: SoakReport, broker_name: str) -> None:
    config = report.config
    print(f"\nsoak: {config.rate:g} tasks/s for {config.minutes:g} min on {broker_name}; kill every {config.kill_every:g} s; "
          f"dedupe retention {config.retention_s} s; model faults {config.fault_rate:.0%}, latency {config.latency} s")
    print(f"{report.submitted} tasks: {report.results} results {json.dumps(report.statuses)}, {report.dead_letters} dead "
          f"letters, {len(report.unfinished)} unfinished, {report.duplicates} duplicates "
          f"(+{report.repeated_after_retention} after the dedupe retention); drained "
          f"{report.drain_seconds} s after the load; {report.injected_faults} model calls failed on purpose (retried)")
    samples = [s for s in report.samples if s.at <= report.load_seconds]
    if samples:
        step = max(1, len(samples) // 12)  # about a dozen rows, whatever the length
        rows = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
        slot_names = list(rows[-1].rss)
        tables = list(rows[-1].keys)
        print("\n  t(s)  " + " ".join(f"{s[:8]:>8}" for s in slot_names) + "  |  "
              + " ".join(f"{a[:8]:>8}" for a in rows[-1].lag) + "  |  " + " ".join(f"{t[:15]:>15}" for t in tables))
        print("        " + " ".join(f"{'RSS MB':>8}" for _ in slot_names) + "  |  "
              + " ".join(f"{'lag':>8}" for _ in rows[-1].lag) + "  |  " + " ".join(f"{'keys / MB':>15}" for _ in tables))
        for s in rows:
            keys = " ".join(f"{('?' if s.keys.get(t) is None else s.keys[t])!s:>8}/{_mb(s.bytes.get(t, 0)):>6}" for t in tables)
            print(f"{s.at:6.0f}  " + " ".join(f"{_mb(s.rss[n]) if n in s.rss else '-':>8}" for n in slot_names) + "  |  "
                  + " ".join(f"{'?' if v is None else v!s:>8}" for v in s.lag.values()) + "  |  " + keys)
    print_checks(report)


def print_checks(report: SoakReport) -> None:
    print("\nchecks:")
    for c in report.checks:
        print(f"  {'n/a ' if c.ok is None else 'ok  ' if c.ok else 'FAIL'} {c.name:<26} {c.detail}")


def report_from_json(path: Path) -> SoakReport:
    """A saved run's report (``bench/out/soak-*.json``), to judge its samples again."""
    saved = json.loads(path.read_text())["report"]
    report = SoakReport(**{**saved, "config": SoakConfig(**saved["config"]),
                           "samples": [Sample(**s) for s in saved["samples"]],
                           "kills": [Kill(**k) for k in saved["kills"]], "checks": []})
    if not report.partitions or not report.remember_turns:  # saved before these were recorded
        topology = load_topology()
        report.partitions = report.partitions or topology.topic_spec("results").partitions
        report.remember_turns = report.remember_turns or topology.sessions.remember_turns
    return report


def recheck(path: Path) -> int:
    """Print the checks of a saved run as this version of the soak judges them."""
    report = report_from_json(path)
    report.checks = checks(report)
    print(f"{path}: judged again by this bench/soak.py (the run's own verdicts are in the file)")
    print_checks(report)
    return 0 if report.ok else 1


def main(argv: list[str]) -> int:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="minutes of load (default 30)")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="tasks submitted per second (default 20)")
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every, help="seconds between SIGKILLs (default 300; 0: none)")
    parser.add_argument("--retention-s", type=int, default=defaults.retention_s, help="dedupe.retention_s of the soak's topology (default 120)")
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate, help="share of model calls failing (default 0.01)")
    parser.add_argument("--latency", default=defaults.latency, help="scripted model seconds per call, or lo-hi (default 0.2-0.6)")
    parser.add_argument("--sample-every", type=float, default=defaults.sample_every, help="seconds between samples (default 10)")
    parser.add_argument("--warmup-s", type=float, default=defaults.warmup_s, help="a worker younger than this is not compared (default 180)")
    parser.add_argument("--window-s", type=float, default=defaults.window_s, help="early and late comparison windows (default 180)")
    parser.add_argument("--lag-bound-s", type=float, default=defaults.lag_bound_s, help="lag bound in seconds of load (default 120)")
    parser.add_argument("--recheck", type=Path, metavar="FILE", help="judge a saved run's samples again (no load)")
    add_broker_argument(parser)
    parser.set_defaults(broker="kafka")
    args = parser.parse_args(argv)
    if args.recheck:
        return recheck(args.recheck)
    config = SoakConfig(minutes=args.minutes, rate=args.rate, kill_every=args.kill_every, retention_s=args.retention_s,
                        fault_rate=args.fault_rate, latency=args.latency, sample_every=args.sample_every,
                        warmup_s=args.warmup_s, window_s=args.window_s, lag_bound_s=args.lag_bound_s)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    with broker(args.broker) as (bootstrap, _, broker_name):
        print(f"soak on {broker_name}; {host['nproc']} x {host['cpu_model']}", flush=True)
        report = run_soak(bootstrap, config, progress=lambda line: print(line, flush=True))
    print_report(report, broker_name)
    out = write_report("soak", stamp, {
        "benchmark": "soak",
        "started": stamp,
        "command": " ".join(sys.orig_argv),  # as invoked: -m bench.soak, bench/soak.py or agentstream bench
        "machine": host,
        "source": source_state("runtime", "specialist", "supervisor", "router"),
        "broker": broker_name,
        "broker_kind": broker_kind(broker_name),
        "report": asdict(report),
        "ok": report.ok,
    })
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
