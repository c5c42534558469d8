"""The router's stream processor: validate, dedupe, classify and fan a task out.

Only fast deterministic work happens here; the decision itself is router/decide.py.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from agentstream.events import ROUTED_TASK, TASK_SUBMITTED, now_ms, task_result
from agentstream.errors import UnknownAgentTypeError
from agentstream.router.decide import route, validate_task
from agentstream.retry.chain import RetryChain
from agentstream.retry.classify import ErrorClass, ValidationFailed
from agentstream.retry.headers import REPLAY
from agentstream.router.tier import complexity_tier
from agentstream.runtime import MessageContext
from agentstream.runtime.expiry import stamp_now, timestamp_value
from agentstream.serde import SchemaSet
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.topology import Topology

log = logging.getLogger(__name__)

AGENT = "router"


def build_router(settings: WorkerSettings, topology: Topology, schemas: SchemaSet) -> Service:
    service = Service.build(AGENT, settings, topology, schemas)
    seen = service.table("dedupe")  # task_id -> when it was routed (epoch ms)
    service.processor.expire(seen, topology.dedupe.retention_s, timestamp_value, stamp=stamp_now)
    known_types = topology.specialist_types

    async def on_task(task: dict[str, Any], ctx: MessageContext) -> None:
        task_id = task["task_id"]
        if task_id and task_id in seen and ctx.header(REPLAY) is None:
            log.info("%s: task %s already routed, duplicate ignored", ctx.where, task_id)
            return
        if task_id:
            seen[task_id] = now_ms()
        reason = validate_task(task, settings.max_input_bytes)
        if reason is None:
            try:
                route_to = route(task["input"], task.get("requested_agent"), known_types)
            except UnknownAgentTypeError as exc:
                reason = str(exc)
        if reason is not None:
            log.warning("%s: task %s rejected: %s", ctx.where, task_id, reason)
            service.progress(task, "STATE", "REJECTED", reason)
            service.result(task_result(task, "REJECTED", error=("INVALID_TASK", reason)))
            # Also on record in the DLQ (its REJECTED result stands; no FAILED one is added).
            raw = schemas.encode(TASK_SUBMITTED, task)
            chain.dead_letter(raw, ctx, ValidationFailed(reason), ErrorClass.PERMANENT, 1, result=False)
            return
        routed_at = now_ms()
        tier = complexity_tier(task["input"], task.get("metadata") or {})
        for agent_type in route_to:
            routed = {
                "task_id": task_id,
                "session_id": task["session_id"],
                "tenant_id": task["tenant_id"],
                "input": task["input"],
                "submitted_at": task["submitted_at"],
                "agent_type": agent_type,
                "route": route_to,
                "metadata": task.get("metadata") or {},
                "routed_at": routed_at,
                "tier": tier,
                "budget_usd": task.get("budget_usd"),
            }
            service.emit_to(topology.specialist_topic(agent_type), ROUTED_TASK, routed)
        service.progress(task, "ROUTED", "QUEUED", f"{','.join(route_to)} tier={tier}")

    chain = RetryChain(service, partial(schemas.decode_as, TASK_SUBMITTED), on_task)
    return service
