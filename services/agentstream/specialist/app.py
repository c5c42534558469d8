"""A specialist's stream processor: its tables, models and tools, and the handlers of
routed tasks. What happens to a task, from acceptance to its result, is
specialist/lifecycle.py; what runs it is specialist/agent.py.
"""

from __future__ import annotations

from functools import partial

from agentstream.controls.rate_limit import members_from_assignment
from agentstream.controls.registry import ModelControls
from agentstream.controls.settings import ControlSettings
from agentstream.cancellation.records import recorded_at
from agentstream.events import APPROVAL_DECISION, ROUTED_TASK, TASK_CANCEL
from agentstream.models.base import Model
from agentstream.models.config import ModelSettings
from agentstream.retry.chain import RetryChain
from agentstream.rollout.config import SHADOW, VARIANT_SUFFIX
from agentstream.rollout.dry_run import DryRunTools, side_effecting
from agentstream.rollout.shadow import ShadowAgent, bind_shadow
from agentstream.runtime import Table
from agentstream.runtime.expiry import stamp_now, timestamp_value
from agentstream.serde import SchemaSet
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.agent import SpecialistAgent
from agentstream.specialist.canceling import CANCEL, Cancellations
from agentstream.specialist.lifecycle import TaskLifecycle
from agentstream.specialist.loop import default_system_prompt
from agentstream.specialist.model_chains import ModelChains
from agentstream.specialist.waiting import APPROVAL, ApprovalDesk, closed_at
from agentstream.tools.loader import check_allowlist, load_tools
from agentstream.tools.registry import ToolRegistry
from agentstream.topology import Topology


def build_specialist(
    agent_type: str,
    settings: WorkerSettings,
    topology: Topology,
    schemas: SchemaSet,
    *,
    model: Model | None = None,
    tools: ToolRegistry | None = None,
) -> Service:
    """The specialist service of ``agent_type`` (or of its candidate's worker,
    ``<type>.candidate`` / ``<type>.shadow``); ``model`` and ``tools`` replace the
    configured ones (tests)."""
    live_type, mode = topology.live_of(agent_type)
    runner = build_agent(agent_type, topology, model=model, tools=tools)
    service = Service.build(agent_type, settings, topology, schemas)
    app = service.processor
    checkpoints = service.table("checkpoints")
    # Done markers hold their write time; they expire (the rest of a task's records are
    # tombstoned when it ends). Written through, so deleted through too.
    app.expire(checkpoints, topology.dedupe.retention_s, timestamp_value, stamp=stamp_now,
               prefix=ckpt.DONE.encode(), write_through=True)
    models = runner.models
    service.behavior_version = runner.version
    desk = _approval_desk(service, agent_type, runner.tools, checkpoints)
    # A shadow mirrors live runs: a cancel is the live run's to act on, and a dry run's
    # steps are no record of the task (replay would find them beside the live transcript).
    shadow = mode == SHADOW
    lifecycle = TaskLifecycle(service, runner, checkpoints, service.table("retrying"), desk,
                              None if shadow else _cancellations(service, checkpoints, desk))
    if shadow:
        lifecycle.transcripts = None

    async def share_quotas(partitions: list[int]) -> None:
        """Take this member's share of the rate quotas (before the tasks resume)."""
        models.controls.set_members(members_from_assignment(len(app.assigned_partitions()), app.partition_count))

    app.on_assign(share_quotas)
    app.on_assign(lifecycle.resume_in_flight)
    candidate = topology.candidate_of(live_type)
    if mode == SHADOW and candidate is not None:
        bind_shadow(service, lifecycle, live_type, candidate.weight)
        return service
    # A retried task settles when it finishes (in the lifecycle), not when the tier hands it back.
    lifecycle.retries = RetryChain(
        service, partial(schemas.decode_as, ROUTED_TASK), lifecycle.on_routed, emit_failed_results=False,
        settle_on_return=False, retrying=lifecycle.retrying,
    )
    return service


def build_agent(agent_type: str, topology: Topology, *, model: Model | None = None,
                tools: ToolRegistry | None = None) -> SpecialistAgent:
    """The agent loop of the specialist ``agent_type`` (or of its candidate's worker,
    ``<type>.candidate`` / ``<type>.shadow``) as the topology configures it: what a worker
    runs, and what replays and evals run in-process (``model`` and ``tools`` replace the
    configured ones). A shadow's side-effecting calls are answered from the live run's
    record or refused, never run (rollout/dry_run.py)."""
    agent = topology.agent(agent_type)
    live_type, mode = topology.live_of(agent_type)
    if agent.kind != "specialist":
        raise ValueError(f"Agent {agent_type!r} is a {agent.kind}, not a specialist; choose one of {topology.specialist_types}.")
    model_settings = agent.model or ModelSettings()
    models = ModelChains(model_settings, ModelControls(agent.controls or ControlSettings(), agent=agent_type), fixed=model)
    modules = topology.tools_modules_of(agent_type)
    registry = tools or load_tools(modules, topology.app_dir())
    check_allowlist(agent_type, agent.tools, registry, modules)
    kind = SpecialistAgent
    if mode == SHADOW:
        registry = DryRunTools(registry, side_effecting(registry, agent.tools, topology.agent(live_type).approvals))
        kind = ShadowAgent
    prompt = model_settings.system_prompt(topology.app_dir()) or default_system_prompt(live_type)
    return kind(live_type, model_settings, models, registry, list(agent.tools),
                agent.max_steps or 8, prompt, variant=VARIANT_SUFFIX[mode] if mode else None,
                approvals=agent.approvals)


def _cancellations(service: Service, checkpoints: Table, desk: ApprovalDesk | None) -> Cancellations:
    """The cancels of the control topic (co-partitioned with the input), recorded in the
    checkpoints table and expired like done markers."""
    cancels = Cancellations(service, checkpoints, desk)
    app = service.processor
    app.handler(service.topology.topic("control"), partial(service.schemas.decode_as, TASK_CANCEL))(cancels.on_cancel)
    app.expire(checkpoints, service.topology.dedupe.retention_s, recorded_at, prefix=CANCEL.encode(), write_through=True)
    return cancels


def _approval_desk(service: Service, agent_type: str, registry: ToolRegistry, checkpoints: Table) -> ApprovalDesk | None:
    """The desk of a specialist whose topology holds tool calls for approval: it consumes
    the decisions topic (co-partitioned with the input) and expires decided approvals
    like done markers. None when no tool of the type needs approval."""
    policies = service.topology.agent(agent_type).approvals
    if not policies:
        return None

    def describe(name: str) -> str:
        found = registry.get(name)
        return found.description if found is not None else ""

    desk = ApprovalDesk(service, agent_type, policies, describe, checkpoints)
    app = service.processor
    app.handler(service.topology.topic("approval_decisions"), partial(service.schemas.decode_as, APPROVAL_DECISION))(
        desk.on_decision)
    app.expire(checkpoints, service.topology.dedupe.retention_s, closed_at, prefix=APPROVAL.encode(), write_through=True)
    return desk  # the lifecycle has it take over each assigned partition (deadlines, waiting runs)
