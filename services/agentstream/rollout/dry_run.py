"""The tools of a shadow run: side-effecting ones refused, the rest as they are.

A tool has side effects when it says so (``@tool(side_effects=True)``) or when the live
version's topology holds its calls for a human's approval (``approvals:``): both mean
"this acts on the world". A shadow run refuses such a call, with a result the model
reads like any tool error, instead of answering it from the live run's recorded result:
the live run of the same task runs at the same time, so its results are not there yet
to read. Read-only tools run for real, so the shadow answers from real data.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from agentstream.tools.registry import Tool, ToolRegistry

DRY_RUN_REFUSAL = "dry run: {name} has side effects, and a shadow run calls no such tool"


class DryRunRefused(RuntimeError):
    """Raised in place of a side-effecting tool; the registry turns it into an error result."""


def side_effecting(registry: ToolRegistry, allowlist: Collection[str], held: Collection[str]) -> list[str]:
    """The allowed tools a shadow must not call: declared so, or held for approval."""
    return sorted(name for name in allowlist
                  if name in held or ((found := registry.get(name)) is not None and found.side_effects))


def dry_run(registry: ToolRegistry, refused: Collection[str]) -> ToolRegistry:
    """A registry like ``registry`` whose ``refused`` tools fail without running. Their
    schemas are unchanged, so the model is offered the same tools as in a real run."""
    tools = [_refusing(tool) if tool.name in refused else tool
             for name in registry.names() if (tool := registry.get(name)) is not None]
    return ToolRegistry(tools, max_result_chars=registry.max_result_chars)


def _refusing(tool: Tool) -> Tool:
    def refuse(**arguments: Any) -> str:
        raise DryRunRefused(DRY_RUN_REFUSAL.format(name=tool.name))

    return replace(tool, fn=refuse, is_async=False)
