"""Tools models may call: the ``@tool`` decorator, the registry that runs them, the loader of app modules."""

from __future__ import annotations

from agentstream.tools.registry import DEFAULT_TIMEOUT_S, Tool, ToolRegistry, ToolResult, tool

__all__ = ["DEFAULT_TIMEOUT_S", "Tool", "ToolRegistry", "ToolResult", "tool"]
