"""What a session remembers: the inputs and final answers of its earlier tasks.

The router keeps each session's last turns in its ``sessions`` table (a compacted
changelog), one turn per task that got its result, whichever specialists answered it.
It hands them to the specialists inside the routed task (``RoutedTask.history``), so a
specialist needs no table or read of its own and sees exactly the turns that existed
when the task was let go: the router lets a session's next task go only once the
previous one has its result.

A turn is ``{"task_id", "input", "output", "status", "agents"}``; a task that failed
has no output and its turn says so, so the model knows the earlier request went
unanswered. Old turns beyond ``max_turns`` are dropped here; what is left is still
subject to the specialist's history budget (specialist/history.py summarises it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentstream.models.base import Message

# Each remembered input or answer is clipped to this many characters, so one huge task
# cannot crowd every later task's routed record (the whole history travels in each).
TURN_TEXT_CHARS = 4_000


_CLIPPED = " …(clipped)"


def clip(text: str | None, limit: int = TURN_TEXT_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters, the marker included, so the model knows."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - len(_CLIPPED)] + _CLIPPED


def turn_from_result(task_input: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The turn one finished task adds to its session's memory (``result`` a TaskResult)."""
    return {
        "task_id": result["task_id"],
        "input": clip(task_input) or "",
        "output": clip(result.get("output")),
        "status": result["status"],
        "agents": list(result.get("agents") or []),
    }


def remember(turns: Sequence[Mapping[str, Any]], turn: Mapping[str, Any], max_turns: int) -> list[dict[str, Any]]:
    """``turns`` with ``turn`` appended, the oldest dropped past ``max_turns``."""
    kept = [dict(t) for t in turns if t["task_id"] != turn["task_id"]]
    kept.append(dict(turn))
    return kept[-max_turns:] if max_turns > 0 else []


def turn_messages(turns: Sequence[Mapping[str, Any]]) -> list[Message]:
    """The earlier turns as the conversation a model sees before the current input."""
    messages: list[Message] = []
    for turn in turns:
        messages.append(Message("user", str(turn.get("input") or "")))
        output = turn.get("output")
        if output and turn.get("status") == "COMPLETED":
            messages.append(Message("assistant", str(output)))
        else:
            # The model must not take an unanswered request for an answered one.
            said = f" What was found: {output}" if output else ""
            messages.append(Message("assistant", f"(This request was not answered: {turn.get('status')}.){said}"))
    return messages
