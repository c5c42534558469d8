"""The specialist: runs a tool-using agent loop for one agent type."""

from __future__ import annotations

from agentstream.specialist.behavior import behavior_version
from agentstream.specialist.loop import AgentOutcome, default_system_prompt, run_agent

__all__ = ["AgentOutcome", "behavior_version", "default_system_prompt", "run_agent"]
