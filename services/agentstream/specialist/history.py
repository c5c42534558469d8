"""History compression: a long conversation's older turns become one summary message.

Context windows and budgets are finite, and a tool-using loop or a long session grows
without bound. When the estimated tokens pass ``max_tokens``, the compressor asks a model
(pass one behind the same controls as the agent: ``GuardedModel``/``FallbackChain``) to
summarise the older turns and replaces them with that summary.

What is never summarised:
- the leading system prompt(s): they are the agent's instructions, not history;
- the ``keep_recent`` most recent turns, kept verbatim;
- the latest user message: the question being answered must stay word for word.
A turn is a user message, a plain assistant message, or an assistant tool-call message
together with its tool results: providers reject a tool result whose call is gone, so a
call and its results are summarised or kept together, never split.

A failed summary call does not fail the task: the conversation goes on uncompressed
(the failure is logged and reported in ``Compression.error``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentstream.controls.fallback import is_minimum_viable
from agentstream.errors import ConfigurationError
from agentstream.models.base import Message, Model, ModelResponse
from agentstream.models.errors import ModelError

log = logging.getLogger(__name__)

SUMMARY_PREFIX = "Summary of the earlier conversation (older turns were compressed):"

SUMMARIZER_PROMPT = (
    "You compress the history of a conversation for the assistant that continues it. "
    "Write a concise summary that keeps every fact, identifier (of records, documents, "
    "accounts, tickets), tool result, decision and open question; drop pleasantries. "
    "Write plain prose or short bullet points, no preamble."
)

# Each message is clipped in the transcript the summariser reads, so compressing a huge
# history cannot itself overflow the summariser's context window.
_TRANSCRIPT_MESSAGE_CHARS = 4_000
_MESSAGE_OVERHEAD_TOKENS = 4
# json.dumps(arguments, default=str), built once: json.dumps builds an encoder per call
# when given options, half the cost of a small call's estimate. The text, and so every
# estimate (whether a conversation is compressed), is the same.
_ARGUMENTS_JSON = json.JSONEncoder(default=str)

Turn = list[Message]


def estimate_message_tokens(message: Message) -> int:
    """About four characters per token, plus the framing every message costs."""
    chars = len(message.content or "")
    if message.tool_calls:  # most messages have none: no generator to build for them
        chars += sum(len(call.name) + len(_ARGUMENTS_JSON.encode(call.arguments)) for call in message.tool_calls)
    return chars // 4 + _MESSAGE_OVERHEAD_TOKENS


def is_summary(message: Message) -> bool:
    return message.role == "system" and (message.content or "").startswith(SUMMARY_PREFIX)


@dataclass(frozen=True, slots=True)
class Compression:
    """The conversation after ``compress``.

    ``response``: the summariser's reply (its usage belongs to the task), None when no
    call was made; ``replaced``: how many messages the summary replaced (0: unchanged);
    ``error``: why compression was needed but did not happen.
    """

    messages: list[Message]
    response: ModelResponse | None = None
    replaced: int = 0
    error: str | None = None


class HistoryCompressor:
    """Keeps a conversation under ``max_tokens`` (estimated) by summarising old turns."""

    def __init__(
        self,
        max_tokens: int,
        keep_recent: int,
        summarizer: Model,
        *,
        estimate: Callable[[Message], int] = estimate_message_tokens,
    ) -> None:
        if max_tokens < 1:
            raise ConfigurationError(f"HistoryCompressor max_tokens must be at least 1, got {max_tokens}.")
        if keep_recent < 0:
            raise ConfigurationError(f"HistoryCompressor keep_recent must not be negative, got {keep_recent}.")
        self.max_tokens = max_tokens
        self.keep_recent = keep_recent
        self.summarizer = summarizer
        self.estimate = estimate

    def tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.estimate(message) for message in messages)

    async def compress(self, messages: Sequence[Message]) -> Compression:
        """``messages`` unchanged while under the limit; else with older turns summarised."""
        if self.tokens(messages) <= self.max_tokens:
            return Compression(list(messages))
        pinned, turns = _pinned_and_turns(messages)
        cut = max(0, len(turns) - self.keep_recent)
        older, recent = turns[:cut], turns[cut:]
        question = None if any(_has_user(turn) for turn in recent) else _latest_user_turn(older)
        to_summarise = [message for turn in older if turn is not question for message in turn]
        if not to_summarise or (len(to_summarise) == 1 and is_summary(to_summarise[0])):
            return Compression(list(messages), error="over the token limit, but no older turns to summarise")
        response, error = await self._summarise(to_summarise)
        if response is None:
            log.warning("history compression skipped: %s", error)
            return Compression(list(messages), error=error)
        summary = Message("system", f"{SUMMARY_PREFIX}\n{(response.text or '').strip()}")
        kept = [*pinned, summary, *(question or []), *(m for turn in recent for m in turn)]
        return Compression(kept, response, len(to_summarise))

    async def _summarise(self, messages: Sequence[Message]) -> tuple[ModelResponse | None, str | None]:
        prompt = [Message("system", SUMMARIZER_PROMPT), Message("user", _transcript(messages))]
        try:
            response = await self.summarizer.complete(prompt, [])
        except ModelError as exc:
            return None, f"the summary call failed: {type(exc).__name__}: {exc}"
        if is_minimum_viable(response):
            return None, "no model was available for the summary"
        if not (response.text or "").strip() or response.tool_calls:
            return None, "the summariser returned no summary text"
        return response, None


def _pinned_and_turns(messages: Sequence[Message]) -> tuple[list[Message], list[Turn]]:
    """The leading system prompt(s), and the rest grouped into turns."""
    index = 0
    while index < len(messages) and messages[index].role == "system" and not is_summary(messages[index]):
        index += 1
    turns: list[Turn] = []
    for message in messages[index:]:
        # A tool result belongs to the turn of the call before it (also when the model
        # made several calls in one turn); anything else starts a turn of its own.
        if message.role == "tool" and turns:
            turns[-1].append(message)
        else:
            turns.append([message])
    return list(messages[:index]), turns


def _has_user(turn: Turn) -> bool:
    return any(message.role == "user" for message in turn)


def _latest_user_turn(turns: Sequence[Turn]) -> Turn | None:
    return next((turn for turn in reversed(turns) if _has_user(turn)), None)


def _transcript(messages: Sequence[Message]) -> str:
    lines: list[str] = []
    for message in messages:
        text = _clip(message.content or "")
        if is_summary(message):
            lines.append(f"[earlier summary] {text[len(SUMMARY_PREFIX) :].strip()}")
        elif message.role == "tool":
            lines.append(f"[tool {message.name}] {text}")
        else:
            calls = "".join(f" [calls {c.name}({json.dumps(c.arguments, default=str)})]" for c in message.tool_calls)
            lines.append(f"[{message.role}] {text}{calls}".rstrip())
    return "\n".join(lines)


def _clip(text: str) -> str:
    return text if len(text) <= _TRANSCRIPT_MESSAGE_CHARS else text[: _TRANSCRIPT_MESSAGE_CHARS - 3] + "..."
