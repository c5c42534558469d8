"""What a specialist's model sees of a revision: the supervisor sent the task back
(RoutedTask.revision > 0) with the specialist's earlier answer and the reviewer's feedback.

The conversation goes on from the task as if the answer had just been given: the earlier
answer as the assistant's turn, then the feedback as the next user turn, so the model
knows what it said and what to fix. Pure; specialist/loop.py puts these after the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentstream.models.base import Message


def revision_messages(task: Mapping[str, Any]) -> list[Message]:
    """The turns a revision adds after the task's input; none for a first run."""
    revision = int(task.get("revision") or 0)
    if revision == 0:
        return []
    earlier = str(task.get("previous_output") or "(you gave no answer)")
    feedback = str(task.get("feedback") or "").strip()
    ask = (
        f"A reviewer sent your answer back (revision {revision}). What to fix: {feedback}\n"
        "Answer the request again, fixing that; use your tools where a fact must be checked."
    )
    return [Message("assistant", earlier), Message("user", ask)]
