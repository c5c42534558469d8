"""The tools of an eval run: the agent's own, except those that act on the world — held for a
human's approval (``approvals:``) or declared ``@tool(side_effects=True)`` (the set a shadow
never calls, rollout/dry_run.py): an eval, which CI runs, refuses them instead of running them
(an eval case has no live run whose results could answer them).
The model reads the refusal as the tool's result."""

from __future__ import annotations

from collections.abc import Collection

from agentstream.tools.registry import DEFAULT_TIMEOUT_S, ToolRegistry, ToolResult


class HeldTools(ToolRegistry):
    def __init__(self, inner: ToolRegistry, held: Collection[str]) -> None:
        super().__init__(inner.all_tools(), max_result_chars=inner.max_result_chars)
        self.inner = inner
        self.held = frozenset(held)

    async def call(self, name: str, arguments: object, timeout_s: float = DEFAULT_TIMEOUT_S) -> ToolResult:
        if name in self.held:
            return ToolResult(name, False, f"Error: {name} needs a human's approval or has side effects, and is not run in an eval.")
        return await self.inner.call(name, arguments, timeout_s)
