"""The supervisor's stream processor: gather each task's specialist results, combine
them (supervisor/combine.py) and publish exactly one TaskResult per task.

Exactly one, across crashes, without transactions: before a result is sent, a marker
holding it is written through to the ``dedupe`` table (acknowledged by the broker). A
marker still "emitting" after a crash means the result may or may not have reached the
results topic; the new owner reads that partition of the results topic from the
offset the marker noted and sends the result only if it is not there.

A "sent" marker holds its write time (``at``) and is deleted ``dedupe.retention_s`` after
it (see marker_written_at); an "emitting" one never expires.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from agentstream.events import SPECIALIST_RESULT, TASK_RESULT, now_ms, task_result
from agentstream.retry.chain import RetryChain
from agentstream.retry.headers import REPLAY
from agentstream.runtime import MessageContext
from agentstream.runtime.lag import end_offsets
from agentstream.serde import SchemaSet, SerdeError
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.supervisor.combine import combine, is_complete
from agentstream.topology import Topology

log = logging.getLogger(__name__)

AGENT = "supervisor"
EMITTING = "emitting"
SENT = "sent"


def marker_written_at(marker: dict[str, Any]) -> int | None:
    """When a "sent" marker was written; None (never expires) for one still emitting or
    one written before markers held a time (marker_stamp gives it one)."""
    if marker.get("state") != SENT:
        return None
    at = marker.get("at")
    return at if isinstance(at, int) else None


def marker_stamp(marker: dict[str, Any], now: int) -> dict[str, Any] | None:
    """An old "sent" marker without a time counts as written now; others are left alone."""
    return {**marker, "at": now} if marker.get("state") == SENT else None


def build_supervisor(settings: WorkerSettings, topology: Topology, schemas: SchemaSet) -> Service:
    service = Service.build(AGENT, settings, topology, schemas)
    app = service.processor
    pending = service.table("pending")  # task_id -> specialist results received so far
    markers = service.table("dedupe")  # task_id -> {state, result, results_from | offset, at}: written through
    app.expire(markers, topology.dedupe.retention_s, marker_written_at, stamp=marker_stamp, write_through=True)
    results_topic = topology.topic("results")
    emitting: set[str] = set()  # decided here, marker not yet acknowledged
    results_end: dict[int, int] = {}  # a lower bound of the end of each results partition

    async def emit(final: dict[str, Any], partition: int, where: str, replay: str | None = None) -> None:
        task_id = final["task_id"]
        try:
            marker = {"state": EMITTING, "result": final, "results_from": results_end.get(partition, 0), "replay": replay}
            await app.persist(markers, task_id, marker, partition=partition)
        finally:
            emitting.discard(task_id)
        app.release()  # the decision is durable: the specialist results may be committed
        await send(final, partition, replay)
        log.info("%s: task %s %s via %s", where, task_id, final["status"], "+".join(final["agents"]))

    async def send(final: dict[str, Any], partition: int, replay: str | None = None) -> None:
        offset = await app.send_acked(results_topic, schemas.encode(TASK_RESULT, final), final["session_id"], partition=partition)
        results_end[partition] = max(results_end.get(partition, 0), offset + 1)
        await app.persist(markers, final["task_id"], {"state": SENT, "offset": offset, "replay": replay, "at": now_ms()}, partition=partition)
        service.progress(final, "STATE", final["status"], ",".join(final["agents"]))

    async def recover(partitions: list[int]) -> None:
        """Finish what a previous owner left "emitting": send only what never arrived."""
        # Off the event loop: the broker may take up to its timeout (30 s) to answer, and
        # the work running for the partitions this worker already owns must go on meanwhile.
        ends = await asyncio.get_running_loop().run_in_executor(None, end_offsets, settings.bootstrap, [results_topic])
        for partition in partitions:
            results_end[partition] = ends[(results_topic, partition)]
            unsure = [marker for _, marker in markers.items_of(partition) if marker.get("state") == EMITTING]
            if not unsure:
                continue
            published = set()
            for _, value, _ in await app.read_to_end(results_topic, partition, min(m["results_from"] for m in unsure)):
                try:
                    published.add(schemas.decode_as(TASK_RESULT, value or b"")["task_id"])
                except SerdeError:
                    continue
            for marker in unsure:
                final = marker["result"]
                if final["task_id"] in published:
                    await app.persist(markers, final["task_id"], {"state": SENT, "offset": -1, "at": now_ms()}, partition=partition)
                else:
                    log.info("%s[%d]: resending the result of task %s", results_topic, partition, final["task_id"])
                    await send(final, partition, marker.get("replay"))

    app.on_assign(recover)

    async def on_result(result: dict[str, Any], ctx: MessageContext) -> None:
        task_id = result["task_id"]
        replay = (ctx.header(REPLAY) or b"").decode() or None
        marker = markers.get(task_id)
        # A replayed task (an operator re-ran its dead letter) may publish once more.
        if task_id in emitting or (marker is not None and (replay is None or marker.get("replay") == replay)):
            log.info("%s: task %s already has its result; repeat from %s ignored", ctx.where, task_id, result["agent_type"])
            return
        received = [r for r in pending.get(task_id, []) if r["agent_type"] != result["agent_type"]]
        received.append(result)
        if not is_complete(result["route"], {r["agent_type"] for r in received}):
            pending[task_id] = received
            service.progress(result, "STATE", "WAITING_CHILD", f"{len(received)}/{len(result['route'])} specialists done")
            return
        combined = combine(received)
        if replay is not None and marker is not None:
            received = [result]  # the earlier results ended in the dead letter being replayed
        final = task_result(
            result,
            combined["status"],
            output=combined["output"],
            error=combined["error"],
            agents=combined["agents"],
            usage=combined["usage"],
            behavior_versions=combined["behavior_versions"],
        )
        final["tier"] = result.get("tier")
        final["models"] = {r["agent_type"]: r.get("model", "") for r in received}
        if task_id in pending:
            del pending[task_id]
        emitting.add(task_id)
        app.spawn(emit(final, ctx.partition, ctx.where, replay))

    RetryChain(service, partial(schemas.decode_as, SPECIALIST_RESULT), on_result)
    return service
