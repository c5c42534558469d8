"""What a specialist runs for a task: its model chains, tools, prompt and limits, and the
behaviour version stamped on what it emits. No Kafka here: the durable steps come in
through a DurableRun (specialist/durable.py), the lifecycle around it is
specialist/lifecycle.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from agentstream import __version__
from agentstream.events import now_ms
from agentstream.models.config import ModelSettings
from agentstream.models.pricing import cost_usd
from agentstream.specialist.behavior import behaviour_settings, behavior_version
from agentstream.specialist.durable import DurableModel, DurableRun, DurableTools, landed_at_exit
from agentstream.specialist.history import HistoryCompressor
from agentstream.specialist.loop import AgentOutcome, run_agent
from agentstream.specialist.model_chains import ModelChains
from agentstream.telemetry import tracing
from agentstream.tier import DEFAULT_TIER
from agentstream.tools.registry import ToolRegistry

USAGE_FIELDS = ("input_tokens", "output_tokens", "cost_usd", "llm_calls", "tool_calls", "retries")


@dataclass
class SpecialistAgent:
    """One agent type's loop, bound to its models, tools and prompt."""

    agent_type: str
    settings: ModelSettings
    models: ModelChains
    tools: ToolRegistry
    allowlist: list[str]
    max_steps: int
    prompt: str
    variant: str | None = None  # None: the live version; "candidate" or "shadow" (rollout/)
    approvals: Mapping[str, BaseModel] = field(default_factory=dict)  # tool -> ApprovalPolicy: part of the behaviour
    version: str = field(init=False)  # the behaviour hash, from all of the above

    def __post_init__(self) -> None:
        schemas = self.tools.schemas(self.allowlist)
        settings = behaviour_settings(self.settings, self.max_steps, self.approvals)
        self.version = behavior_version(self.agent_type, self.prompt, schemas, ",".join(self.models.model_ids()),
                                        __version__, settings)

    def model_id(self, task: dict[str, Any]) -> str:
        return self.models.model_id(task.get("tier"))

    async def run(self, task: dict[str, Any], run: DurableRun) -> AgentOutcome:
        """The task's agent loop, every model reply and tool result checkpointed (or
        replayed) through ``run``; every record has landed when it returns or raises
        (unless cancelled, or, when it returns, unless ``run.last_awaited_by_caller``: the
        lifecycle awaits the answer's record itself; durable.landed_at_exit)."""
        model = DurableModel(self.models.for_tier(task.get("tier")), run)
        history = None
        if self.settings.history_max_tokens:
            # The summary call goes through the same controls and is checkpointed like any step.
            history = HistoryCompressor(self.settings.history_max_tokens, self.settings.history_keep_recent, model)
        with tracing.agent_run(self.agent_type):  # the span `invoke_agent {type}` over its model and tool spans
            return await landed_at_exit(run, run_agent(
                task, self.agent_type, model, DurableTools(self.tools, run),
                self.allowlist, self.max_steps, self.prompt,
                timeout_s=self.settings.timeout_s, budget_usd=task.get("budget_usd") or self.settings.budget_usd,
                price=cost_usd, history=history,
            ))

    def result(self, task: dict[str, Any], outcome: AgentOutcome, started: int) -> dict[str, Any]:
        """The SpecialistResult record of ``task``'s ``outcome``."""
        return {
            "task_id": task["task_id"],
            "session_id": task["session_id"],
            "tenant_id": task["tenant_id"],
            "agent_type": self.agent_type,
            "route": task["route"],
            "input": task.get("input"),  # for the supervisor's review (topology: supervision)
            "router_usage": task.get("router_usage"),  # the supervisor counts it once per task
            "revision": int(task.get("revision") or 0),  # which run the supervisor waits for
            "status": outcome.status,
            "output": outcome.output,
            "error": {"code": outcome.error[0], "message": outcome.error[1]} if outcome.error else None,
            "tools_used": outcome.tools_used,
            "usage": {key: outcome.usage.get(key, 0) for key in USAGE_FIELDS},
            "behavior_version": self.version,
            "tier": task.get("tier") or DEFAULT_TIER,
            "model": self.model_id(task),
            "submitted_at": task["submitted_at"],
            "started_at": started,
            "finished_at": now_ms(),
            "variant": self.variant,
            "steps": outcome.steps,
            "tool_errors": outcome.tool_errors,
        }
