"""The tools of a shadow run: side-effecting ones answered from the live run's record, or
refused; the rest as they are.

A tool has side effects when it says so (``@tool(side_effects=True)``) or when the live
version's topology holds its calls for a human's approval (``approvals:``): both mean
"this acts on the world", and a shadow never calls one. A shadow runs a task after the
live run of it has finished (it reads the live runs' transcripts, rollout/shadow.py), so
such a call is answered with the live run's recorded result of the same call — same tool,
same arguments, by the hash replay uses (transcripts/recorded.py) — and the shadow goes
on as the live run did. A call the live run did not make (another tool, other arguments)
is refused, with a result the model reads like any tool error. Either way the shadow's
result lists what happened to each such call (``SpecialistResult.dry_run``).

The live run's results travel with the shadow's copy of the task, in its metadata under
``LIVE_RESULTS`` (only those of side-effecting tools): the task is what the shadow's
checkpoint head keeps, so a shadow run resumed by another worker still has them.
Read-only tools run for real, so the shadow answers from real data.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from agentstream.tools.registry import DEFAULT_TIMEOUT_S, ToolRegistry, ToolResult
from agentstream.transcripts.recorded import RecordedCalls

# The metadata key of a shadow's task holding the live run's side-effecting results (JSON,
# RecordedCalls.to_json). Specialists do not read task metadata, so the model never sees it.
LIVE_RESULTS = "agentstream.shadow.live-results"
ANSWERED = "{name}: answered from the live run's recorded result"
REFUSED = "{name}: refused: {reason}"
DRY_RUN_REFUSAL = "Error: dry run: {name} has side effects, and a shadow run calls no such tool; {reason}."
NOT_IN_LIVE_RUN = "the live run made no {name} call with these arguments ({arguments})"
NO_LIVE_RECORD = "no record of the live run came with the task"
_SHOWN_CHARS = 200


class LiveAnswers:
    """The live run's side-effecting results for one shadow run, and what became of each
    such call of the shadow (``notes``, in call order)."""

    def __init__(self, recorded: RecordedCalls | None) -> None:
        self.recorded = recorded
        self.notes: list[str] = []

    @classmethod
    def of_task(cls, task: Mapping[str, Any]) -> LiveAnswers:
        encoded = (task.get("metadata") or {}).get(LIVE_RESULTS)
        return cls(RecordedCalls.from_json(encoded) if encoded is not None else None)

    def answer(self, name: str, arguments: object) -> ToolResult:
        found = self.recorded.answer(name, arguments) if self.recorded is not None else None
        if found is not None:
            self.notes.append(ANSWERED.format(name=name))
            return found
        if self.recorded is None:
            reason = NO_LIVE_RECORD
        else:
            shown = json.dumps(arguments, sort_keys=True, default=str)[:_SHOWN_CHARS]
            reason = NOT_IN_LIVE_RUN.format(name=name, arguments=shown)
        self.notes.append(REFUSED.format(name=name, reason=reason))
        return ToolResult(name, False, DRY_RUN_REFUSAL.format(name=name, reason=reason))


# The answers of the shadow run in progress: set around the run (rollout/shadow.py), read
# by its tool calls, which run in tasks and threads that copy the context.
_live: ContextVar[LiveAnswers | None] = ContextVar("agentstream_shadow_live_answers", default=None)


@contextmanager
def answering(answers: LiveAnswers) -> Iterator[LiveAnswers]:
    """Within the block, side-effecting calls are answered by ``answers``."""
    token = _live.set(answers)
    try:
        yield answers
    finally:
        _live.reset(token)


def side_effecting(registry: ToolRegistry, allowlist: Collection[str], held: Collection[str]) -> list[str]:
    """The allowed tools a shadow must not call: declared so, or held for approval."""
    return sorted(name for name in allowlist
                  if name in held or ((found := registry.get(name)) is not None and found.side_effects))


class DryRunTools(ToolRegistry):
    """``inner``'s tools, with the calls of ``refused`` answered from the live run's record
    or refused, never run. Their schemas are unchanged, so the model is offered the same
    tools as in a real run."""

    def __init__(self, inner: ToolRegistry, refused: Collection[str]) -> None:
        super().__init__(inner.all_tools(), max_result_chars=inner.max_result_chars)
        self.inner = inner
        self.refused = frozenset(refused)

    async def call(self, name: str, arguments: object, timeout_s: float = DEFAULT_TIMEOUT_S) -> ToolResult:
        if name not in self.refused:
            return await self.inner.call(name, arguments, timeout_s)
        return (_live.get() or LiveAnswers(None)).answer(name, arguments)


def shadow_task(task: Mapping[str, Any], live_steps: list[dict[str, Any]], refused: Collection[str]) -> dict[str, Any]:
    """The shadow's copy of a live run's ``task``: the same routed task, with the live run's
    results of the ``refused`` tools (from its transcript's ``live_steps``) in its metadata."""
    recorded = RecordedCalls.of_steps(live_steps).to_json(refused)
    return {**task, "metadata": {**(task.get("metadata") or {}), LIVE_RESULTS: recorded}}
