"""The steady-rate mode of ``bench.gateway_load`` (issue 16's load shape: "200 concurrent SSE
clients plus submissions at a steady rate"): the clock that starts the submissions, the
watcher streams that keep ``--clients`` SSE streams open all along, the gateway's own count
of its open streams, and the check of each stream against task-events by event id.

How "200 concurrent SSE clients" holds: each of the ``--clients`` gateway clients opens one
watcher stream before the clock starts and keeps it until the last task has its result, and
every submitted task is followed on a stream of its own on top of those. A watcher follows a
*parked* task: one asked of the support desk's ``technical`` specialist, for which the bench
starts no worker, so the task stays routed and its stream stays open (its routing events,
then keep-alive comments) without ever ending. So at every moment at least ``--clients``
streams are open, ``--clients`` + the tasks in flight at the peak; the gateway's gauge
``agentstream_gateway_sse_streams`` read every second says what it actually held.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentstream.gateway.ids import EVENT_MARK
from bench._procs import percentile

if TYPE_CHECKING:  # the client extra: imported where used, after bench.gateway_load's main() checked it
    from agentstream import AsyncGatewayClient

PARK_AGENT = "technical"  # a specialist type of the support desk that the bench starts no worker for
PARK_TEXT = "A watcher's task: no worker of its type runs, so its stream stays open"
SSE_GAUGE = "agentstream_gateway_sse_streams"  # gateway/metrics.py
GAUGE_EVERY_S = 1.0  # one /metrics request a second: negligible beside the load
LEAD_S = 0.2  # the first due time is this far after the schedule is made, so it is not late from the start


# -- one stream against its task's records --------------------------------------------------
@dataclass(frozen=True)
class StreamFaults:
    """How one stream's progress event ids differ from its task's TaskEvents on task-events."""

    lost: int = 0  # on the topic, never in the stream
    repeated: int = 0  # an id the stream sent again
    out_of_order: int = 0  # a new id earlier than one the stream had already sent
    unseen_on_topic: int = 0  # in the stream, not (yet) read from the topic

    def any(self) -> bool:
        return bool(self.lost or self.repeated or self.out_of_order or self.unseen_on_topic)


def stream_faults(ids: Sequence[str], on_topic: Iterable[int]) -> StreamFaults:
    """Compare the ids a stream sent (``e<offset>``, in the order received; the result's id
    is not among them) with the offsets of its task's TaskEvents on task-events."""
    seen: set[int] = set()
    latest, repeated, out_of_order = -1, 0, 0
    for ident in ids:
        offset = _offset(ident)
        if offset in seen:
            repeated += 1
            continue
        out_of_order += offset < latest
        seen.add(offset)
        latest = max(latest, offset)
    topic = set(on_topic)
    return StreamFaults(len(topic - seen), repeated, out_of_order, len(seen - topic))


def lost_offsets(ids: Sequence[str], on_topic: Iterable[int]) -> list[int]:
    """The offsets of ``on_topic`` (a task's TaskEvents) that no id of the stream names."""
    sent = {_offset(ident) for ident in ids}
    return sorted(set(on_topic) - sent)


def _offset(ident: str) -> int:
    if not ident.startswith(EVENT_MARK) or not ident[len(EVENT_MARK):].isdigit():
        raise ValueError(f"progress event id {ident!r} is not {EVENT_MARK}<task-events offset>; "
                         "the gateway's ids (gateway/ids.py) changed and this check with them")
    return int(ident[len(EVENT_MARK):])


def faults_total(faults: Iterable[StreamFaults]) -> dict[str, int]:
    listed = list(faults)
    return {
        "streams": len(listed),
        "lost": sum(f.lost for f in listed),
        "repeated": sum(f.repeated for f in listed),
        "out_of_order": sum(f.out_of_order for f in listed),
        "unseen_on_topic": sum(f.unseen_on_topic for f in listed),
        "streams_with_faults": sum(f.any() for f in listed),
    }


# -- the clock --------------------------------------------------------------------------------
def planned_tasks(rate: float, duration: float) -> int:
    return max(1, round(rate * duration))


async def on_schedule(rate: float, count: int,
                      start_one: Callable[[int, float], Awaitable[None]]) -> list[asyncio.Task[None]]:
    """Start ``start_one(i, behind)`` for i in 0..count-1 at ``i / rate`` s after the start,
    each at its time however long the ones before take (an open schedule: a slow gateway
    does not slow the submissions down). ``behind`` is how late the task began running
    after its due time (this process's event loop busy, or the sleep's resolution)."""
    start = time.monotonic() + LEAD_S
    started: list[asyncio.Task[None]] = []
    for index in range(count):
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        started.append(asyncio.create_task(_when_running(index, due, start_one)))
    return started


async def _when_running(index: int, due: float, start_one: Callable[[int, float], Awaitable[None]]) -> None:
    await start_one(index, time.monotonic() - due)


def schedule_summary(rate: float, behind: Sequence[float], began: Sequence[float]) -> dict[str, float]:
    """How far the submissions fell behind their due times, and the rate they achieved."""
    span = max(began) - min(began) if len(began) > 1 else math.nan
    return {
        "rate_per_s": rate,
        "achieved_per_s": (len(began) - 1) / span if span else math.nan,
        "behind_p50_ms": 1000 * percentile(behind, 0.5),
        "behind_p99_ms": 1000 * percentile(behind, 0.99),
        "behind_max_ms": 1000 * max(behind, default=math.nan),
    }


# -- the watchers -------------------------------------------------------------------------------
class Watchers:
    """One SSE stream per client, each following a parked task, open until :meth:`close`.
    A watcher stream that ends or fails before then is an error of the run."""

    def __init__(self, clients: Sequence[AsyncGatewayClient]) -> None:
        self._clients = clients
        self.ids: dict[str, list[str]] = {}  # parked task id -> the event ids its stream sent
        self.errors: list[str] = []
        self._running: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        task_ids = await asyncio.gather(*(client.submit(PARK_TEXT, agent=PARK_AGENT) for client in self._clients))
        for client, task_id in zip(self._clients, task_ids, strict=True):
            self.ids[task_id] = []
            self._running.append(asyncio.create_task(self._watch(client, task_id)))

    async def _watch(self, client: AsyncGatewayClient, task_id: str) -> None:
        try:
            async for event in client.events(task_id):
                if event.kind == "result":
                    self.errors.append(f"the parked task {task_id} got a result: {event.data}")
                    return
                self.ids[task_id].append(event.id)
            self.errors.append(f"the watcher stream of {task_id} ended before the run did")
        except Exception as exc:  # a failed watcher is a figure of the run, not the end of it
            self.errors.append(f"the watcher stream of {task_id}: {type(exc).__name__}: {exc}")

    async def close(self) -> None:
        for running in self._running:
            running.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


# -- the gateway's count of its open streams -------------------------------------------------
class StreamGauge:
    """Reads ``agentstream_gateway_sse_streams`` from the gateway's ``/metrics``."""

    def __init__(self, url: str) -> None:
        import httpx

        self._http = httpx.AsyncClient(base_url=url, timeout=10)
        self.samples: list[float] = []

    async def read(self) -> float:
        response = await self._http.get("/metrics")
        response.raise_for_status()
        return gauge_value(response.text, SSE_GAUGE)

    async def wait_at_least(self, streams: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (now := await self.read()) < streams:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway held {now:.0f} SSE streams, not the {streams} opened, "
                                   f"after {timeout:.0f} s")
            await asyncio.sleep(0.1)  # the poll interval of the check

    async def sample(self, stop: asyncio.Event) -> None:
        """Read the gauge every GAUGE_EVERY_S until ``stop`` is set (and once more then)."""
        while True:
            self.samples.append(await self.read())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), GAUGE_EVERY_S)
            if stop.is_set():
                self.samples.append(await self.read())
                return

    def summary(self) -> dict[str, Any]:
        return {"min": min(self.samples, default=math.nan), "max": max(self.samples, default=math.nan),
                "readings": len(self.samples)}

    async def aclose(self) -> None:
        await self._http.aclose()


def gauge_value(exposition: str, name: str) -> float:
    """The value of an unlabelled gauge in Prometheus' text format; ValueError if absent."""
    for line in exposition.splitlines():
        metric, _, value = line.partition(" ")
        if metric == name:
            return float(value)
    raise ValueError(f"no {name} in the gateway's /metrics; gateway/metrics.py renamed it?")
