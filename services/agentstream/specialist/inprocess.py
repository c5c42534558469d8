"""A specialist's agent loop run in this process, without Kafka: for replays and evals.

The same code as a worker's — SpecialistAgent.run through a DurableRun — except that the
steps it would checkpoint are kept in a list, which is exactly what a transcript holds,
so a replayed run and its record compare step for step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentstream.errors import ConfigurationError
from agentstream.events import now_ms
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.agent import SpecialistAgent
from agentstream.specialist.durable import DurableRun
from agentstream.specialist.loop import AgentOutcome
from agentstream.tier import DEFAULT_TIER
from agentstream.topology import Topology, load_topology, variant_name

LIVE = "live"
CANDIDATE = "candidate"


@dataclass
class InProcessRun:
    """One in-process run: its outcome, the steps it checkpointed, its wall-clock time."""

    outcome: AgentOutcome
    steps: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: int = 0


async def run_in_process(agent: SpecialistAgent, task: Mapping[str, Any]) -> InProcessRun:
    """Run ``task`` through ``agent``'s loop; every step is kept instead of checkpointed."""
    steps: list[dict[str, Any]] = []

    async def keep(key: str, value: dict[str, Any]) -> None:
        steps.extend(ckpt.step_entries(value))  # as a transcript lists them

    run = DurableRun(ckpt.run_id(task), 0, ckpt.Chain(), keep)
    began = time.monotonic()
    outcome = await agent.run(dict(task), run)
    return InProcessRun(outcome, steps, round((time.monotonic() - began) * 1000))


def version_worker(live: Topology, agent_type: str, version: str) -> tuple[Topology, str]:
    """The topology and worker name whose settings make up ``version`` of ``agent_type``:
    ``live`` (the topology as loaded), ``candidate`` (its declared candidate version, the
    worker ``<type>.candidate`` or ``<type>.shadow`` of README "Rolling out a new agent
    version") or the path of another topology file or app folder."""
    live.agent(agent_type)  # an unknown agent type is refused first
    if version == LIVE:
        return live, agent_type
    if version == CANDIDATE:
        candidate = live.candidate_of(agent_type)
        if candidate is None:
            raise ConfigurationError(
                f"This topology declares no candidate version of {agent_type!r} (`candidate:` under the agent); "
                "declare one, or pass --version with the path of a topology file or app folder that holds the other "
                "version's settings.")
        return live, variant_name(agent_type, candidate.mode)
    path = Path(version)
    if not path.exists():
        raise ConfigurationError(
            f"--version {version!r} is neither {LIVE!r}, {CANDIDATE!r} nor an existing topology file or app folder.")
    other = load_topology(path, prefix=live.prefix)
    other.agent(agent_type)
    return other, agent_type


def eval_task(case_id: str, text: str, agent_type: str, tier: str | None = None) -> dict[str, Any]:
    """A RoutedTask-shaped task for one eval case (no session history, no revision)."""
    return {
        "task_id": f"eval-{case_id}", "session_id": f"eval-{case_id}", "tenant_id": "eval", "input": text,
        "submitted_at": now_ms(), "agent_type": agent_type, "route": [agent_type], "tier": tier or DEFAULT_TIER,
        "metadata": {}, "routed_at": now_ms(), "budget_usd": None, "history": [], "revision": 0,
    }
