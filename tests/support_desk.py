"""The support-desk example app (examples/support_desk) for tests, loaded the way a worker
loads it: its topology through the topology loader, its tools.py through the tools loader.

Nothing under services/ imports the app; tests that exercise the runtime with realistic
tools and planning rules take them from here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from agentstream.demo import load_tickets
from agentstream.models import ScriptedModel
from agentstream.models.scripted_rules import ScriptedRule
from agentstream.tools.loader import import_tools_module, load_tools
from agentstream.tools.registry import ToolRegistry
from agentstream.topology import Topology, load_topology

APP = Path(__file__).resolve().parents[1] / "examples" / "support_desk"


def topology() -> Topology:
    return load_topology(APP)


def registry() -> ToolRegistry:
    """A fresh registry with the app's tools."""
    return load_tools(topology().tools_modules, APP)


def tools_module() -> ModuleType:
    """The app's tools.py, the module the specialists import (its data helpers too)."""
    return import_tools_module(topology().tools_modules[0], APP)


def allowlist(agent_type: str) -> tuple[str, ...]:
    """The tools ``agent_type`` may call, from the app's topology."""
    return topology().agent(agent_type).tools


def allowlists() -> dict[str, tuple[str, ...]]:
    return {agent_type: allowlist(agent_type) for agent_type in topology().specialist_types}


def rules(agent_type: str) -> tuple[ScriptedRule, ...]:
    """The ScriptedModel's planning rules of ``agent_type`` in the app's topology."""
    settings = topology().agent(agent_type).model
    return settings.scripted if settings else ()


def scripted_model(agent_type: str, **kwargs: Any) -> ScriptedModel:
    """A ScriptedModel planning as the app's ``agent_type`` does."""
    return ScriptedModel(rules=rules(agent_type), **kwargs)


def tickets() -> list[dict[str, Any]]:
    return load_tickets(APP)


def copy_app(directory: Path) -> Path:
    """The app's files (tools, data, prompts) copied into ``directory``, where a test then
    writes its edited topology.yaml: the relative paths the topology names still resolve."""
    shutil.copytree(APP, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return directory / "topology.yaml"
