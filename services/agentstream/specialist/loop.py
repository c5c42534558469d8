"""The specialist's agent loop: model turn, tool calls, model turn ... until an answer.

Outcome policy (what the supervisor and the result topic see):
- COMPLETED: the model answered with text and no tool calls.
- FAILED ``MAX_STEPS``: ``max_steps`` model turns went by without an answer. The task is
  FAILED rather than COMPLETED because nobody answered the customer; ``output`` still
  carries the best partial answer (the last assistant text and tool results) so the
  supervisor or a human can use what was found.
- FAILED ``MODEL_ERROR``: the model call raised (transport, provider, quota). Retries
  within the call belong to the model's controls (``agentstream.controls``); what still
  fails goes to the caller (the retry tiers), which sees the code and message.
- FAILED ``MODEL_BEHAVIOR``: the model returned neither text nor tool calls.
- FAILED ``TIMEOUT``: the run passed its wall-clock limit ``timeout_s``.
- FAILED ``BUDGET_EXCEEDED``: the run spent its ``budget_usd`` or ``max_tokens``. Limits
  are checked before each model call (a call's cost is known only after it), so a run
  overshoots by at most the call that crossed the line; a final answer that arrives in
  that call is still delivered.
- FAILED ``MODEL_UNAVAILABLE``: every model of the fallback chain failed; ``output`` is
  the chain's minimum viable answer, which tells the user what could not be done.
Every limit gives the best partial answer in ``output``, as ``MAX_STEPS`` does.
Tool failures are not task failures: they become ``Error: ...`` text the model reads.
``StepNotRecorded`` is no outcome: the run could not record a step (its checkpoint), which
says nothing about the model, so it propagates and the stage's retry chain decides.
``TaskCanceled`` is no outcome either: what the loop runs in raises it at a step boundary
when the task was canceled (cancellation/); it leaves carrying the run's usage and best
partial answer (``outcome``), and the caller ends the task CANCELED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentstream import metrics
from agentstream.cancellation.records import TaskCanceled, cancel_error
from agentstream.controls.fallback import is_minimum_viable
from agentstream.controls.stats import ControlStats, collect_stats
from agentstream.errors import AgentStreamError, ConfigurationError
from agentstream.models.base import Message, Model, ModelResponse, ToolCall, Usage, task_scope
from agentstream.session_memory import turn_messages
from agentstream.specialist.history import HistoryCompressor
from agentstream.specialist.revision import revision_messages
from agentstream.telemetry import log_context
from agentstream.tools.registry import DEFAULT_TIMEOUT_S, ToolRegistry, ToolResult

MODEL_ERROR = "MODEL_ERROR"
MAX_STEPS = "MAX_STEPS"
MODEL_BEHAVIOR = "MODEL_BEHAVIOR"
TIMEOUT = "TIMEOUT"
BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"

# USD cost of one model call from its model id and token usage (a price table lookup).
Price = Callable[[str, Usage], float]

_PARTIAL_QUOTE_CHARS = 600


class StepNotRecorded(AgentStreamError):
    """A model reply or tool result could not be recorded (e.g. the broker refused its
    checkpoint). Raised around a model or tool call by what the loop runs in; the loop lets
    it through instead of ending the run with ``MODEL_ERROR``."""


@dataclass(frozen=True, slots=True)
class AgentOutcome:
    """How one specialist run ended.

    ``tools_used``: distinct tools that returned a result, in first-use order.
    ``usage``: ``input_tokens``, ``output_tokens``, ``cost_usd``, ``llm_calls`` (model
    calls that returned, history summaries included) and ``tool_calls`` (every call the
    model asked for, failed or not); when the model is guarded (``agentstream.controls``)
    also ``retries``, ``fallbacks`` and ``cache_hits``.
    ``steps``: model turns that returned, the unit ``max_steps`` counts.
    ``tool_errors``: tool calls that returned an error (refused, bad arguments, raised).
    """

    status: Literal["COMPLETED", "FAILED"]
    output: str | None
    error: tuple[str, str] | None
    tools_used: list[str]
    usage: dict[str, Any]
    steps: int
    tool_errors: int = 0


@dataclass
class _Tally:
    """Counters of one run; mutable on purpose, it lives only inside ``run_agent``."""

    price: Price | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    steps: int = 0
    tools_used: dict[str, None] = field(default_factory=dict)  # ordered set
    controls: ControlStats | None = None

    def add_model(self, response: ModelResponse) -> None:
        usage = response.usage
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        # A price table, when given, is the one truth about money; else the provider's figure.
        self.cost_usd += self.price(response.model, usage) if self.price else usage.cost_usd
        self.llm_calls += 1

    def add_tools(self, results: Sequence[ToolResult]) -> None:
        self.tool_calls += len(results)
        self.tool_errors += sum(not result.ok for result in results)
        self.tools_used.update((result.name, None) for result in results if result.ok)

    def outcome(self, output: str | None, error: tuple[str, str] | None = None) -> AgentOutcome:
        usage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 8),
            "llm_calls": self.llm_calls,
            "tool_calls": self.tool_calls,
        }
        if self.controls is not None and self.controls.acted():
            usage.update(self.controls.usage_extras())
        status: Literal["COMPLETED", "FAILED"] = "FAILED" if error else "COMPLETED"
        return AgentOutcome(status, output, error, list(self.tools_used), usage, self.steps, self.tool_errors)

    def over_limit(self, budget_usd: float | None, max_tokens: int | None) -> tuple[str, str] | None:
        if budget_usd is not None and self.cost_usd >= budget_usd:
            return BUDGET_EXCEEDED, f"Stopped after spending ${self.cost_usd:.6f} of a ${budget_usd:g} budget."
        tokens = self.input_tokens + self.output_tokens
        if max_tokens is not None and tokens >= max_tokens:
            return BUDGET_EXCEEDED, f"Stopped after using {tokens} of a {max_tokens}-token budget."
        return None


def default_system_prompt(agent_type: str) -> str:
    """The prompt a specialist runs with unless the topology gives it another one."""
    return (
        f"You are the {agent_type} specialist of a team of agents. "
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
    timeout_s: float | None = None,
    budget_usd: float | None = None,
    max_tokens: int | None = None,
    price: Price | None = None,
    history: HistoryCompressor | None = None,
) -> AgentOutcome:
    """Run one task (keys ``task_id``, ``session_id``, ``input``, optionally ``history``:
    the session's earlier turns) as ``agent_type``.

    Limits (None: none): ``timeout_s`` wall-clock seconds for the whole run,
    ``budget_usd`` cost and ``max_tokens`` input+output tokens over all its model calls.
    ``price`` turns a call's usage into USD (else the provider's ``cost_usd`` counts);
    ``history`` compresses the conversation before a model call when it grows too long.

    Raises only for misconfiguration (``max_steps`` < 1, a non-positive limit, an
    allowlist naming an unregistered tool); everything that goes wrong at run time is in
    the outcome.
    """
    _check_limits(max_steps, timeout_s, budget_usd, max_tokens)
    schemas = tools.schemas(allowlist)
    allowed = frozenset(schema["name"] for schema in schemas)
    limits = _Limits(max_steps, budget_usd, max_tokens)
    run = _Run(agent_type, model, tools, schemas, allowed, tool_timeout_s, limits, history)
    messages = [
        Message("system", system_prompt or default_system_prompt(agent_type)),
        *turn_messages(task.get("history") or ()),  # the session's earlier tasks (session_memory.py)
        Message("user", str(task["input"])),
        *revision_messages(task),  # a revision: the earlier answer and the reviewer's feedback
    ]
    with task_scope(str(task["task_id"])), collect_stats() as stats:
        tally = _Tally(price, controls=stats)
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                return await run.turns(messages, tally)
        except TimeoutError:
            if not deadline.expired():
                raise  # a TimeoutError of someone else's, not our wall-clock limit
            reason = f"Stopped at the wall-clock limit of {timeout_s:g} s without a final answer."
            return tally.outcome(_partial_answer(messages, reason), (TIMEOUT, reason))
        except TaskCanceled as stop:
            # What the run spent and found goes with the stop, as with every limit.
            stop.outcome = tally.outcome(_partial_answer(messages, str(stop)), cancel_error(stop.cancel))
            raise


@dataclass(frozen=True, slots=True)
class _Limits:
    """When a run stops without an answer (the wall clock is enforced around it)."""

    max_steps: int
    budget_usd: float | None
    max_tokens: int | None


@dataclass(frozen=True, slots=True)
class _Run:
    """What one run works with; its progress lives in ``messages`` and the ``_Tally``."""

    agent_type: str
    model: Model
    tools: ToolRegistry
    schemas: list[dict[str, Any]]
    allowed: frozenset[str]
    tool_timeout_s: float
    limits: _Limits
    history: HistoryCompressor | None

    async def turns(self, messages: list[Message], tally: _Tally) -> AgentOutcome:
        """Model → tools → model ... ; ``messages`` and ``tally`` are updated in place so a
        timeout that cancels this coroutine still finds the progress made so far."""
        for _ in range(self.limits.max_steps):
            log_context.bind(step=tally.steps + 1)  # on this run's log lines (its task's own context)
            limit = tally.over_limit(self.limits.budget_usd, self.limits.max_tokens)
            if limit is not None:
                return tally.outcome(_partial_answer(messages, limit[1]), limit)
            await self._compress(messages, tally)
            try:
                response = await self.model.complete(messages, self.schemas)
            except (StepNotRecorded, TaskCanceled):
                raise  # no model's failure: the run could not record the step, or was canceled
            except Exception as exc:  # any provider failure; CancelledError propagates
                return tally.outcome(None, (MODEL_ERROR, f"{type(exc).__name__}: {exc}"))
            if is_minimum_viable(response):
                reason = "No model could answer; the output is the fallback chain's minimum viable answer."
                return tally.outcome(response.text, (MODEL_UNAVAILABLE, reason))
            tally.add_model(response)
            tally.steps += 1
            if not response.tool_calls:
                text = (response.text or "").strip()
                if not text:
                    return tally.outcome(None, (MODEL_BEHAVIOR, "The model returned neither text nor tool calls."))
                return tally.outcome(text)
            messages.append(Message("assistant", response.text, tool_calls=response.tool_calls))
            results = await _run_tools(
                response.tool_calls, self.tools, self.allowed, self.agent_type, self.tool_timeout_s
            )
            tally.add_tools(results)
            messages.extend(
                Message("tool", result.content, tool_call_id=call.id, name=call.name)
                for call, result in zip(response.tool_calls, results, strict=True)
            )
        reason = f"Stopped after {self.limits.max_steps} model turns without a final answer."
        return tally.outcome(_partial_answer(messages, reason), (MAX_STEPS, reason))

    async def _compress(self, messages: list[Message], tally: _Tally) -> None:
        if self.history is None:
            return
        compressed = await self.history.compress(messages)
        if compressed.response is not None:
            tally.add_model(compressed.response)  # the summary is paid for by this task
            messages[:] = compressed.messages


def _check_limits(max_steps: int, timeout_s: float | None, budget_usd: float | None, max_tokens: int | None) -> None:
    if max_steps < 1:
        raise ConfigurationError(f"max_steps must be at least 1, got {max_steps}.")
    if timeout_s is not None and timeout_s <= 0:
        raise ConfigurationError(f"timeout_s must be positive or None, got {timeout_s}.")
    if budget_usd is not None and budget_usd < 0:
        raise ConfigurationError(f"budget_usd must not be negative, got {budget_usd}.")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigurationError(f"max_tokens must be at least 1 or None, got {max_tokens}.")


async def _run_tools(
    calls: Sequence[ToolCall], tools: ToolRegistry, allowed: frozenset[str], agent_type: str, timeout_s: float
) -> list[ToolResult]:
    """Results in call order; the allowed calls run concurrently, refusals cost nothing."""
    runnable = [(call.name, call.arguments) for call in calls if call.name in allowed]
    ran = iter(await tools.call_many(runnable, timeout_s))
    results = [next(ran) if call.name in allowed else _refused(call.name, agent_type, allowed) for call in calls]
    for call, result in zip(calls, results, strict=True):
        metrics.tool_call(agent_type, call.name, call.name in allowed, result.ok)
    return results


def _refused(name: str, agent_type: str, allowed: frozenset[str]) -> ToolResult:
    """The result of a call outside the allowlist (built only then: it lists every tool)."""
    reason = f"is not available to the {agent_type} agent; available tools are {sorted(allowed)}."
    return ToolResult(name, False, f"Error: tool {name!r} {reason}")


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
