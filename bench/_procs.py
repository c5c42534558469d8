"""Shared helpers of the agent-stack benchmarks (concurrency, scale-out, recovery, restore, checkpoint cost).

- :class:`Proc`: a worker subprocess whose log lines are kept with the (monotonic) time
  this process read them, so "kill → first ``resuming task`` line" is a difference of two
  clocks on one machine;
- :class:`AgentStack`: router / specialist / supervisor processes under a unique topic
  prefix on one broker (like ``tests/integration/test_durable.py``'s ``DurableStack``);
- :class:`CallLogTail`: the scripted model's call log (``<task> <step> <pid>`` per call,
  written by every specialist process) read as it grows, each line timestamped;
- :func:`owned_partitions`: what a worker owns now, from its assignment log lines;
- :class:`Feeder`: keeps a number of billing tasks outstanding (offered faster than they finish);
- :class:`TopicWatcher`: decoded records of some topics (with their partition), as they arrive;
- :class:`ResourceSampler`: CPU and RSS of a pid over time (psutil);
- :func:`report_header`, :func:`add_trial_arguments`: the JSON report's first fields and the
  ``--window`` / ``--ramp`` / ``--stop-timeout`` / ``--quiet-wait`` / ``--broker`` options;
- ``python -m bench._procs specialist --type T [--max-inflight N] [--model M] [--tools R]``:
  ``agentstream worker specialist`` with what its CLI does not offer, an injected model /
  tool registry (``module:attribute`` factories). A ``max_inflight`` alone needs no launcher:
  the CLI reads ``AGENTSTREAM_MAX_INFLIGHT``, and ``AgentStack.start`` sets it.

Machine facts, the broker choice and py-spy helpers come from ``bench.relay``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agentstream.clients import admin_config, producer_config, reader_config
from agentstream.serde import SchemaSet, SerdeError
from agentstream.settings import (
    MAX_INFLIGHT_ENV, PREFIX_ENV, SCRIPTED_CALL_LOG_ENV, SCRIPTED_LATENCY_ENV, STATE_DIR_ENV, TOPOLOGY_ENV,
)
from agentstream.topology import Topology, load_topology
from agentstream.topology_admin import apply
from bench.relay import add_broker_argument, broker_kind
from bench.relay import broker, machine  # noqa: F401  (re-exported for the benchmarks)

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
KEEP_LOGS_ENV = "BENCH_KEEP_LOGS"  # a directory: worker logs of every trial are copied there
PRELOAD_ENV = "BENCH_SPECIALIST_PRELOAD"  # a module the bench specialist imports first (e.g. timing patches)

log = logging.getLogger("bench")


# -- facts recorded with every result ----------------------------------------------------
def source_state(*packages: str) -> dict[str, Any]:
    """The commit, files changed since under ``services/agentstream/<package>``, and a digest."""
    roots = [REPO / "services" / "agentstream" / p for p in packages]
    files = sorted(f for root in roots for f in root.glob("*.py"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", *map(str, roots)).splitlines()
    commit = git("rev-parse", "--short", "HEAD").strip()
    marker = REPO / ".snapshot-of"  # a `git archive` export of a commit, run outside the checkout
    if not commit and marker.exists():
        commit = f"export of {marker.read_text().strip()}"
    return {
        "commit": commit,
        "uncommitted": [line[3:] for line in changed],
        "packages": list(packages),
        "sha256": digest,
    }


def report_header(name: str, stamp: str, argv: Sequence[str], host: dict[str, Any], broker_name: str,
                  *packages: str) -> dict[str, Any]:
    """The fields every benchmark report starts with: what ran, where, on which code and broker."""
    return {
        "benchmark": name,
        "started": stamp,
        "command": f"python -m bench.{name} " + " ".join(argv),
        "machine": host,
        "source": source_state(*packages),
        "broker": broker_name,
        "broker_kind": broker_kind(broker_name),
    }


def add_trial_arguments(parser: argparse.ArgumentParser) -> None:
    """``--window``, ``--ramp``, ``--stop-timeout``, ``--quiet-wait`` and ``--broker`` of the
    benchmarks that load an agent stack for a while and measure a window of it."""
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds per trial (default 20)")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds of load before the window (default 10)")
    parser.add_argument("--stop-timeout", type=float, default=15.0,
                        help="after the window, SIGTERM the workers and SIGKILL them after this many s (default 15)")
    parser.add_argument("--quiet-wait", type=float, default=15.0,
                        help="before each trial wait up to this many s for other load to settle (default 15)")
    add_broker_argument(parser)


def write_report(name: str, stamp: str, report: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"{name}-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return out


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (slope, intercept)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return slope, my - slope * mx


# -- processes -----------------------------------------------------------------------------
class Proc:
    """A subprocess whose output lines are collected with the monotonic time they were read."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_path: Path | None = None) -> None:
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._log = log_path.open("w") if log_path is not None else None
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        )
        self.pid = self.proc.pid
        self._terminated = False
        self._terminated_at: float | None = None
        self.stop_seconds = float("nan")
        self._reader = threading.Thread(target=self._pump, name=f"pump-{name}", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            with self._lock:
                self.lines.append((now, line.rstrip("\n")))
            if self._log is not None:
                self._log.write(line)
        if self._log is not None:
            self._log.flush()

    def line_count(self) -> int:
        with self._lock:
            return len(self.lines)

    def matching(self, pattern: str, after: int = 0) -> list[tuple[float, str]]:
        regex = re.compile(pattern)
        with self._lock:
            return [(t, line) for t, line in self.lines[after:] if regex.search(line)]

    def wait_for_line(self, pattern: str, timeout: float = 60.0, after: int = 0) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(pattern, after)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the pump read the last lines
                found = self.matching(pattern, after)
                if found:
                    return found[0]
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before logging {pattern!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not log {pattern!r} within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, n: int = 30) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines[-n:])

    def kill(self) -> float:
        """SIGKILL; return the monotonic time the signal was sent."""
        at = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return at

    def terminate(self) -> None:
        """SIGTERM once: a second one can land after the worker's own handler is gone."""
        if self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self._terminated_at = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` s; ``stop_seconds`` is how long the SIGTERM took."""
        self.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.stop_seconds = time.monotonic() - (self._terminated_at or time.monotonic())
        self._reader.join(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


def assigned_partitions(line: str) -> set[int]:
    """Partitions of the input topic named in a processor's ``assigned ...`` log line."""
    return {int(p) for p in re.findall(r"\.v1\[(\d+)\]", line.partition(": assigned ")[2])}


def owned_partitions(proc: Proc) -> set[int]:
    """What a processor owns now: its assigned / revoked / lost lines applied in order
    (eager assignment revokes everything and assigns the whole set; incremental, KIP-848,
    names only the partitions that move)."""
    owned: set[int] = set()
    for _, line in proc.matching(r": (assigned|revoked|lost) "):
        found = re.search(r": (assigned|revoked|lost) (.*)$", line)
        assert found is not None
        named = {int(p) for p in re.findall(r"\.v1\[(\d+)\]", found.group(2))}
        if found.group(1) == "assigned":
            owned |= named
        else:
            owned -= named
    return owned


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# -- the stack -----------------------------------------------------------------------------
class AgentStack:
    """Router, specialist(s) and supervisor processes under a unique prefix on one broker."""

    def __init__(
        self, bootstrap: str, base: Path, *, latency: str = "", topology_path: Path | None = None,
        env: dict[str, str] | None = None, prefix: str | None = None, call_log: bool = True,
    ) -> None:
        self.bootstrap = bootstrap
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix or f"b{uuid.uuid4().hex[:8]}"
        self.topology_path = topology_path
        self.topology: Topology = load_topology(topology_path, prefix=self.prefix)
        apply(AdminClient(admin_config(bootstrap)), self.topology)
        self.call_log = base / "calls.log"
        self.call_log.touch()
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            PREFIX_ENV: self.prefix,
            **({SCRIPTED_CALL_LOG_ENV: str(self.call_log)} if call_log else {}),
            **({SCRIPTED_LATENCY_ENV: latency} if latency else {}),
            **({TOPOLOGY_ENV: str(topology_path)} if topology_path else {}),
            **(env or {}),
        }
        self.workers: dict[str, Proc] = {}
        self.schemas = SchemaSet.load()

    def start(self, name: str, kind: str, *, agent_type: str = "billing", max_inflight: int | None = None,
              model: str | None = None, tools: str | None = None, env: dict[str, str] | None = None) -> Proc:
        """``kind`` router / supervisor / specialist. A specialist runs through the real CLI
        (``max_inflight`` through its environment variable) unless ``model`` or ``tools``
        asks for this module's launcher."""
        if kind == "specialist" and (model or tools):
            args = ["-m", "bench._procs", "specialist", "--type", agent_type]
            args += ["--model", model] if model else []
            args += ["--tools", tools] if tools else []
        elif kind == "specialist":
            args = ["-m", "agentstream", "worker", "specialist", "--type", agent_type]
        else:
            args = ["-m", "agentstream", "worker", kind]
        cap = {MAX_INFLIGHT_ENV: str(max_inflight)} if max_inflight else {}
        worker_env = {**self.env, STATE_DIR_ENV: str(self.base / name), **cap, **(env or {})}
        proc = Proc(name, args, worker_env, self.base / f"{name}.log")
        self.workers[name] = proc
        return proc

    def wait_assigned(self, timeout: float = 90.0) -> None:
        for worker in self.workers.values():
            worker.wait_for_line(r": assigned ", timeout)

    def stop_all(self, timeout: float = 60.0) -> dict[str, int]:
        for worker in self.workers.values():
            worker.terminate()
        return {name: worker.stop(timeout) for name, worker in self.workers.items()}

    def keep_logs(self, dest: Path) -> None:
        """Copy the workers' logs to ``dest`` (kept when BENCH_KEEP_LOGS is set, for investigations)."""
        dest.mkdir(parents=True, exist_ok=True)
        for name in self.workers:
            with contextlib.suppress(OSError):
                shutil.copy(self.base / f"{name}.log", dest / f"{name}.log")

    def producer(self) -> Producer:
        return Producer(producer_config(self.bootstrap, {"linger.ms": 5}))

    def submit(self, tasks: Iterable[dict[str, Any]], producer: Producer | None = None) -> list[int]:
        """Produce TaskSubmitted records; return the partition of each (from delivery reports)."""
        own = producer is None
        producer = producer or self.producer()
        topic = self.topology.topic("tasks")
        partitions: list[int] = []
        errors: list[str] = []

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                partitions.append(msg.partition())

        for task in tasks:
            while True:
                try:
                    producer.produce(topic, self.schemas.encode("TaskSubmitted", task), task["session_id"], on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        if own:
            if producer.flush(60) or errors:
                raise RuntimeError(f"submitting tasks failed: {errors[:3]}")
        return partitions

    def topic_names(self) -> list[str]:
        return [spec.name for spec in self.topology.all_topics()]

    def delete_topics(self) -> None:
        """Tansu keeps everything in memory: free this stack's topics (harmless if it fails)."""
        with contextlib.suppress(Exception):
            admin = AdminClient(admin_config(self.bootstrap))
            for future in admin.delete_topics(self.topic_names()).values():
                future.result(30)


def group_type(bootstrap: str, group: str) -> str:
    """The protocol a group runs, as the broker describes it: ``consumer`` (KIP-848) or ``classic``,
    with its assignor; ``unknown (...)`` where the broker cannot say. Tansu (classic only) answers
    the describe with type ``consumer`` and a member id for the assignor, so it is not asked."""
    from agentstream.broker import is_tansu

    try:
        if is_tansu(bootstrap):
            return "unknown (Tansu: classic protocol only)"
        admin = AdminClient(admin_config(bootstrap, {"log_level": 0}))
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
    except Exception as exc:  # KafkaException, or a broker without DescribeGroups/ConsumerGroupDescribe
        return f"unknown ({exc})"
    return f"{description.type.name.lower()} (assignor {description.partition_assignor or '?'})"


def billing_task(index: int, run: str, session: str, text: str = "Please check invoice INV-1001 for me") -> dict[str, Any]:
    from agentstream.client import new_task

    return new_task(text, session, "bench", task_id=f"t-{run}-{index:06d}", requested_agent="billing")


def partition_map(bootstrap: str, keys: Sequence[str], partitions: int) -> dict[str, int]:
    """The partition each key lands on with our producer settings, from librdkafka itself
    (delivery reports of a scratch topic), so no partitioner is re-implemented here."""
    topic = f"bench.partition-probe.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(admin_config(bootstrap))
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)
    found: dict[str, int] = {}
    producer = Producer(producer_config(bootstrap, {"linger.ms": 5}))

    def delivered(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            found[msg.key().decode()] = msg.partition()

    for key in keys:
        producer.produce(topic, b"", key, on_delivery=delivered)
    producer.flush(30)
    with contextlib.suppress(Exception):
        for future in admin.delete_topics([topic]).values():
            future.result(30)
    return found


# -- observers -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Call:
    at: float  # monotonic time the line was read (≤ 20 ms after it was written)
    task: str
    step: int
    pid: int


class CallLogTail(threading.Thread):
    """Reads the scripted model's call log as it grows."""

    def __init__(self, path: Path, interval: float = 0.02) -> None:
        super().__init__(name="call-log", daemon=True)
        self.path = path
        self.interval = interval
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._partial = ""

    def run(self) -> None:
        with self.path.open() as source:
            while not self._halt.is_set():
                self._read(source)
                time.sleep(self.interval)
            self._read(source)

    def _read(self, source: Any) -> None:
        chunk = source.read()
        if not chunk:
            return
        now = time.monotonic()
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()  # a line still being written
        parsed = []
        for line in lines:
            parts = line.split()
            if len(parts) == 3:
                parsed.append(Call(now, parts[0], int(parts[1]), int(parts[2])))
        with self._lock:
            self.calls.extend(parsed)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def count(self) -> int:
        with self._lock:
            return len(self.calls)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class TopicWatcher(threading.Thread):
    """Decoded records of ``topics`` from offset 0, with their arrival time; no group."""

    def __init__(self, bootstrap: str, topics: Sequence[str], schemas: SchemaSet, partitions: int) -> None:
        super().__init__(name="watcher", daemon=True)
        self.consumer = Consumer(reader_config(bootstrap, {"enable.partition.eof": False}))
        self.consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(partitions)])
        self.schemas = schemas
        self.records: list[tuple[float, str, int, str, dict[str, Any]]] = []  # (arrival, topic, partition, schema, record)
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._callbacks: list[Callable[[str, dict[str, Any]], None]] = []

    def on_record(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        self._callbacks.append(callback)

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                first = self.consumer.poll(0.1)
                batch = [first, *self.consumer.consume(500, 0)] if first is not None else []
                now = time.monotonic()
                decoded = []
                for msg in batch:
                    if msg.error() is not None or msg.value() is None:
                        continue
                    try:
                        name, record = self.schemas.decode(msg.value())
                    except SerdeError:
                        continue
                    decoded.append((now, msg.topic(), msg.partition(), name, record))
                if decoded:
                    with self._lock:
                        self.records.extend(decoded)
                    for _, _, _, name, record in decoded:
                        for callback in self._callbacks:
                            callback(name, record)
        finally:
            self.consumer.close()

    def of(self, schema: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(at, record) for at, _, _, name, record in self.records if name == schema]

    def partitioned(self, schema: str) -> list[tuple[int, dict[str, Any]]]:
        """(partition, record) of ``schema``: on a per-session topic, the partition of its session."""
        with self._lock:
            return [(partition, record) for _, _, partition, name, record in self.records if name == schema]

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


class Feeder(threading.Thread):
    """Keeps ``outstanding`` billing tasks (one session each) submitted but without a specialist
    result: a queue always waits in front of the specialists."""

    def __init__(self, stack: AgentStack, outstanding: int, run: str) -> None:
        super().__init__(name="feeder", daemon=True)
        self.stack = stack
        self.outstanding = outstanding
        self.run_id = run
        self.submitted = 0
        self.finished = 0  # specialist results of measured tasks (set by the watcher callback)
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def on_record(self, schema: str, record: dict[str, Any]) -> None:
        if schema == "SpecialistResult" and record["task_id"].startswith(f"t-{self.run_id}-"):
            self.finished += 1

    def run(self) -> None:
        producer = self.stack.producer()
        try:
            while not self.stopping.is_set():
                want = self.outstanding - (self.submitted - self.finished)
                if want > 0:
                    batch = [billing_task(self.submitted + i, self.run_id, f"s-{self.run_id}-{self.submitted + i}")
                             for i in range(want)]
                    self.stack.submit(batch, producer)
                    self.submitted += want
                producer.poll(0)
                self.stopping.wait(0.05)
            producer.flush(30)
        except BaseException as exc:  # reported by the trial
            self.error = exc


class ResourceSampler(threading.Thread):
    """CPU seconds (user+system, all threads) and RSS of some pids, sampled every ``interval`` s."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        super().__init__(name="sampler", daemon=True)
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.samples: list[tuple[float, dict[str, tuple[float, int]]]] = []  # (t, name -> (cpu s, rss))
        self.machine: list[tuple[float, float]] = []  # (t, busy CPU seconds of the machine since boot)
        self._halt = threading.Event()

    def sample(self) -> dict[str, tuple[float, int]]:
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(Exception):
                cpu = proc.cpu_times()
                out[name] = (cpu.user + cpu.system, proc.memory_info().rss)
        return out

    def run(self) -> None:
        from bench.relay import machine_busy_seconds

        while not self._halt.is_set():
            now = time.monotonic()
            self.samples.append((now, self.sample()))
            self.machine.append((now, machine_busy_seconds()))
            self._halt.wait(self.interval)

    def machine_between(self, start: float, end: float) -> float:
        """Cores the whole machine kept busy between two sample times (all processes, anyone's)."""
        inside = [(t, busy) for t, busy in self.machine if start <= t <= end]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def between(self, start: float, end: float) -> list[tuple[float, dict[str, tuple[float, int]]]]:
        return [s for s in self.samples if start <= s[0] <= end]

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


# -- the specialist launcher ---------------------------------------------------------------
def _load(ref: str) -> Any:
    module, _, attribute = ref.partition(":")
    factory = getattr(importlib.import_module(module), attribute)
    return factory()


def specialist_main(argv: list[str]) -> int:
    """``agentstream worker specialist`` (cli.cmd_worker) with overrides its CLI lacks."""
    from agentstream.cli import _health_server, _settings_and_topology, _setup_logging
    from agentstream.runtime.collector import tune_for_serving
    from agentstream.runtime.delivery_pump import new_serving_loop
    from agentstream.specialist.app import build_specialist

    parser = argparse.ArgumentParser(prog="python -m bench._procs specialist")
    parser.add_argument("--type", required=True)
    parser.add_argument("--max-inflight", type=int)
    parser.add_argument("--model", help="module:factory returning a Model (default: the topology's)")
    parser.add_argument("--tools", help="module:factory returning a ToolRegistry (default: the demo tools)")
    args = parser.parse_args(argv)
    _setup_logging(argparse.Namespace(command="worker", verbose=False))  # as `agentstream worker` logs
    if os.environ.get(PRELOAD_ENV):
        importlib.import_module(os.environ[PRELOAD_ENV])  # scratch instrumentation, for profiling sessions
    settings, topology = _settings_and_topology(max_inflight=args.max_inflight)
    service = build_specialist(
        args.type, settings, topology, SchemaSet.load(),
        model=_load(args.model) if args.model else None, tools=_load(args.tools) if args.tools else None,
    )
    logging.getLogger("bench").info("specialist %s: max_inflight=%d", args.type, settings.max_inflight)
    # As cmd_worker serves: its metrics port (when AGENTSTREAM_METRICS_PORT is set), the
    # collector tuned for serving and the loop that serves delivery reports as it wakes.
    # Without the tuning (until session 10) the bench measured a specialist the CLI never
    # runs: one collecting its youngest generation every 700 allocations, with every loop
    # in flight walked again by the older ones.
    server = _health_server(service.processor, settings.metrics_port)
    tune_for_serving()
    try:
        with asyncio.Runner(loop_factory=new_serving_loop) as runner:
            stats = runner.run(service.processor.run(handle_signals=True))
    finally:
        if server is not None:
            server.stop()
    logging.getLogger("agentstream").info("worker %s exiting: %d processed, %d failed", service.agent, stats.processed, stats.failed)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["specialist"]:
        sys.exit(specialist_main(sys.argv[2:]))
    sys.exit("usage: python -m bench._procs specialist --type TYPE [--max-inflight N] [--model M] [--tools R]")
