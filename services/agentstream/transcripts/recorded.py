"""A model and tools that answer from a transcript, for replay.

- RecordedModel answers the n-th call with the n-th recorded reply (the loop is
  deterministic given its replies, so this is the recorded run again).
- RecordedTools answers a call with the recorded result of the same call — same tool,
  same arguments (by a hash of their canonical JSON) — and refuses any other: nothing
  acts on the world in a replay, whatever the version under test asks for.
- RecordedCalls is that matching on its own; a shadow run answers its side-effecting
  calls with it from the live run's transcript (rollout/dry_run.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from agentstream.errors import AgentStreamError
from agentstream.models.base import Message, ModelResponse
from agentstream.specialist import checkpoint as ckpt
from agentstream.tools.registry import DEFAULT_TIMEOUT_S, ToolRegistry, ToolResult
from agentstream.transcripts.record import MODEL, TOOL, in_call_order


class OffTheRecord(AgentStreamError):
    """The replayed loop asked for a model reply the transcript does not have."""


def call_key(name: str, arguments: object) -> str:
    """A tool call's identity: its name and a hash of its arguments' canonical JSON."""
    # The standard library, not jsoncodec: keys travel in shadow tasks (to_json) across worker
    # versions, and a replay is not a per-task hot path.
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"{name}:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


class RecordedModel:
    """A Model replaying the recorded replies in call order."""

    def __init__(self, steps: Sequence[Mapping[str, Any]], model_id: str = "replay:recorded") -> None:
        self.model_id = model_id
        self._replies = sorted((s for s in steps if s.get("kind") == MODEL), key=lambda s: int(s["step"]))
        self.calls = 0

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        call = self.calls
        self.calls += 1
        if call >= len(self._replies):
            raise OffTheRecord(f"the replay asked for model reply {call + 1}; the transcript has {len(self._replies)}")
        return ckpt.response_of(self._replies[call])


class RecordedCalls:
    """A run's recorded tool results by call key, handed out in the order they were made:
    the same call made more often than recorded gets the last recorded result again."""

    def __init__(self, results: Mapping[str, Sequence[ToolResult]]) -> None:
        self._results = {key: list(found) for key, found in results.items()}
        self._used: dict[str, int] = {}

    @classmethod
    def of_steps(cls, steps: Sequence[Mapping[str, Any]]) -> RecordedCalls:
        return cls(_recorded_results(steps))

    def answer(self, name: str, arguments: object) -> ToolResult | None:
        """The recorded result of this call (same tool, same arguments), or None."""
        key = call_key(name, arguments)
        results = self._results.get(key)
        if not results:
            return None
        used = self._used.get(key, 0)
        self._used[key] = used + 1
        return results[min(used, len(results) - 1)]

    def to_json(self, names: Collection[str]) -> str:
        """The recorded results of calls to the tools ``names``, as compact JSON."""
        kept = {key: [[r.ok, r.content] for r in found] for key, found in self._results.items()
                if _tool_of(key) in names}
        return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> RecordedCalls:
        raw: dict[str, list[list[Any]]] = json.loads(text)
        return cls({key: [ToolResult(_tool_of(key), bool(ok), str(content)) for ok, content in found]
                    for key, found in raw.items()})


class RecordedTools(ToolRegistry):
    """The tools of ``inner`` (their schemas, for the model), answered from the record."""

    def __init__(self, inner: ToolRegistry, steps: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(inner.all_tools(), max_result_chars=inner.max_result_chars)
        self._calls = RecordedCalls.of_steps(steps)
        self.refused: list[str] = []

    async def call(self, name: str, arguments: object, timeout_s: float = DEFAULT_TIMEOUT_S) -> ToolResult:
        answer = self._calls.answer(name, arguments)
        if answer is not None:
            return answer
        self.refused.append(call_key(name, arguments))
        shown = json.dumps(arguments, sort_keys=True, default=str)[:200]
        return ToolResult(name, False, f"Error: replay: {name}({shown}) was not called in the recorded run, so it "
                                       "has no recorded result; tools do not run in a replay.")


def _tool_of(key: str) -> str:
    """The tool name of a call key (``call_key``: the name, a colon, the hash)."""
    return key.rsplit(":", 1)[0]


def _recorded_results(steps: Sequence[Mapping[str, Any]]) -> dict[str, list[ToolResult]]:
    """Call key -> the recorded results of that call, in the order they were made."""
    calls = {
        (int(step["step"]), index): call_key(call["name"], call["arguments"])
        for step in steps if step.get("kind") == MODEL
        for index, call in enumerate(step.get("tool_calls") or ())
    }
    found: dict[str, list[ToolResult]] = {}
    for step in in_call_order(steps):  # a step's identical calls are asked for in index order
        if step.get("kind") == TOOL:
            key = calls.get((int(step["step"]), int(step["index"])))
            if key is not None:
                found.setdefault(key, []).append(ckpt.tool_result_of(step))
    return found
