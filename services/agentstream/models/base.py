"""The Model interface every provider implements; the agent loop depends on this only.

Messages and tool calls are provider-neutral: each provider module translates them to
its own wire format (OpenAI chat completions, Anthropic messages) and back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool invocation the model asked for; ``id`` pairs it with its result message."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation entry.

    An assistant message may carry ``tool_calls``; each result comes back as a ``tool``
    message whose ``tool_call_id`` names the call and ``name`` the tool.
    """

    role: Role
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one model call. ``cost_usd`` is filled by the provider, which alone knows
    its price; it defaults to 0 so offline models need not care."""

    input_tokens: int
    output_tokens: int
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """A model turn: final ``text``, or ``tool_calls`` to run before the next turn."""

    text: str | None
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    model: str


@runtime_checkable
class Model(Protocol):
    """A chat model that can call tools.

    ``tools`` are provider-neutral schemas ``{"name", "description", "parameters"}``
    (see ``ToolRegistry.schemas``). Implementations raise on transport or provider
    errors; the agent loop decides what a failure means for the task.
    """

    model_id: str

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse: ...


# The task a model call is made for. A context variable rather than an argument keeps
# ``complete`` the same for every provider while still letting providers tag requests
# for tracing and letting the ScriptedModel log calls per task.
_current_task: ContextVar[str | None] = ContextVar("agentstream_model_task", default=None)


def current_task_key() -> str | None:
    """The key of the task the current model call serves, if a caller set one."""
    return _current_task.get()


@contextmanager
def task_scope(task_key: str) -> Iterator[None]:
    """Mark model calls made inside the block as serving ``task_key``."""
    token = _current_task.set(task_key)
    try:
        yield
    finally:
        _current_task.reset(token)
