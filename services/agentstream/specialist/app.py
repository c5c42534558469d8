"""A specialist's stream processor: take a routed task, run the agent loop beside the
partition, emit the specialist result to the supervisor.

The handler only records and schedules; the loop runs as spawned work, one task at a
time per session, so the partition keeps moving while models think. The record's
offset is committed only once its result has been sent and acknowledged, so a worker
that dies mid-loop loses nothing: the next owner runs the task again (the durable,
step-checkpointed loop is a later issue).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from agentstream import __version__
from agentstream.events import ROUTED_TASK, SPECIALIST_RESULT, now_ms
from agentstream.models.base import Model
from agentstream.models.scripted import ScriptedModel
from agentstream.runtime import MessageContext
from agentstream.serde import SchemaSet
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.specialist.behavior import behavior_version
from agentstream.specialist.loop import default_system_prompt, run_agent
from agentstream.tools.demo import demo_registry
from agentstream.tools.registry import ToolRegistry
from agentstream.topology import Topology

log = logging.getLogger(__name__)

_HISTORY_TURNS = 10  # turns of a session kept in the sessions table


def build_specialist(
    agent_type: str,
    settings: WorkerSettings,
    topology: Topology,
    schemas: SchemaSet,
    *,
    model: Model | None = None,
    tools: ToolRegistry | None = None,
) -> Service:
    agent = topology.agent(agent_type)
    if agent.kind != "specialist":
        raise ValueError(f"Agent {agent_type!r} is a {agent.kind}, not a specialist; choose one of {topology.specialist_types}.")
    service = Service.build(agent_type, settings, topology, schemas)
    app = service.processor
    sessions = service.table("sessions")
    model = model or ScriptedModel()
    registry = tools or demo_registry()
    allowlist = list(agent.tools)
    max_steps = agent.max_steps or 8
    prompt = default_system_prompt(agent_type)
    version = behavior_version(agent_type, prompt, registry.schemas(allowlist), model.model_id, __version__)

    async def work(task: dict[str, Any], where: str) -> None:
        started = now_ms()
        service.progress(task, "STATE", "RUNNING", f"{agent_type} started")
        outcome = await run_agent(task, agent_type, model, registry, allowlist, max_steps, prompt)
        for tool_name in outcome.tools_used:
            service.progress(task, "TOOL_CALL", "RUNNING", tool_name)
        result = {
            "task_id": task["task_id"],
            "session_id": task["session_id"],
            "tenant_id": task["tenant_id"],
            "agent_type": agent_type,
            "route": task["route"],
            "status": outcome.status,
            "output": outcome.output,
            "error": {"code": outcome.error[0], "message": outcome.error[1]} if outcome.error else None,
            "tools_used": outcome.tools_used,
            "usage": outcome.usage,
            "behavior_version": version,
            "submitted_at": task["submitted_at"],
            "started_at": started,
            "finished_at": now_ms(),
        }
        history = sessions.get(task["session_id"], [])
        history.append({"task_id": task["task_id"], "input": task["input"], "output": outcome.output})
        sessions[task["session_id"]] = history[-_HISTORY_TURNS:]
        service.emit("supervisor", SPECIALIST_RESULT, result)
        log.info("%s: task %s %s by %s in %d steps", where, task["task_id"], outcome.status, agent_type, outcome.steps)

    @app.handler(service.input_topic, decode=partial(schemas.decode_as, ROUTED_TASK))
    async def on_routed(task: dict[str, Any], ctx: MessageContext) -> None:
        if task["agent_type"] != agent_type:
            log.warning("%s: task %s is for %s, not %s; skipped", ctx.where, task["task_id"], task["agent_type"], agent_type)
            return
        app.spawn(work(task, ctx.where), order_key=task["session_id"])

    return service
