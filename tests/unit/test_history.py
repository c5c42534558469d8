"""History compression: older turns become one summary; system prompt, recent turns,
the question and tool-call/result pairs stay intact."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Sequence
from typing import Any

import pytest

from agentstream.controls import (
    FallbackChain,
    FaultyModel,
    GuardedModel,
    ManualClock,
    RetryPolicy,
)
from agentstream.errors import ConfigurationError
from agentstream.models import Message, ModelResponse, ToolCall, Usage
from agentstream.models.errors import ModelServerError
from agentstream.specialist.history import SUMMARY_PREFIX, HistoryCompressor, estimate_message_tokens, is_summary

SYSTEM = Message("system", "You are the billing support specialist.")
FILLER = "x" * 400  # ~100 tokens


class Summarizer:
    """Answers every call with a fixed summary and records what it was asked."""

    model_id = "test:summarizer"

    def __init__(self, text: str = "Customer asked about INV-1002; it is paid.") -> None:
        self.text = text
        self.prompts: list[list[Message]] = []

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        self.prompts.append(list(messages))
        return ModelResponse(self.text, (), Usage(50, 10, 0.0005), self.model_id)


def _tool_turn(n: int) -> list[Message]:
    calls = (
        ToolCall(f"c{n}a", "lookup_invoice", {"invoice_id": f"INV-{n}"}),
        ToolCall(f"c{n}b", "search_kb", {"query": "q"}),
    )
    return [
        Message("assistant", None, tool_calls=calls),
        Message("tool", f"invoice {n}: {FILLER}", tool_call_id=f"c{n}a", name="lookup_invoice"),
        Message("tool", f"kb {n}: {FILLER}", tool_call_id=f"c{n}b", name="search_kb"),
    ]


def _conversation() -> list[Message]:
    return [
        SYSTEM,
        Message("user", "I was charged twice on INV-1002. " + FILLER),
        *_tool_turn(1),
        Message("assistant", "Let me check one more thing."),
        *_tool_turn(2),
        *_tool_turn(3),
    ]


def _compress(messages: list[Message], compressor: HistoryCompressor) -> Any:
    return asyncio.run(compressor.compress(messages))


def test_under_the_limit_nothing_changes_and_no_model_is_called() -> None:
    summarizer = Summarizer()
    result = _compress(_conversation(), HistoryCompressor(100_000, 2, summarizer))
    assert result.messages == _conversation() and result.response is None and result.replaced == 0
    assert summarizer.prompts == []


def test_older_turns_become_one_summary_and_recent_turns_stay_verbatim() -> None:
    summarizer = Summarizer()
    messages = _conversation()
    result = _compress(messages, HistoryCompressor(500, 2, summarizer))
    kept = result.messages
    assert kept[0] == SYSTEM  # the system prompt is never summarised
    assert is_summary(kept[1]) and kept[1].content == f"{SUMMARY_PREFIX}\nCustomer asked about INV-1002; it is paid."
    assert kept[2] == messages[1]  # the question stays word for word
    assert kept[3:] == messages[-6:]  # the two most recent turns, each a call with both results
    assert result.replaced == 4  # turn 1 (call + 2 results) and the plain assistant message
    assert result.response.usage == Usage(50, 10, 0.0005)
    transcript = summarizer.prompts[0][1].content or ""
    assert "[calls lookup_invoice" in transcript and "[tool search_kb] kb 1:" in transcript
    assert "[user]" not in transcript  # the pinned question is not summarised


def test_a_tool_call_is_never_separated_from_its_results() -> None:
    for keep in range(5):
        result = _compress(_conversation(), HistoryCompressor(200, keep, Summarizer()))
        open_calls: set[str] = set()
        for message in result.messages:
            open_calls |= {call.id for call in message.tool_calls}
            if message.role == "tool":
                assert message.tool_call_id in open_calls, f"orphan tool result with keep_recent={keep}"


def test_a_previous_summary_is_folded_into_the_next() -> None:
    summarizer = Summarizer("second summary")
    first = _compress(_conversation(), HistoryCompressor(500, 2, Summarizer("first summary"))).messages
    grown = [*first, *_tool_turn(4)]
    second = _compress(grown, HistoryCompressor(500, 1, summarizer)).messages
    assert [m for m in second if is_summary(m)] == [Message("system", f"{SUMMARY_PREFIX}\nsecond summary")]
    assert "[earlier summary] first summary" in (summarizer.prompts[0][1].content or "")
    assert second[-3:] == grown[-3:]


def test_a_failed_summary_leaves_the_conversation_as_it_was() -> None:
    down = FaultyModel(script=[ModelServerError("HTTP 500")] * 2)
    guarded = GuardedModel(down, retry=RetryPolicy(max_attempts=2), clock=ManualClock())
    result = _compress(_conversation(), HistoryCompressor(500, 2, guarded))
    assert result.messages == _conversation() and result.response is None
    assert result.error is not None and "ModelServerError" in result.error
    assert down.calls == 2  # the summary call went through the retry control


def test_a_minimum_viable_answer_is_not_taken_for_a_summary() -> None:
    chain = FallbackChain([FaultyModel(script=[ModelServerError("HTTP 500")])])
    result = _compress(_conversation(), HistoryCompressor(500, 2, chain))
    assert result.messages == _conversation() and result.error == "no model was available for the summary"


def test_nothing_old_enough_means_no_call() -> None:
    summarizer = Summarizer()
    messages = [SYSTEM, Message("user", FILLER * 10)]
    result = _compress(messages, HistoryCompressor(10, 2, summarizer))
    assert result.messages == messages and summarizer.prompts == [] and result.error


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="max_tokens"):
        HistoryCompressor(0, 2, Summarizer())
    with pytest.raises(ConfigurationError, match="keep_recent"):
        HistoryCompressor(100, -1, Summarizer())


def test_a_tool_calls_estimate_counts_its_arguments_as_the_standard_library_spells_them() -> None:
    # Compression decisions of a resumed run must not change with the worker's version:
    # the arguments' text is json.dumps(arguments, default=str), spaces, escapes and all.
    arguments = {"query": "café refund", "when": datetime.date(2026, 12, 3), "ids": [1, 2.5, None], "deep": {"a": True}}
    message = Message("assistant", "checking", tool_calls=(ToolCall("c1", "search_kb", arguments),))
    chars = len("checking") + len("search_kb") + len(json.dumps(arguments, default=str))
    assert estimate_message_tokens(message) == chars // 4 + 4
