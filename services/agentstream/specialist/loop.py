"""The specialist's agent loop: model turn, tool calls, model turn ... until an answer.

Outcome policy (what the supervisor and the result topic see):
- COMPLETED: the model answered with text and no tool calls.
- FAILED ``MAX_STEPS``: ``max_steps`` model turns went by without an answer. The task is
  FAILED rather than COMPLETED because nobody answered the customer; ``output`` still
  carries the best partial answer (the last assistant text and tool results) so the
  supervisor or a human can use what was found.
- FAILED ``MODEL_ERROR``: the model call raised (transport, provider, quota). Retries
  belong to the caller (the retry tiers), which sees the code and message.
- FAILED ``MODEL_BEHAVIOR``: the model returned neither text nor tool calls.
Tool failures are not task failures: they become ``Error: ...`` text the model reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentstream.errors import ConfigurationError
from agentstream.models.base import Message, Model, ToolCall, Usage, task_scope
from agentstream.tools.registry import DEFAULT_TIMEOUT_S, ToolRegistry, ToolResult

MODEL_ERROR = "MODEL_ERROR"
MAX_STEPS = "MAX_STEPS"
MODEL_BEHAVIOR = "MODEL_BEHAVIOR"

_PARTIAL_QUOTE_CHARS = 600


@dataclass(frozen=True, slots=True)
class AgentOutcome:
    """How one specialist run ended.

    ``tools_used``: distinct tools that returned a result, in first-use order.
    ``usage``: ``input_tokens``, ``output_tokens``, ``cost_usd``, ``llm_calls`` (model
    turns that returned) and ``tool_calls`` (every call the model asked for, failed or not).
    ``steps``: model turns that returned, the unit ``max_steps`` counts.
    """

    status: Literal["COMPLETED", "FAILED"]
    output: str | None
    error: tuple[str, str] | None
    tools_used: list[str]
    usage: dict[str, Any]
    steps: int


@dataclass
class _Tally:
    """Counters of one run; mutable on purpose, it lives only inside ``run_agent``."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0
    tool_calls: int = 0
    tools_used: dict[str, None] = field(default_factory=dict)  # ordered set

    def add_model(self, usage: Usage) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += usage.cost_usd
        self.llm_calls += 1

    def add_tools(self, results: Sequence[ToolResult]) -> None:
        self.tool_calls += len(results)
        self.tools_used.update((result.name, None) for result in results if result.ok)

    def outcome(self, output: str | None, error: tuple[str, str] | None = None) -> AgentOutcome:
        usage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 8),
            "llm_calls": self.llm_calls,
            "tool_calls": self.tool_calls,
        }
        status: Literal["COMPLETED", "FAILED"] = "FAILED" if error else "COMPLETED"
        return AgentOutcome(status, output, error, list(self.tools_used), usage, self.llm_calls)


def default_system_prompt(agent_type: str) -> str:
    """The prompt a specialist runs with unless the topology gives it another one."""
    return (
        f"You are the {agent_type} support specialist of a customer-support team. "
        "Look facts up with your tools before you answer, cite what they returned, and say "
        "plainly what you could not verify. Answer only the "
        f"{agent_type} part of the request; other specialists handle the rest."
    )


async def run_agent(
    task: Mapping[str, Any],
    agent_type: str,
    model: Model,
    tools: ToolRegistry,
    allowlist: Sequence[str],
    max_steps: int = 8,
    system_prompt: str | None = None,
    *,
    tool_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AgentOutcome:
    """Run one task (keys ``task_id``, ``session_id``, ``input``) as ``agent_type``.

    Raises only for misconfiguration (``max_steps`` < 1, an allowlist naming an
    unregistered tool); everything that goes wrong at run time is in the outcome.
    """
    if max_steps < 1:
        raise ConfigurationError(f"max_steps must be at least 1, got {max_steps}.")
    schemas = tools.schemas(allowlist)
    allowed = frozenset(schema["name"] for schema in schemas)
    messages = [
        Message("system", system_prompt or default_system_prompt(agent_type)),
        Message("user", str(task["input"])),
    ]
    tally = _Tally()
    with task_scope(str(task["task_id"])):
        for _ in range(max_steps):
            try:
                response = await model.complete(messages, schemas)
            except Exception as exc:  # any provider failure; CancelledError propagates
                return tally.outcome(None, (MODEL_ERROR, f"{type(exc).__name__}: {exc}"))
            tally.add_model(response.usage)
            if not response.tool_calls:
                text = (response.text or "").strip()
                if not text:
                    return tally.outcome(None, (MODEL_BEHAVIOR, "The model returned neither text nor tool calls."))
                return tally.outcome(text)
            messages.append(Message("assistant", response.text, tool_calls=response.tool_calls))
            results = await _run_tools(response.tool_calls, tools, allowed, agent_type, tool_timeout_s)
            tally.add_tools(results)
            messages.extend(
                Message("tool", result.content, tool_call_id=call.id, name=call.name)
                for call, result in zip(response.tool_calls, results, strict=True)
            )
    reason = f"Stopped after {max_steps} model turns without a final answer."
    return tally.outcome(_partial_answer(messages, reason), (MAX_STEPS, reason))


async def _run_tools(
    calls: Sequence[ToolCall], tools: ToolRegistry, allowed: frozenset[str], agent_type: str, timeout_s: float
) -> list[ToolResult]:
    """Results in call order; the allowed calls run concurrently, refusals cost nothing."""
    runnable = [(call.name, call.arguments) for call in calls if call.name in allowed]
    ran = iter(await tools.call_many(runnable, timeout_s))
    refused = f"is not available to the {agent_type} agent; available tools are {sorted(allowed)}."
    return [
        next(ran) if call.name in allowed else ToolResult(call.name, False, f"Error: tool {call.name!r} {refused}")
        for call in calls
    ]


def _partial_answer(messages: Sequence[Message], reason: str) -> str:
    """What the run found so far: the last assistant text and the latest tool results."""
    lines = [f"(incomplete) {reason}"]
    last_text = next((m.content for m in reversed(messages) if m.role == "assistant" and m.content), None)
    if last_text:
        lines.append(last_text.strip())
    latest: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        latest.append(message)
    for message in reversed(latest):
        content = message.content or ""
        clipped = content if len(content) <= _PARTIAL_QUOTE_CHARS else content[: _PARTIAL_QUOTE_CHARS - 3] + "..."
        lines.append(f"- {message.name}: {clipped}")
    return "\n".join(lines)
