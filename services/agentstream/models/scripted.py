"""ScriptedModel: a deterministic, offline stand-in for an LLM (tests and the demo).

It knows no domain: on a user turn it makes the tool calls its planning rules pick from
the text (an app gives them per agent type, see scripted_rules.py); once tool results are
in, it writes an answer that quotes them. Without rules, or when none fires, it answers
at once, quoting the input. Every answer starts with ``[scripted model]`` so nobody
mistakes demo output for a real model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from agentstream import jsoncodec
from agentstream.models.base import Message, ModelResponse, ToolCall, Usage, current_task_key
from agentstream.models.scripted_rules import ScriptedRule, plan_calls

SCRIPTED_MARKER = "[scripted model]"

_QUOTE_CHARS = 400


class ScriptedModel:
    """A ``Model`` whose replies are a pure function of the conversation.

    ``rules`` pick its tool calls (none: it answers at once). ``latency_s`` simulates a provider round trip (benchmarks). ``call_log``, when given,
    gets one ``(task_key, step)`` entry per call, so tests can count model calls per
    task: ``task_key`` is the key set with ``task_scope`` (the agent loop uses the task
    id) or else the task's input (the last user message); ``step`` is the number of assistant turns
    already in the conversation, so a resumed task continues its step numbers.
    """

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        call_log: list[tuple[str, int]] | None = None,
        model_id: str = "scripted:default",
        rules: Sequence[ScriptedRule] = (),
    ) -> None:
        self.model_id = model_id
        self.rules = tuple(rules)
        self.latency_s = latency_s
        self.call_log = call_log

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        step = _steps_of_this_task(messages)
        if self.call_log is not None:
            self.call_log.append((current_task_key() or _last_user_text(messages), step))
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if messages and messages[-1].role == "tool":
            return self._respond(messages, tools, _answer(messages), ())
        offered = {schema["name"] for schema in tools}
        planned = plan_calls(self.rules, _last_user_text(messages), offered)
        calls = tuple(ToolCall(id=f"call_{step}_{n}", name=name, arguments=args) for n, (name, args) in enumerate(planned))
        text = None if calls else _answer(messages)
        return self._respond(messages, tools, text, calls)

    def _respond(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        text: str | None,
        calls: tuple[ToolCall, ...],
    ) -> ModelResponse:
        produced = (text or "") + "".join(call.name + json.dumps(call.arguments) for call in calls)
        usage = Usage(
            input_tokens=estimate_tokens(_prompt_text(messages, tools)), output_tokens=estimate_tokens(produced)
        )
        return ModelResponse(text=text, tool_calls=calls, usage=usage, model=self.model_id)


def estimate_tokens(text: str) -> int:
    """About four characters per token: good enough for budgets in an offline demo."""
    return len(text) // 4


def _prompt_text(messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> str:
    # Only its length counts (estimate_tokens): compact JSON by the fast codec is as good an
    # estimate as the standard library's spaced one, at a fraction of the cost per call.
    parts = [jsoncodec.dumps(list(tools), sort_keys=True).decode()]
    for message in messages:
        parts.append(message.content or "")
        parts.extend(call.name + jsoncodec.dumps(call.arguments).decode() for call in message.tool_calls)
    return "".join(parts)


def _steps_of_this_task(messages: Sequence[Message]) -> int:
    """Assistant turns since the task's input (the last user message): the turns of the
    session's earlier tasks before it are not this task's steps."""
    since = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    return sum(1 for message in messages[since + 1:] if message.role == "assistant")


def _last_user_text(messages: Sequence[Message]) -> str:
    return next((m.content or "" for m in reversed(messages) if m.role == "user"), "")


def _answer(messages: Sequence[Message]) -> str:
    """A final answer quoting the input and the tool results of the latest round."""
    question = " ".join(_last_user_text(messages).split())
    results = _latest_tool_results(messages)
    lines = [f'{SCRIPTED_MARKER} Reply to: "{_clip(question, 160)}"']
    if not results:
        lines.append("No tool was called for this request (no scripted rule fired); a real model would answer here.")
    for message in results:
        if (message.content or "").startswith("Error:"):
            lines.append(f"- {message.name}: I could not verify this ({_clip(message.content or '', _QUOTE_CHARS)})")
        else:
            lines.append(f"- According to {message.name}: {_cite(message.content or '')}")
    return "\n".join(lines)


def _latest_tool_results(messages: Sequence[Message]) -> list[Message]:
    results: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    return results[::-1]


def _cite(content: str) -> str:
    """Tool results are usually JSON; quote their scalar facts, not the raw document."""
    try:
        data = jsoncodec.loads(content)
    except ValueError:
        return _clip(content, _QUOTE_CHARS)
    if isinstance(data, dict):
        text = _facts(data)
    elif isinstance(data, list) and all(isinstance(item, dict) for item in data):
        text = "; ".join(_facts(item) for item in data) or "nothing found"
    else:
        text = content
    return _clip(text, _QUOTE_CHARS)


def _facts(record: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_compact(value)}" for key, value in record.items())


def _compact(value: Any) -> str:
    return (
        json.dumps(value, separators=(",", ":"), ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
