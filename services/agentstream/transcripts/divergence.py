"""Where two runs of a task part ways: the first step whose essentials differ. Pure.

A step's essentials are what it produced — a model reply's text and tool calls (name and
arguments; call ids are the provider's and say nothing about behaviour), a tool result's
name, outcome and content — not when it ran, how long it took or what it cost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentstream.transcripts.record import MODEL, in_call_order

_SHOWN_CHARS = 300


def essentials(step: Mapping[str, Any]) -> dict[str, Any]:
    """What of a checkpoint step counts when two runs are compared."""
    if step.get("kind") == MODEL:
        calls = [{"name": c["name"], "arguments": c["arguments"]} for c in step.get("tool_calls") or ()]
        return {"kind": MODEL, "step": step.get("step"), "text": step.get("text"), "tool_calls": calls}
    return {"kind": step.get("kind"), "step": step.get("step"), "index": step.get("index"), "name": step.get("name"),
            "ok": step.get("ok"), "content": step.get("content")}


@dataclass(frozen=True, slots=True)
class Divergence:
    """The first differing step: its position in both runs, and each side (None: that
    run had no step there, it ended earlier)."""

    position: int
    recorded: dict[str, Any] | None
    replayed: dict[str, Any] | None

    def describe(self) -> str:
        differing = _differing(self.recorded, self.replayed)
        return "\n".join([
            f"runs diverge at step {self.position + 1}" + (f" ({', '.join(differing)} differ):" if differing else ":"),
            f"  recorded: {_show(self.recorded, differing)}",
            f"  replayed: {_show(self.replayed, differing)}",
        ])


def first_divergence(recorded: Sequence[Mapping[str, Any]], replayed: Sequence[Mapping[str, Any]]) -> Divergence | None:
    """The first position (in call order, record.in_call_order) where the essentials
    differ, or where one run has a step the other has not; None when the two runs took
    the same steps."""
    recorded, replayed = in_call_order(recorded), in_call_order(replayed)
    for position in range(max(len(recorded), len(replayed))):
        mine = essentials(recorded[position]) if position < len(recorded) else None
        theirs = essentials(replayed[position]) if position < len(replayed) else None
        if mine != theirs:
            return Divergence(position, mine, theirs)
    return None


def _differing(mine: Mapping[str, Any] | None, theirs: Mapping[str, Any] | None) -> list[str]:
    """The fields of two steps of the same kind that differ (none: a step is missing or
    the kinds differ, and both are shown whole)."""
    if mine is None or theirs is None or mine.get("kind") != theirs.get("kind"):
        return []
    return [key for key in mine if mine.get(key) != theirs.get(key)]


def _show(step: Mapping[str, Any] | None, fields: Sequence[str] = ()) -> str:
    """The step (its kind, position and the ``fields`` that differ, when given), clipped."""
    if step is None:
        return "(no step: this run had ended)"
    shown = {key: step.get(key) for key in ("kind", "step", "index", *fields) if key in step} if fields else step
    text = json.dumps(shown, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
