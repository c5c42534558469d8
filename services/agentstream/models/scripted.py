"""ScriptedModel: a deterministic, offline stand-in for an LLM (tests and the demo).

It reads the conversation like a very literal support agent: on a user turn it picks
tool calls from ids in the text (invoice, order, e-mail) and the agent type named in the
system prompt; once tool results are in, it writes an answer that quotes them. Every
answer starts with ``[scripted model]`` so nobody mistakes demo output for a real model.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Any

from agentstream.models.base import Message, ModelResponse, ToolCall, Usage, current_task_key

SCRIPTED_MARKER = "[scripted model]"

# The specialist's default system prompt says "You are the <type> support specialist";
# with another prompt the model falls back to what the ids in the text suggest.
_AGENT_TYPE = re.compile(r"\bthe (\w+) support specialist\b", re.IGNORECASE)
_INVOICE = re.compile(r"\bINV-\d+\b", re.IGNORECASE)
_ORDER = re.compile(r"\border\s*(?:number|no\.?)?\s*#?\s*(\d{3,})\b", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")

_QUERY_CHARS = 200
_QUOTE_CHARS = 400


class ScriptedModel:
    """A ``Model`` whose replies are a pure function of the conversation.

    ``latency_s`` simulates a provider round trip (benchmarks). ``call_log``, when given,
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
    ) -> None:
        self.model_id = model_id
        self.latency_s = latency_s
        self.call_log = call_log

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        step = _steps_of_this_task(messages)
        if self.call_log is not None:
            self.call_log.append((current_task_key() or _last_user_text(messages), step))
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        agent_type = _agent_type(messages)
        if messages and messages[-1].role == "tool":
            return self._respond(messages, tools, _answer(agent_type, messages), ())
        offered = {schema["name"] for schema in tools}
        calls = _plan(agent_type, _last_user_text(messages), offered, step)
        text = None if calls else _answer(agent_type, messages)
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
    parts = [json.dumps(list(tools), sort_keys=True)]
    for message in messages:
        parts.append(message.content or "")
        parts.extend(call.name + json.dumps(call.arguments) for call in message.tool_calls)
    return "".join(parts)


def _agent_type(messages: Sequence[Message]) -> str | None:
    for message in messages:
        if message.role == "system" and message.content:
            found = _AGENT_TYPE.search(message.content)
            if found:
                return found.group(1).lower()
    return None


def _steps_of_this_task(messages: Sequence[Message]) -> int:
    """Assistant turns since the task's input (the last user message): the turns of the
    session's earlier tasks before it are not this task's steps."""
    since = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    return sum(1 for message in messages[since + 1:] if message.role == "assistant")


def _last_user_text(messages: Sequence[Message]) -> str:
    return next((m.content or "" for m in reversed(messages) if m.role == "user"), "")


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _plan(agent_type: str | None, text: str, offered: set[str], step: int) -> tuple[ToolCall, ...]:
    """The tool calls a careful agent of ``agent_type`` would make for ``text``."""
    wanted: list[tuple[str, dict[str, Any]]] = []
    # Technical specialists never look up records: ids in their text belong to billing.
    if agent_type in (None, "billing"):
        wanted += [("lookup_invoice", {"invoice_id": i.upper()}) for i in _unique(_INVOICE.findall(text))]
        wanted += [("lookup_order", {"order_id": o}) for o in _unique(_ORDER.findall(text))]
    if agent_type in (None, "account"):
        wanted += [("lookup_account", {"email": e.lower()}) for e in _unique(_EMAIL.findall(text))]
    # A specialist also reads its part of the help centre; without a known type, the
    # knowledge base is only the fallback when there is nothing specific to look up.
    if agent_type is not None or not wanted:
        query = " ".join(text.split())[:_QUERY_CHARS]
        wanted.append(("search_kb", {"query": query, "category": agent_type} if agent_type else {"query": query}))
    wanted = [(name, args) for name, args in wanted if name in offered]
    return tuple(ToolCall(id=f"call_{step}_{n}", name=name, arguments=args) for n, (name, args) in enumerate(wanted))


def _answer(agent_type: str | None, messages: Sequence[Message]) -> str:
    """A final answer quoting the tool results of the latest round."""
    who = f"{agent_type} specialist" if agent_type else "support agent"
    question = " ".join(_last_user_text(messages).split())
    results = _latest_tool_results(messages)
    lines = [f'{SCRIPTED_MARKER} {who.capitalize()} reply to: "{_clip(question, 160)}"']
    if not results:
        lines.append("I found no order, invoice or account to look up; a colleague will follow up.")
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
        data = json.loads(content)
    except ValueError:
        return _clip(content, _QUOTE_CHARS)
    if isinstance(data, dict):
        text = ", ".join(f"{key}={_compact(value)}" for key, value in data.items())
    elif isinstance(data, list) and all(isinstance(item, dict) for item in data):
        text = "; ".join(f'{item.get("id", "?")} "{item.get("title", "")}": {item.get("summary", "")}' for item in data)
        text = text or "no matching article"
    else:
        text = content
    return _clip(text, _QUOTE_CHARS)


def _compact(value: Any) -> str:
    return (
        json.dumps(value, separators=(",", ":"), ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
