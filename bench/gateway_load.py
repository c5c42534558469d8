"""Gateway load benchmark: HTTP clients submitting tasks and following them by Server-Sent
Events to the result, against the same tasks sent straight to Kafka and awaited on the
topics, in the same run (issue 16). The difference is what the gateway adds.

    python -m bench.gateway_load [--clients 200] [--rounds 3] [--latency 0.5] [--seconds 300]
                                 [--ramp 2] [--rate R --duration 60] [--profile] [--broker kafka|tansu]

The real processes, as ``bench.waiting_memory`` and the others start them (bench/_procs.py):
``agentstream worker router``, ``... specialist --type billing`` and ``... supervisor`` on the
support desk's topology under a fresh prefix, with the scripted model answering each call
after ``--latency`` seconds (a billing task makes two calls), and ``agentstream gateway`` on
127.0.0.1 (loopback only) with a tenants file of one tenant without limits.

Every task is "Please check invoice INV-1001 for me", agent billing, a session of its own.
Two phases, the baseline first, then the gateway:

- ``kafka`` (the baseline): the TaskSubmitted produced with the gateway's own producer
  (gateway/producer.py: ``await send`` returns on the broker's acknowledgement), the task's
  first TaskEvent and its TaskResult seen by a group-less reader of task-events and results
  in this process;
- ``gateway``: ``POST /v1/tasks`` then ``GET /v1/tasks/{id}/events`` to its ``result`` event,
  through ``agentstream.AsyncGatewayClient``, ``--clients`` clients (each its own connection
  pool), all made before the phases start.

The load shape, in both phases alike:

- rounds (the default): ``--clients`` callers starting ``--ramp`` seconds apart in all, each
  running ``--rounds`` tasks one after the other (a closed loop: a slow path submits less);
- steady (``--rate R``, issue 16's shape): ``R x --duration`` tasks, task i started at i/R
  seconds on a clock whatever the earlier ones are doing (an open loop), each followed to its
  result; how far the starts fell behind their due times is reported (this process late,
  not the gateway). In the gateway phase every client also holds a watcher stream open the
  whole time (bench/gateway_steady.py says how), so at least ``--clients`` SSE streams are
  open at every moment, plus one per task in flight. Task i runs on client i mod ``--clients``.

Per task, from the caller's first byte: submit latency (the 202 / the acknowledgement),
time to the first progress event, time to the result (the SSE result comes after the
task's terminal progress event, the protocol's order). Errors: a refused or failed request,
a stream without a result, a result not COMPLETED, a task unfinished ``--seconds`` after the
phase began (steady: after its last task started), a watcher stream that ended. Every stream,
the watchers' too, is checked against task-events by event id (``e<offset>``: the record's
position): TaskEvents of its task it never sent (lost), ids sent twice (repeated), an id
earlier than one already sent (out of order). The gateway's own gauge of open SSE streams is
read every second of its phase. Warm-up: a few tasks through each path first, not measured.
The gateway's CPU seconds per phase are read from /proc (psutil); in the steady gateway
phase they include the watchers' keep-alives and the gauge's reads.
``--profile`` attaches ``py-spy record --gil`` to the gateway for its measured phase, prints
its top functions and keeps the raw profile under bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import math
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from confluent_kafka import Consumer, TopicPartition

from agentstream.client import new_task
from agentstream.clients import reader_config
from agentstream.events import TASK_EVENT, TASK_RESULT, TASK_SUBMITTED
from agentstream.runtime.lag import end_offsets
from agentstream.serde import SchemaSet
from agentstream.settings import GATEWAY_HOST_ENV, STATE_DIR_ENV
from bench._procs import OUT_DIR, REPO, AgentStack, Proc, broker, machine, percentile, report_header, write_report
from bench.gateway_steady import (StreamGauge, Watchers, faults_total, lost_offsets, on_schedule, planned_tasks,
                                  schedule_summary, stream_faults)
from bench.relay import PY_SPY, add_broker_argument, start_profiler, stop_profiler, summarize_profile
from tests.integration.harness import free_port

if TYPE_CHECKING:  # the gateway and client extras: imported where used, after main() checked them
    from agentstream import AsyncGatewayClient
    from agentstream.gateway.producer import AsyncProducer

AGENT = "billing"
TENANT = "bench"
TEXT = "Please check invoice INV-1001 for me"
COMPLETED = "COMPLETED"
READY_TIMEOUT_S = 120.0
WARM_UP_CLIENTS = 5
CATCH_UP_S = 30.0  # the reader of the topics is behind the streams by a poll or two
PROFILE_TOP = 15  # functions printed per view of the profile
PROFILE_KEEP = 200  # functions kept per view in the JSON report (the raw file has every stack)
LACKED_SHOWN = 10  # lines printed of the events streams lacked (the report keeps 50)
ENTRY_SHARE = 0.99  # of the busiest thread's samples: an inclusive share this high is its entry chain


# -- what one task and one phase measured ----------------------------------------------------
@dataclass
class Sample:
    task_id: str
    submit_s: float
    first_event_s: float
    result_s: float
    events: int = 0  # progress events the caller received (gateway) or the reader saw (kafka)
    repeated: int = 0  # event ids a stream sent twice
    event_ids: list[str] = field(default_factory=list)  # the stream's progress event ids as received (gateway)


@dataclass
class Phase:
    path: str
    planned: int  # tasks the phase was to run
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    gateway_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0  # this process: the callers (HTTP and SSE parsing, or the producer) and the reader
    loadavg: str = ""  # the machine's 1-minute load average at the end: other jobs share it
    rate: float = 0.0  # steady mode: tasks per second on the clock
    behind: list[float] = field(default_factory=list)  # steady mode: each task's start after its due time, s
    began: list[float] = field(default_factory=list)  # steady mode: each task's start (monotonic)

    def summary(self) -> dict[str, Any]:
        def quantiles(values: list[float]) -> dict[str, float]:
            return {"p50_ms": 1000 * percentile(values, 0.5), "p99_ms": 1000 * percentile(values, 0.99)}

        done = len(self.samples)
        return {
            "path": self.path, "tasks": done, "errors": len(self.errors), "wall_s": self.wall_s,
            "tasks_per_s": done / self.wall_s if self.wall_s else math.nan,
            "submit": quantiles([s.submit_s for s in self.samples]),
            "first_event": quantiles([s.first_event_s for s in self.samples]),
            "result": quantiles([s.result_s for s in self.samples]),
            "gateway_cpu_ms_per_task": 1000 * self.gateway_cpu_s / done if done else math.nan,
            "bench_cpu_ms_per_task": 1000 * self.bench_cpu_s / done if done else math.nan,
            "loadavg_1m_at_end": self.loadavg,
            **({"schedule": schedule_summary(self.rate, self.behind, self.began)} if self.rate else {}),
        }


# -- the topics, as a reader in this process sees them ---------------------------------------
@dataclass
class Seen:
    """One task on task-events and results: arrival times (monotonic) and its TaskEvents' offsets."""

    first: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    first_at: float = math.nan
    done_at: float = math.nan
    status: str = ""
    # Its TaskEvents by offset on task-events (the SSE ids' positions): "stage kind state", when read.
    read: dict[int, tuple[str, float]] = field(default_factory=dict)

    @property
    def offsets(self) -> list[int]:
        return list(self.read)

    @property
    def after_result_s(self) -> float:
        """How long after its result this reader had the task's last TaskEvent (0: none came
        later, to a poll's resolution; NaN: no result). The supervisor sends the terminal STATE
        event once the result is acknowledged; a stream waits for it a grace period only
        (gateway/stream_gate.py)."""
        if not self.done.is_set():
            return math.nan
        return max((at - self.done_at for _, at in self.read.values() if at > self.done_at), default=0.0)

    def described(self, offset: int) -> str:
        """A TaskEvent of this task, for a stream that lacked it: what it was and when this
        reader had it, against the result (a late terminal event and a gap read differently)."""
        label, at = self.read[offset]  # lost_offsets names only offsets this reader had
        when = f"{1000 * (at - self.done_at):+.0f} ms from the result" if self.done.is_set() else "(no result)"
        return f"e{offset} ({label}) read {when}"

    @property
    def events(self) -> int:
        return len(self.offsets)


class TopicTimes(threading.Thread):
    """Follows task-events and results from their ends (no group) and hands each task's
    records to the event loop, which keeps a :class:`Seen` per task id. A reader of its own
    rather than ``agentstream.client.Follower``: the stream check needs each record's offset."""

    def __init__(self, bootstrap: str, topics: list[str], schemas: SchemaSet, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="topic-times", daemon=True)
        self.bootstrap, self.topic_names, self.schemas, self.loop = bootstrap, topics, schemas, loop
        self.consumer = Consumer(reader_config(bootstrap, {"enable.partition.eof": False}))
        self.starts = end_offsets(bootstrap, topics)
        self.consumer.assign([TopicPartition(t, p, end) for (t, p), end in self.starts.items()])
        self.tasks: dict[str, Seen] = {}
        self.positions: dict[tuple[str, int], int] = {}  # where the reader is, for "has it read to the end"
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                first = self.consumer.poll(0.1)
                batch = [first, *self.consumer.consume(500, 0)] if first is not None else []
                records = [(str(m.topic()), int(m.offset() or 0), *self.schemas.decode(m.value()))
                           for m in batch if m.error() is None and m.value() is not None]
                if records:
                    self.loop.call_soon_threadsafe(self._note, time.monotonic(), records)
                self.positions = {(tp.topic, tp.partition): tp.offset
                                  for tp in self.consumer.position(self.consumer.assignment())}
        finally:
            self.consumer.close()

    def _note(self, at: float, records: list[tuple[str, int, str, dict[str, Any]]]) -> None:
        for _, offset, name, record in records:
            seen = self.of(record["task_id"])
            if name == TASK_EVENT:
                seen.read[offset] = (f"{record['stage']} {record['kind']} {record['state']}", at)
                if not seen.first.is_set():
                    seen.first_at = at
                    seen.first.set()
            elif name == TASK_RESULT and not seen.done.is_set():
                seen.done_at, seen.status = at, record["status"]
                seen.done.set()

    def of(self, task_id: str) -> Seen:
        return self.tasks.setdefault(task_id, Seen())

    async def read_to_end(self, timeout: float) -> None:
        """Wait until this reader has handed on every record now on its topics."""
        ends = end_offsets(self.bootstrap, self.topic_names)
        deadline = time.monotonic() + timeout
        # A partition with nothing new since the start has no position yet (librdkafka: -1001).
        while any(self.positions.get(tp, -1) < end for tp, end in ends.items() if end > self.starts.get(tp, 0)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the reader of {', '.join(self.topic_names)} did not reach {ends} "
                                   f"in {timeout:.0f} s")
            await asyncio.sleep(0.1)  # the reader's poll interval
        await asyncio.sleep(0)  # let the loop run the hand-overs the thread queued before its position moved

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


# -- one task by each path --------------------------------------------------------------------
async def kafka_task(producer: AsyncProducer, topic: str, schemas: SchemaSet, topics: TopicTimes) -> Sample:
    """Produce the TaskSubmitted as the gateway does; await its first event and its result."""
    task_id = f"task-{uuid.uuid4().hex[:12]}"
    task = new_task(TEXT, f"s-{task_id}", TENANT, task_id=task_id, requested_agent=AGENT)
    seen = topics.of(task_id)
    start = time.monotonic()
    await producer.send(topic, schemas.encode(TASK_SUBMITTED, task), task["session_id"])
    submitted = time.monotonic()
    await seen.done.wait()
    if seen.status != COMPLETED:
        raise RuntimeError(f"task {task_id} ended {seen.status}")
    first = seen.first_at if seen.first.is_set() else seen.done_at
    return Sample(task_id, submitted - start, first - start, seen.done_at - start, seen.events)


async def gateway_task(client: AsyncGatewayClient) -> Sample:
    """POST the task, then follow its events to the result."""
    start = time.monotonic()
    task_id = await client.submit(TEXT, agent=AGENT)
    submitted = time.monotonic()
    first, ids = math.nan, list[str]()
    async for event in client.events(task_id):
        now = time.monotonic()
        first = now if math.isnan(first) else first
        if event.kind == "result":
            status = event.data["result"]["status"]
            if status != COMPLETED:
                raise RuntimeError(f"task {task_id} ended {status}")
            return Sample(task_id, submitted - start, first - start, now - start, len(set(ids)),
                          len(ids) - len(set(ids)), ids)
        ids.append(event.id)
    raise RuntimeError(f"the event stream of task {task_id} ended without its result")


# -- a phase: callers in parallel each running its rounds, or tasks on a clock -----------------
TaskOf = Callable[[int], Awaitable[Sample]]  # task number -> one task run by a path, measured


async def run_phase(path: str, clients: int, rounds: int, seconds: float, ramp: float, task: TaskOf,
                    gateway_cpu: Callable[[], float]) -> Phase:
    """``clients`` callers started over ``ramp`` s, caller i running task i ``rounds`` times
    one after the other."""
    phase = Phase(path, clients * rounds)
    meter = Meter(gateway_cpu)

    async def staggered(index: int) -> None:
        await asyncio.sleep(ramp * index / clients)  # the callers' start times, spread over the ramp
        for _ in range(rounds):
            await _recorded(phase, task(index))

    running = [asyncio.create_task(staggered(i)) for i in range(clients)]
    await meter.finish(phase, running, seconds)
    return phase


async def run_steady(path: str, rate: float, duration: float, seconds: float, task: TaskOf,
                     gateway_cpu: Callable[[], float]) -> Phase:
    """Task i started at i / rate s on the clock (gateway_steady.on_schedule); the stragglers
    get ``seconds`` after the last one started."""
    phase = Phase(path, planned_tasks(rate, duration), rate=rate)
    meter = Meter(gateway_cpu)

    async def start_one(index: int, behind: float) -> None:
        phase.behind.append(behind)
        phase.began.append(time.monotonic())
        await _recorded(phase, task(index))

    running = await on_schedule(rate, phase.planned, start_one)
    await meter.finish(phase, running, seconds)
    return phase


class Meter:
    """A phase's wall time and CPU (the gateway's and this process's) from its start."""

    def __init__(self, gateway_cpu: Callable[[], float]) -> None:
        self.gateway_cpu = gateway_cpu
        self.cpu_before, self.own_before, self.start = gateway_cpu(), time.process_time(), time.monotonic()

    async def finish(self, phase: Phase, running: list[asyncio.Task[None]], seconds: float) -> None:
        """Wait up to ``seconds`` for ``running``, cancel the rest, and fill in the phase's figures."""
        if running:
            _, pending = await asyncio.wait(running, timeout=seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        phase.wall_s = time.monotonic() - self.start
        phase.gateway_cpu_s = self.gateway_cpu() - self.cpu_before
        phase.bench_cpu_s = time.process_time() - self.own_before
        phase.loadavg = Path("/proc/loadavg").read_text().split()[0]
        unfinished = phase.planned - len(phase.samples) - len(phase.errors)
        if unfinished > 0:
            phase.errors.append(f"{unfinished} tasks unfinished after {seconds:.0f} s")


def kafka_tasks(producer: AsyncProducer, topic: str, schemas: SchemaSet, topics: TopicTimes) -> TaskOf:
    return lambda index: kafka_task(producer, topic, schemas, topics)


def gateway_tasks(clients: list[AsyncGatewayClient]) -> TaskOf:
    """Task ``index`` runs on ``clients[index mod len]`` (rounds: caller i's every task on
    client i). The clients are made before any phase: building an httpx client loads the CA
    bundle (~30 ms of CPU), which 200 callers starting at once would otherwise spend on this
    process's event loop inside the measured window."""
    return lambda index: gateway_task(clients[index % len(clients)])


async def _recorded(phase: Phase, task: Awaitable[Sample]) -> None:
    try:
        phase.samples.append(await task)
    except Exception as exc:  # every failure is a figure of the run: counted, first ones shown
        phase.errors.append(f"{type(exc).__name__}: {exc}")


async def stream_check(streams: dict[str, list[str]], topics: TopicTimes) -> tuple[dict[str, int], list[str]]:
    """Each stream's event ids (task id -> ids as received) against its task's TaskEvents on
    task-events, once the reader has read everything now on the topics: the totals, and a
    line for each event a stream lacked (what it was, and when it came)."""
    await topics.read_to_end(CATCH_UP_S)
    seen = {task_id: topics.of(task_id) for task_id in streams}
    totals = faults_total(stream_faults(ids, seen[task_id].offsets) for task_id, ids in streams.items())
    lacked = [f"{task_id}: {seen[task_id].described(offset)}; the stream's last id {ids[-1] if ids else None}"
              for task_id, ids in streams.items() for offset in lost_offsets(ids, seen[task_id].offsets)]
    return totals, lacked


def events_after_result(phase: Phase, topics: TopicTimes) -> dict[str, float]:
    """Per task of ``phase``: how long after the result its last TaskEvent came (the reader's
    times), p50, p99 and max in ms."""
    gaps = [gap for sample in phase.samples if not math.isnan(gap := topics.of(sample.task_id).after_result_s)]
    return {"p50_ms": 1000 * percentile(gaps, 0.5), "p99_ms": 1000 * percentile(gaps, 0.99),
            "max_ms": 1000 * max(gaps, default=math.nan)}


# -- the run -------------------------------------------------------------------------------------
def write_tenants(path: Path) -> str:
    """A tenants file of one tenant without limits; its API key."""
    from agentstream.tenancy import hash_api_key

    key = secrets.token_urlsafe(32)
    tenants = {"tenants": {TENANT: {"api_keys": [{"name": "bench", "hash": hash_api_key(key), "roles": ["submitter"]}]}}}
    path.write_text(yaml.safe_dump(tenants))
    return key


def start_gateway(stack: AgentStack, tenants: Path) -> tuple[Proc, str]:
    port = free_port()
    env = {**stack.env, STATE_DIR_ENV: str(stack.base / "gateway"), GATEWAY_HOST_ENV: "127.0.0.1"}
    proc = Proc("gateway", ["-m", "agentstream", "gateway", "--port", str(port), "--tenants", str(tenants)], env,
                stack.base / "gateway.log")
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: Proc, url: str) -> None:
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"the gateway exited ({proc.proc.returncode}):\n{proc.tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)  # the poll interval of the readiness check
    raise TimeoutError(f"the gateway was not ready within {READY_TIMEOUT_S:.0f} s:\n{proc.tail()}")


def gateway_cpu_reader(pid: int) -> Callable[[], float]:
    import psutil

    process = psutil.Process(pid)

    def cpu() -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    return cpu


async def measure(stack: AgentStack, url: str, key: str, gateway_pid: int, args: argparse.Namespace,
                  profile_to: Path | None) -> dict[str, Any]:
    from agentstream import AsyncGatewayClient
    from agentstream.gateway.producer import AsyncProducer

    topology = stack.topology
    topics = TopicTimes(stack.bootstrap, [topology.topic("task_events"), topology.topic("results")], stack.schemas,
                        asyncio.get_running_loop())
    topics.start()
    producer = AsyncProducer(stack.bootstrap)
    to_kafka = kafka_tasks(producer, topology.topic("tasks"), stack.schemas, topics)
    clients = [AsyncGatewayClient(url, api_key=key) for _ in range(args.clients)]  # each its own connections
    to_gateway = gateway_tasks(clients)
    cpu = gateway_cpu_reader(gateway_pid)
    try:
        warm = min(WARM_UP_CLIENTS, args.clients)
        for path, task in (("kafka", to_kafka), ("gateway", to_gateway)):
            warm_up = await run_phase(path, warm, 1, args.seconds, 0, task, cpu)
            if warm_up.errors:
                raise RuntimeError(f"the {path} warm-up failed: {warm_up.errors[:3]}")
        baseline = await shaped_phase("kafka", to_kafka, args, cpu)
        loaded, streams, open_streams = await gateway_phase(url, clients, to_gateway, args, cpu,
                                                            (gateway_pid, profile_to))
        checked, lacked = await stream_check(streams, topics)
        after_result = {phase.path: events_after_result(phase, topics) for phase in (baseline, loaded)}
    finally:
        producer.close()
        topics.stop()
        await asyncio.gather(*(client.aclose() for client in clients))
    return {"baseline": baseline, "gateway": loaded, "streams": checked, "lacked": lacked,
            "after_result": after_result, "open_streams": open_streams}


async def shaped_phase(path: str, task: TaskOf, args: argparse.Namespace, cpu: Callable[[], float]) -> Phase:
    if args.rate:
        return await run_steady(path, args.rate, args.duration, args.seconds, task, cpu)
    return await run_phase(path, args.clients, args.rounds, args.seconds, args.ramp, task, cpu)


async def gateway_phase(url: str, clients: list[AsyncGatewayClient], task: TaskOf, args: argparse.Namespace,
                        cpu: Callable[[], float], profiled: tuple[int, Path | None],
                        ) -> tuple[Phase, dict[str, list[str]], dict[str, Any]]:
    """The measured gateway phase: steady mode opens the watcher streams first (and waits
    until the gateway holds them); the gateway's open-stream gauge is read all along, and
    py-spy attached to ``profiled`` (pid, output) when an output is given. Returns the
    phase, every stream's event ids (task id -> ids, the watchers' too) and the gauge's range."""
    watchers, gauge, stop = Watchers(clients), StreamGauge(url), asyncio.Event()
    pid, profile_to = profiled
    try:
        if args.rate:
            await watchers.open()
            await gauge.wait_at_least(len(clients), READY_TIMEOUT_S)
        sampling = asyncio.create_task(gauge.sample(stop))
        spy = start_profiler(pid, profile_to) if profile_to is not None else None
        try:
            loaded = await shaped_phase("gateway", task, args, cpu)
        finally:
            if spy is not None:
                await asyncio.to_thread(stop_profiler, spy)  # it waits for py-spy to write its file
        stop.set()
        await sampling
        loaded.errors += watchers.errors
    finally:
        await watchers.close()
        await gauge.aclose()
    streams = {sample.task_id: sample.event_ids for sample in loaded.samples} | watchers.ids
    return loaded, streams, gauge.summary()


def run(bootstrap: str, args: argparse.Namespace, profile_to: Path | None) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="gateway-load-"))
    stack = AgentStack(bootstrap, base, latency=str(args.latency), call_log=False)
    gateway: Proc | None = None
    try:
        for name, kind in (("router", "router"), (AGENT, "specialist"), ("supervisor", "supervisor")):
            stack.start(name, kind, agent_type=AGENT)
        key = write_tenants(base / "tenants.yaml")
        gateway, url = start_gateway(stack, base / "tenants.yaml")
        stack.wait_assigned(READY_TIMEOUT_S)
        wait_ready(gateway, url)
        return asyncio.run(measure(stack, url, key, gateway.pid, args, profile_to))
    finally:
        if gateway is not None:
            gateway.stop(30)
        stack.stop_all(60)
        stack.delete_topics()
        shutil.rmtree(base, ignore_errors=True)


# -- output ----------------------------------------------------------------------------------------
def print_report(baseline: dict[str, Any], loaded: dict[str, Any], measured: dict[str, Any]) -> None:
    figures = ("submit", "first_event", "result")
    print(f"{'':20} {'submit p50/p99 ms':>20} {'first event p50/p99':>20} {'result p50/p99 ms':>20} "
          f"{'tasks':>6} {'errors':>6} {'tasks/s':>8} {'load':>6}")
    for name, row in (("kafka (baseline)", baseline), ("gateway", loaded)):
        cells = [f"{row[f]['p50_ms']:8.1f} / {row[f]['p99_ms']:8.1f}" for f in figures]
        print(f"{name:20} {cells[0]:>20} {cells[1]:>20} {cells[2]:>20} {row['tasks']:6d} {row['errors']:6d} "
              f"{row['tasks_per_s']:8.1f} {row['loadavg_1m_at_end']:>6}")
    added = [f"{loaded[f]['p50_ms'] - baseline[f]['p50_ms']:+8.1f} / {loaded[f]['p99_ms'] - baseline[f]['p99_ms']:+8.1f}"
             for f in figures]
    print(f"{'gateway - baseline':20} {added[0]:>20} {added[1]:>20} {added[2]:>20}")
    for name, row in (("kafka (baseline)", baseline), ("gateway", loaded)):
        if "schedule" in row:
            plan = row["schedule"]
            print(f"{name} schedule: {plan['rate_per_s']:g} tasks/s offered, {plan['achieved_per_s']:.2f} started; "
                  f"starts behind their due times p50 / p99 / max {plan['behind_p50_ms']:.1f} / "
                  f"{plan['behind_p99_ms']:.1f} / {plan['behind_max_ms']:.1f} ms")
    print(f"gateway CPU: {loaded['gateway_cpu_ms_per_task']:.1f} ms per task under load "
          f"(baseline phase: {baseline['gateway_cpu_ms_per_task']:.1f} ms per task, its view reading the topics); "
          f"this process's CPU: {loaded['bench_cpu_ms_per_task']:.1f} ms per gateway task, "
          f"{baseline['bench_cpu_ms_per_task']:.1f} ms per baseline task")
    opened, streams = measured["open_streams"], measured["streams"]
    print(f"SSE streams open in the gateway phase (the gateway's gauge, {opened['readings']} readings): "
          f"min {opened['min']:.0f}, max {opened['max']:.0f}")
    print(f"SSE against task-events, {streams['streams']} streams: {streams['lost']} events lost, "
          f"{streams['repeated']} repeated, {streams['out_of_order']} out of order, "
          f"{streams['unseen_on_topic']} not on the topic; {streams['streams_with_faults']} streams with any of these")
    for path, gap in measured["after_result"].items():
        print(f"{path} phase: the last TaskEvent of a task after its result (this process's reader) p50 / p99 / max "
              f"{gap['p50_ms']:.1f} / {gap['p99_ms']:.1f} / {gap['max_ms']:.1f} ms")
    for line in measured["lacked"][:LACKED_SHOWN]:
        print(f"  lacked: {line}")


def print_profile(profile: dict[str, Any]) -> None:
    total = profile["samples"] or 1
    print(f"\npy-spy --gil on the gateway in its measured phase, {profile['samples']} samples at 250 Hz of the "
          f"thread holding the GIL, {profile['file']}:")
    # Inclusive: without the entry chain (the CLI, uvicorn's run) that every sample of the main thread passes through.
    entry = ENTRY_SHARE * max((count for _, count in profile["threads"]), default=total)
    inclusive = [(name, count) for name, count in profile["inclusive"] if count < entry]
    views = {"threads": profile["threads"], "self": profile["self"], "inclusive": inclusive,
             "inclusive, the project's code": [(name, count) for name, count in inclusive if "(agentstream/" in name]}
    for title, rows in views.items():
        print(f"  by {title}:")
        for name, count in rows[:PROFILE_TOP]:
            print(f"    {100 * count / total:5.1f}%  {name}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200,
                        help="gateway clients: concurrent callers, or with --rate the watcher streams (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="tasks each caller runs one after the other (default 3)")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the scripted model takes per call (default 0.5)")
    parser.add_argument("--seconds", type=float, default=300.0,
                        help="time limit of each phase; with --rate, after its last task started (default 300)")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the callers start (default 2)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="steady mode: tasks per second on a clock (default 0: rounds mode)")
    parser.add_argument("--duration", type=float, default=60.0, help="steady mode: seconds of submissions (default 60)")
    parser.add_argument("--profile", action="store_true", help="py-spy --gil on the gateway in its measured phase")
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.rounds < 1 or args.seconds <= 0 or args.latency < 0 or args.ramp < 0:
        parser.error("--clients and --rounds must be at least 1, --seconds positive, --latency and --ramp not negative")
    if args.rate < 0 or args.duration <= 0:
        parser.error(f"--rate must not be negative (0: rounds mode) and --duration positive, "
                     f"not {args.rate} and {args.duration}")
    missing = [m for m in ("fastapi", "uvicorn", "httpx", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        parser.error(f"missing {', '.join(missing)}: pip install -e '.[bench]' (make bench does)")
    if args.profile and not PY_SPY.exists():
        parser.error(f"--profile needs py-spy next to the interpreter ({PY_SPY}) or on PATH: pip install py-spy")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    profile_to = OUT_DIR / f"gateway_load-{stamp}-profile-gateway.txt" if args.profile else None
    if profile_to is not None:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
    host = machine()
    shape = (f"{planned_tasks(args.rate, args.duration)} tasks at {args.rate:g}/s for {args.duration:g} s, "
             f"{args.clients} watcher streams" if args.rate else f"{args.clients} clients x {args.rounds} tasks")
    with broker(args.broker) as (bootstrap, _, broker_name):
        print(f"gateway load bench: {shape}, scripted model {args.latency} s per call; broker {broker_name}; "
              f"{host['nproc']} x {host['cpu_model']}", flush=True)
        measured = run(bootstrap, args, profile_to)
    baseline, loaded = measured["baseline"].summary(), measured["gateway"].summary()
    errors = measured["baseline"].errors + measured["gateway"].errors
    print_report(baseline, loaded, measured)
    profile = None
    if profile_to is not None and profile_to.exists():
        profile = {"file": str(profile_to.relative_to(REPO)), **summarize_profile(profile_to, top=PROFILE_KEEP)}
        print_profile(profile)
    for error in errors[:5]:
        print(f"ERROR: {error}")
    streams = measured["streams"]
    report = {
        **report_header("gateway_load", stamp, argv, host, broker_name, "gateway"),
        "config": vars(args), "baseline": baseline, "gateway": loaded, "streams": streams,
        "lacked": measured["lacked"][:50], "after_result": measured["after_result"],
        "open_streams": measured["open_streams"], "profile": profile, "errors": errors[:50],
        "samples": {name: [asdict(s) for s in measured[name].samples] for name in ("baseline", "gateway")},
    }
    print(f"\nwrote {write_report('gateway_load', stamp, report).relative_to(REPO)}")
    return 0 if not errors and streams["streams_with_faults"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
