"""The supervisor's stream processor: gather each task's specialist results, combine
them (supervisor/combine.py) and publish exactly one TaskResult per task."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from agentstream.events import SPECIALIST_RESULT, now_ms, task_result
from agentstream.runtime import MessageContext
from agentstream.serde import SchemaSet
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.supervisor.combine import combine, is_complete
from agentstream.topology import Topology

log = logging.getLogger(__name__)

AGENT = "supervisor"


def build_supervisor(settings: WorkerSettings, topology: Topology, schemas: SchemaSet) -> Service:
    service = Service.build(AGENT, settings, topology, schemas)
    app = service.processor
    pending = service.table("pending")  # task_id -> specialist results received so far
    done = service.table("dedupe")  # task_id -> when its TaskResult was published

    @app.handler(service.input_topic, decode=partial(schemas.decode_as, SPECIALIST_RESULT))
    async def on_result(result: dict[str, Any], ctx: MessageContext) -> None:
        task_id = result["task_id"]
        if task_id in done:
            log.info("%s: task %s already has its result; repeat from %s ignored", ctx.where, task_id, result["agent_type"])
            return
        received = [r for r in pending.get(task_id, []) if r["agent_type"] != result["agent_type"]]
        received.append(result)
        if not is_complete(result["route"], {r["agent_type"] for r in received}):
            pending[task_id] = received
            service.progress(result, "STATE", "WAITING_CHILD", f"{len(received)}/{len(result['route'])} specialists done")
            return
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
        service.result(final)
        service.progress(result, "STATE", combined["status"], ",".join(combined["agents"]))
        done[task_id] = now_ms()
        if task_id in pending:
            del pending[task_id]

    return service
