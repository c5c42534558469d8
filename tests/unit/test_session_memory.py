"""What a session remembers, and how a specialist's model sees it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from agentstream.models.base import Message, ModelResponse, Usage
from agentstream.session_memory import TURN_TEXT_CHARS, remember, turn_from_result, turn_messages
from agentstream.specialist.loop import run_agent
from agentstream.tools.registry import ToolRegistry


def test_a_turn_is_clipped_so_one_huge_task_cannot_crowd_the_rest() -> None:
    turn = turn_from_result("x" * 50_000, {"task_id": "t", "output": "y" * 50_000, "status": "COMPLETED", "agents": None})
    assert len(turn["input"]) == TURN_TEXT_CHARS and len(turn["output"]) == TURN_TEXT_CHARS
    assert turn["input"].endswith("(clipped)") and turn["agents"] == []


def test_remember_replaces_a_repeated_task_and_zero_turns_remembers_nothing() -> None:
    one = {"task_id": "t1", "input": "a", "output": "b", "status": "COMPLETED", "agents": []}
    again = {**one, "output": "c"}
    assert remember([one], again, 10) == [again]
    assert remember([one], again, 0) == []


def test_an_unanswered_turn_says_so_to_the_model() -> None:
    messages = turn_messages([
        {"task_id": "t1", "input": "charged twice?", "output": "Yes, refunded.", "status": "COMPLETED", "agents": ["billing"]},
        {"task_id": "t2", "input": "and the VPN?", "output": None, "status": "FAILED", "agents": []},
    ])
    assert [(m.role, m.content) for m in messages] == [
        ("user", "charged twice?"),
        ("assistant", "Yes, refunded."),
        ("user", "and the VPN?"),
        ("assistant", "(This request was not answered: FAILED.)"),
    ]


class _Recording:
    """A model that answers at once and keeps what it was sent."""

    model_id = "recording"

    def __init__(self) -> None:
        self.seen: list[list[Message]] = []

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None) -> ModelResponse:
        self.seen.append(list(messages))
        return ModelResponse(text="ok", tool_calls=[], usage=Usage(1, 1), model=self.model_id)


def test_the_loop_puts_the_sessions_turns_between_the_prompt_and_the_input() -> None:
    model = _Recording()
    task = {
        "task_id": "t2", "session_id": "s", "input": "and what about the other invoice?",
        "history": [{"task_id": "t1", "input": "charged twice on INV-1002", "output": "Refunded INV-1002.",
                     "status": "COMPLETED", "agents": ["billing"]}],
    }
    outcome = asyncio.run(run_agent(task, "technical", model, ToolRegistry(), [], system_prompt="be brief"))
    assert outcome.status == "COMPLETED"
    assert [(m.role, m.content) for m in model.seen[0]] == [
        ("system", "be brief"),
        ("user", "charged twice on INV-1002"),
        ("assistant", "Refunded INV-1002."),
        ("user", "and what about the other invoice?"),
    ]
