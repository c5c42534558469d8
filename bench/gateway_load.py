"""Gateway load benchmark: concurrent HTTP clients each submitting tasks and following them
by Server-Sent Events to the result, against the same tasks sent straight to Kafka and
awaited on the topics, in the same run (issue 16). The difference is what the gateway adds.

    python -m bench.gateway_load [--clients 200] [--rounds 3] [--latency 0.5] [--seconds 300]
                                 [--ramp 2] [--broker kafka|tansu]

The real processes, as ``bench.waiting_memory`` and the others start them (bench/_procs.py):
``agentstream worker router``, ``... specialist --type billing`` and ``... supervisor`` on the
support desk's topology under a fresh prefix, with the scripted model answering each call
after ``--latency`` seconds (a billing task makes two calls), and ``agentstream gateway`` on
127.0.0.1 (loopback only) with a tenants file of one tenant without limits.

Two phases, each ``--clients`` callers starting ``--ramp`` seconds apart in all, each running
``--rounds`` tasks one after the other ("Please check invoice INV-1001 for me", agent billing,
a session of its own), bounded by ``--seconds``:

- ``kafka`` (the baseline): the TaskSubmitted produced with the gateway's own producer
  (gateway/producer.py: ``await send`` returns on the broker's acknowledgement), the task's
  first TaskEvent and its TaskResult seen by a group-less reader of task-events and results
  in this process (``agentstream.client.Follower``);
- ``gateway``: ``POST /v1/tasks`` then ``GET /v1/tasks/{id}/events`` to its ``result`` event,
  through ``agentstream.AsyncGatewayClient``, one client (its own connection pool) per caller,
  each made before the phases start.

Per task, from the caller's first byte: submit latency (the 202 / the acknowledgement),
time to the first progress event, time to the result (the SSE result comes after the
task's terminal progress event, the protocol's order). Errors: a refused or failed request,
a stream without a result, a result not COMPLETED, a task unfinished at the time limit. The
SSE streams are checked against the topic: every TaskEvent of a gateway task on
task-events must have reached its stream (lost) and no event id may come twice (repeated).
Warm-up: a few tasks through each path first, not measured. The gateway's CPU seconds per
phase are read from /proc (psutil).
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

from agentstream.client import Follower, new_task
from agentstream.events import TASK_EVENT, TASK_RESULT, TASK_SUBMITTED
from agentstream.serde import SchemaSet
from agentstream.settings import GATEWAY_HOST_ENV, STATE_DIR_ENV
from bench._procs import REPO, AgentStack, Proc, broker, machine, percentile, source_state, write_report
from bench.relay import add_broker_argument, broker_kind

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


# -- what one task and one phase measured ----------------------------------------------------
@dataclass
class Sample:
    task_id: str
    submit_s: float
    first_event_s: float
    result_s: float
    events: int = 0  # progress events the caller received (gateway) or the reader saw (kafka)
    repeated: int = 0  # event ids a stream sent twice


@dataclass
class Phase:
    path: str
    clients: int
    rounds: int
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    gateway_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0  # this process: the callers (HTTP and SSE parsing, or the producer) and the reader
    loadavg: str = ""  # the machine's 1-minute load average at the end: other jobs share it

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
        }


# -- the topics, as a reader in this process sees them ---------------------------------------
@dataclass
class Seen:
    """One task on task-events and results: arrival times (monotonic) and its event count."""

    first: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    first_at: float = math.nan
    done_at: float = math.nan
    events: int = 0
    status: str = ""


class TopicTimes(threading.Thread):
    """Follows task-events and results from their ends (no group) and hands each task's
    records to the event loop, which keeps a :class:`Seen` per task id."""

    def __init__(self, bootstrap: str, topics: list[str], schemas: SchemaSet, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="topic-times", daemon=True)
        self.follower = Follower(bootstrap, topics, schemas)
        self.loop = loop
        self.tasks: dict[str, Seen] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                records = self.follower.poll_once(0.1)
                if records:
                    self.loop.call_soon_threadsafe(self._note, time.monotonic(), records)
        finally:
            self.follower.close()

    def _note(self, at: float, records: list[tuple[str, str, dict[str, Any]]]) -> None:
        for _, name, record in records:
            seen = self.of(record["task_id"])
            if name == TASK_EVENT:
                seen.events += 1
                if not seen.first.is_set():
                    seen.first_at = at
                    seen.first.set()
            elif name == TASK_RESULT and not seen.done.is_set():
                seen.done_at, seen.status = at, record["status"]
                seen.done.set()

    def of(self, task_id: str) -> Seen:
        return self.tasks.setdefault(task_id, Seen())

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
    first, ids, repeated = math.nan, set[str](), 0
    async for event in client.events(task_id):
        now = time.monotonic()
        first = now if math.isnan(first) else first
        if event.kind == "result":
            status = event.data["result"]["status"]
            if status != COMPLETED:
                raise RuntimeError(f"task {task_id} ended {status}")
            return Sample(task_id, submitted - start, first - start, now - start, len(ids), repeated)
        repeated += event.id in ids
        ids.add(event.id)
    raise RuntimeError(f"the event stream of task {task_id} ended without its result")


# -- a phase: callers in parallel, each running its rounds ------------------------------------
async def run_phase(path: str, clients: int, rounds: int, seconds: float, ramp: float,
                    caller: Callable[[Phase, int], Awaitable[None]], gateway_cpu: Callable[[], float]) -> Phase:
    phase = Phase(path, clients, rounds)
    cpu_before, own_before, start = gateway_cpu(), time.process_time(), time.monotonic()

    async def staggered(index: int) -> None:
        await asyncio.sleep(ramp * index / clients)  # the callers' start times, spread over the ramp
        await caller(phase, index)

    running = [asyncio.create_task(staggered(i)) for i in range(clients)]
    _, pending = await asyncio.wait(running, timeout=seconds)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    phase.wall_s = time.monotonic() - start
    phase.gateway_cpu_s = gateway_cpu() - cpu_before
    phase.bench_cpu_s = time.process_time() - own_before
    phase.loadavg = Path("/proc/loadavg").read_text().split()[0]
    unfinished = clients * rounds - len(phase.samples) - len(phase.errors)
    if unfinished > 0:
        phase.errors.append(f"{unfinished} tasks unfinished after {seconds:.0f} s")
    return phase


def kafka_caller(producer: AsyncProducer, topic: str, schemas: SchemaSet,
                 topics: TopicTimes) -> Callable[[Phase, int], Awaitable[None]]:
    async def caller(phase: Phase, index: int) -> None:
        for _ in range(phase.rounds):
            await _recorded(phase, kafka_task(producer, topic, schemas, topics))

    return caller


def gateway_caller(clients: list[AsyncGatewayClient]) -> Callable[[Phase, int], Awaitable[None]]:
    """Caller ``index`` runs its tasks on ``clients[index]``, made before any phase: building
    an httpx client loads the CA bundle (~30 ms of CPU), which 200 callers starting at once
    would otherwise spend on this process's event loop inside the measured window."""

    async def caller(phase: Phase, index: int) -> None:
        for _ in range(phase.rounds):
            await _recorded(phase, gateway_task(clients[index]))

    return caller


async def _recorded(phase: Phase, task: Awaitable[Sample]) -> None:
    try:
        phase.samples.append(await task)
    except Exception as exc:  # every failure is a figure of the run: counted, first ones shown
        phase.errors.append(f"{type(exc).__name__}: {exc}")


async def stream_check(phase: Phase, topics: TopicTimes) -> dict[str, int]:
    """Events on task-events that a gateway task's stream did not deliver, and repeats."""
    deadline = time.monotonic() + CATCH_UP_S
    while any(topics.of(s.task_id).events < s.events for s in phase.samples) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the reader of the topics catching up with what the streams had
    return {
        "lost": sum(max(0, topics.of(s.task_id).events - s.events) for s in phase.samples),
        "unseen_on_topic": sum(max(0, s.events - topics.of(s.task_id).events) for s in phase.samples),
        "repeated": sum(s.repeated for s in phase.samples),
    }


# -- the run -------------------------------------------------------------------------------------
def write_tenants(path: Path) -> str:
    """A tenants file of one tenant without limits; its API key."""
    from agentstream.tenancy import hash_api_key

    key = secrets.token_urlsafe(32)
    tenants = {"tenants": {TENANT: {"api_keys": [{"name": "bench", "hash": hash_api_key(key), "roles": ["submitter"]}]}}}
    path.write_text(yaml.safe_dump(tenants))
    return key


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


async def measure(stack: AgentStack, url: str, key: str, gateway_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    from agentstream import AsyncGatewayClient
    from agentstream.gateway.producer import AsyncProducer

    topology = stack.topology
    topics = TopicTimes(stack.bootstrap, [topology.topic("task_events"), topology.topic("results")], stack.schemas,
                        asyncio.get_running_loop())
    topics.start()
    producer = AsyncProducer(stack.bootstrap)
    to_kafka = kafka_caller(producer, topology.topic("tasks"), stack.schemas, topics)
    clients = [AsyncGatewayClient(url, api_key=key) for _ in range(args.clients)]  # one per caller: its own connections
    to_gateway = gateway_caller(clients)
    cpu = gateway_cpu_reader(gateway_pid)
    try:
        warm = min(WARM_UP_CLIENTS, args.clients)
        for path, caller in (("kafka", to_kafka), ("gateway", to_gateway)):
            warm_up = await run_phase(path, warm, 1, args.seconds, 0, caller, cpu)
            if warm_up.errors:
                raise RuntimeError(f"the {path} warm-up failed: {warm_up.errors[:3]}")
        baseline = await run_phase("kafka", args.clients, args.rounds, args.seconds, args.ramp, to_kafka, cpu)
        loaded = await run_phase("gateway", args.clients, args.rounds, args.seconds, args.ramp, to_gateway, cpu)
        streams = await stream_check(loaded, topics)
    finally:
        producer.close()
        topics.stop()
        await asyncio.gather(*(client.aclose() for client in clients))
    return {"baseline": baseline, "gateway": loaded, "streams": streams}


def run(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
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
        return asyncio.run(measure(stack, url, key, gateway.pid, args))
    finally:
        if gateway is not None:
            gateway.stop(30)
        stack.stop_all(60)
        stack.delete_topics()
        shutil.rmtree(base, ignore_errors=True)


# -- output ----------------------------------------------------------------------------------------
def print_report(baseline: dict[str, Any], loaded: dict[str, Any], streams: dict[str, int]) -> None:
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
    print(f"gateway CPU: {loaded['gateway_cpu_ms_per_task']:.1f} ms per task under load "
          f"(baseline phase: {baseline['gateway_cpu_ms_per_task']:.1f} ms per task, its view reading the topics); "
          f"this process's CPU: {loaded['bench_cpu_ms_per_task']:.1f} ms per gateway task, "
          f"{baseline['bench_cpu_ms_per_task']:.1f} ms per baseline task")
    print(f"SSE against task-events: {streams['lost']} events lost, {streams['repeated']} repeated, "
          f"{streams['unseen_on_topic']} not (yet) on the topic")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="concurrent callers (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="tasks each caller runs one after the other (default 3)")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the scripted model takes per call (default 0.5)")
    parser.add_argument("--seconds", type=float, default=300.0, help="time limit of each phase (default 300)")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the callers start (default 2)")
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.rounds < 1 or args.seconds <= 0 or args.latency < 0 or args.ramp < 0:
        parser.error("--clients and --rounds must be at least 1, --seconds positive, --latency and --ramp not negative")
    missing = [m for m in ("fastapi", "uvicorn", "httpx", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        parser.error(f"missing {', '.join(missing)}: pip install -e '.[bench]' (make bench does)")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    with broker(args.broker) as (bootstrap, _, broker_name):
        print(f"gateway load bench: {args.clients} clients x {args.rounds} tasks, scripted model {args.latency} s "
              f"per call; broker {broker_name}; {host['nproc']} x {host['cpu_model']}", flush=True)
        measured = run(bootstrap, args)
    baseline, loaded = measured["baseline"].summary(), measured["gateway"].summary()
    errors = measured["baseline"].errors + measured["gateway"].errors
    print_report(baseline, loaded, measured["streams"])
    for error in errors[:5]:
        print(f"ERROR: {error}")
    report = {
        "benchmark": "gateway_load", "started": stamp, "command": "python -m bench.gateway_load " + " ".join(argv),
        "machine": host, "source": source_state("gateway"), "broker": broker_name, "broker_kind": broker_kind(broker_name),
        "config": vars(args), "baseline": baseline, "gateway": loaded, "streams": measured["streams"],
        "errors": errors[:50],
        "samples": {name: [asdict(s) for s in measured[name].samples] for name in ("baseline", "gateway")},
    }
    print(f"\nwrote {write_report('gateway_load', stamp, report).relative_to(REPO)}")
    return 0 if not errors and measured["streams"]["lost"] == 0 and measured["streams"]["repeated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
