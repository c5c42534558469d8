"""The supervisor's stream processor: gather each task's specialist results, combine
them (supervisor/combine.py) and publish exactly one TaskResult per task
(supervisor/emitter.py).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from agentstream.events import SPECIALIST_RESULT, task_result
from agentstream.retry.chain import RetryChain
from agentstream.retry.headers import REPLAY
from agentstream.runtime import MessageContext
from agentstream.serde import SchemaSet
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.supervisor.combine import combine, is_complete
from agentstream.supervisor.emitter import ResultEmitter, marker_stamp, marker_written_at
from agentstream.topology import Topology

log = logging.getLogger(__name__)

AGENT = "supervisor"


def build_supervisor(settings: WorkerSettings, topology: Topology, schemas: SchemaSet) -> Service:
    service = Service.build(AGENT, settings, topology, schemas)
    app = service.processor
    pending = service.table("pending")  # task_id -> specialist results received so far
    markers = service.table("dedupe")  # task_id -> {state, result, results_from | offset, at}: written through
    app.expire(markers, topology.dedupe.retention_s, marker_written_at, stamp=marker_stamp, write_through=True)
    emitter = ResultEmitter(service, markers, pending)
    app.on_assign(emitter.recover)

    async def on_result(result: dict[str, Any], ctx: MessageContext) -> None:
        task_id = result["task_id"]
        replay = (ctx.header(REPLAY) or b"").decode() or None
        unfinished = emitter.unfinished(task_id)
        if unfinished is not None:  # its emission failed: finish it now
            emitter.finish(unfinished, [result], ctx)
            return
        marker = markers.get(task_id)
        # A replayed task (an operator re-ran its dead letter) may publish once more.
        if task_id in emitter.emitting or (marker is not None and (replay is None or marker.get("replay") == replay)):
            log.info("%s: task %s already has its result; repeat from %s ignored", ctx.where, task_id, result["agent_type"])
            return
        received = [r for r in pending.get(task_id, []) if r["agent_type"] != result["agent_type"]]
        received.append(result)
        if not is_complete(result["route"], {r["agent_type"] for r in received}):
            pending[task_id] = received
            service.progress(result, "STATE", "WAITING_CHILD", f"{len(received)}/{len(result['route'])} specialists done")
            return
        # The earlier results of a replayed task ended in the dead letter being replayed.
        final = final_result(received, [result] if replay is not None and marker is not None else received)
        if task_id in pending:
            del pending[task_id]
        emitter.start(final, received, ctx, replay)

    emitter.retries = RetryChain(service, partial(schemas.decode_as, SPECIALIST_RESULT), on_result)
    return service


def final_result(received: list[dict[str, Any]], models_of: list[dict[str, Any]]) -> dict[str, Any]:
    """The TaskResult of the specialist results ``received`` (the last one completed the
    task), naming the models of ``models_of``."""
    result = received[-1]
    combined = combine(received)
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
    final["models"] = {r["agent_type"]: r.get("model", "") for r in models_of}
    return final
