"""Loop limits (wall clock, cost and token budgets) and the controls seen from the loop:
every stop gives a reason and the best partial answer; usage carries cost and retries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentstream.controls import (
    MINIMUM_VIABLE_MARKER,
    FallbackChain,
    FaultyModel,
    GuardedModel,
    ManualClock,
    ResponseCache,
)
from agentstream.errors import ConfigurationError
from agentstream.models import Message, ModelResponse, ScriptedModel, ToolCall, Usage
from agentstream.models.errors import ModelAuthError, ModelServerError, RateLimitedError
from agentstream.specialist.history import HistoryCompressor, is_summary
from agentstream.specialist.loop import AgentOutcome, run_agent
from tests import support_desk

TASK = {"task_id": "task-7", "session_id": "sess-7", "input": "Was invoice INV-1002 paid? Order number 1001 too."}


COSTLY = Usage(1000, 100, 0.01)


class Looping:
    """Asks for a knowledge-base search on every turn, never answering; each call costs."""

    model_id = "test:looping"

    def __init__(self, usage: Usage = COSTLY, answer_on: int | None = None) -> None:
        self.usage = usage
        self.answer_on = answer_on
        self.calls = 0
        self.seen: list[list[Message]] = []

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        self.calls += 1
        self.seen.append(list(messages))
        if self.calls == self.answer_on:
            return ModelResponse("Final answer.", (), self.usage, self.model_id)
        call = ToolCall(f"c{self.calls}", "search_kb", {"query": f"attempt {self.calls}"})
        return ModelResponse(f"Searching, attempt {self.calls}.", (call,), self.usage, self.model_id)


def _run(model: Any, agent_type: str = "billing", **kwargs: Any) -> AgentOutcome:
    return asyncio.run(run_agent(TASK, agent_type, model, support_desk.registry(), support_desk.allowlist(agent_type), **kwargs))


def test_the_cost_budget_stops_the_loop_with_a_partial_answer() -> None:
    model = Looping()
    outcome = _run(model, budget_usd=0.025)
    assert outcome.status == "FAILED" and outcome.error is not None
    assert outcome.error == ("BUDGET_EXCEEDED", "Stopped after spending $0.030000 of a $0.025 budget.")
    assert model.calls == 3 and outcome.steps == 3  # checked before each call: 0.01, 0.02 < 0.025
    assert outcome.usage["cost_usd"] == pytest.approx(0.03) and outcome.usage["tool_calls"] == 3
    assert outcome.output is not None and outcome.output.startswith("(incomplete) Stopped after spending")
    assert "Searching, attempt 3." in outcome.output and "- search_kb:" in outcome.output


def test_cost_comes_from_the_price_table_when_one_is_given() -> None:
    prices: list[str] = []

    def price(model_id: str, usage: Usage) -> float:
        prices.append(model_id)
        return (usage.input_tokens * 2 + usage.output_tokens * 8) / 1_000_000

    outcome = _run(Looping(answer_on=2), price=price)
    assert outcome.status == "COMPLETED" and prices == ["test:looping"] * 2
    assert outcome.usage["cost_usd"] == pytest.approx(2 * 0.0028)


def test_an_answer_in_the_call_that_crosses_the_budget_is_delivered() -> None:
    outcome = _run(Looping(answer_on=2), budget_usd=0.015)
    assert outcome.status == "COMPLETED" and outcome.output == "Final answer."
    assert outcome.usage["cost_usd"] == pytest.approx(0.02)


def test_the_token_budget_stops_the_loop() -> None:
    outcome = _run(Looping(), max_tokens=2_500)
    assert outcome.error == ("BUDGET_EXCEEDED", "Stopped after using 3300 of a 2500-token budget.")
    assert outcome.usage["input_tokens"] + outcome.usage["output_tokens"] == 3_300


def test_a_zero_budget_makes_no_model_call() -> None:
    model = Looping()
    outcome = _run(model, budget_usd=0.0)
    assert model.calls == 0 and outcome.status == "FAILED" and outcome.error is not None
    assert outcome.error[0] == "BUDGET_EXCEEDED" and outcome.output is not None


def test_the_wall_clock_limit_stops_the_loop_with_what_was_found() -> None:
    # First turn asks for tools; the second model call hangs until the run's deadline.
    model = FaultyModel(support_desk.scripted_model("billing"), [None, "hang"])
    outcome = _run(model, timeout_s=0.05)
    assert outcome.status == "FAILED"
    assert outcome.error == ("TIMEOUT", "Stopped at the wall-clock limit of 0.05 s without a final answer.")
    assert outcome.steps == 1 and outcome.usage["tool_calls"] == 3
    assert outcome.output is not None and "- lookup_invoice:" in outcome.output and "INV-1002" in outcome.output


def test_guarded_retries_show_in_the_usage() -> None:
    flaky = FaultyModel(
        support_desk.scripted_model("billing"), [RateLimitedError("HTTP 429", retry_after=1.0), None, ModelServerError("HTTP 500")]
    )
    outcome = _run(GuardedModel(flaky, clock=ManualClock()))
    assert outcome.status == "COMPLETED" and outcome.steps == 2
    assert outcome.usage["retries"] == 2 and outcome.usage["fallbacks"] == 0 and outcome.usage["cache_hits"] == 0
    assert outcome.usage["llm_calls"] == 2 and flaky.calls == 4


def test_concurrent_runs_keep_their_retry_counts_apart() -> None:
    flaky = FaultyModel(support_desk.scripted_model("billing"), [ModelServerError("HTTP 500")] * 3)
    guarded = GuardedModel(flaky, clock=ManualClock())

    async def both() -> list[AgentOutcome]:
        runs = [
            run_agent({**TASK, "task_id": f"t{n}"}, "technical", guarded, support_desk.registry(), ["search_kb"])
            for n in range(2)
        ]
        return list(await asyncio.gather(*runs))

    outcomes = asyncio.run(both())
    assert sum(o.usage["retries"] for o in outcomes) == 3 == guarded.stats.retries
    assert all(o.status == "COMPLETED" for o in outcomes)


def test_when_no_model_can_answer_the_minimum_viable_answer_is_marked() -> None:
    chain = FallbackChain(
        [
            GuardedModel(FaultyModel(support_desk.scripted_model("billing"), [None, ModelAuthError("HTTP 401")]), clock=ManualClock()),
            GuardedModel(FaultyModel(support_desk.scripted_model("billing", model_id="scripted:cheap"), [ModelAuthError("HTTP 401")])),
        ]
    )
    outcome = _run(chain)
    assert outcome.status == "FAILED" and outcome.error is not None and outcome.error[0] == "MODEL_UNAVAILABLE"
    assert outcome.output is not None and outcome.output.startswith(MINIMUM_VIABLE_MARKER)
    assert "- lookup_invoice:" in outcome.output  # what the first turn found is kept
    assert outcome.usage["fallbacks"] == 1 and outcome.usage["llm_calls"] == 1 and outcome.steps == 1


def test_a_cache_hit_replays_a_run_without_model_calls(tmp_path: Path) -> None:
    log: list[tuple[str, int]] = []
    with ResponseCache(tmp_path / "cache") as cache:
        guarded = GuardedModel(support_desk.scripted_model("billing", call_log=log), cache=cache)
        first = _run(guarded)
        second = _run(guarded)
    assert len(log) == 2 and first.output == second.output
    assert second.usage["cache_hits"] == 2 and second.usage["input_tokens"] == 0


def test_history_compression_runs_through_the_loop_and_is_paid_for() -> None:
    model = Looping(usage=Usage(10, 5, 0.0), answer_on=4)
    summarizer = GuardedModel(ScriptedModel(model_id="scripted:summary"), clock=ManualClock())
    outcome = _run(model, history=HistoryCompressor(max_tokens=110, keep_recent=1, summarizer=summarizer))
    assert outcome.status == "COMPLETED" and outcome.steps == 4
    assert outcome.usage["llm_calls"] > 4  # the summaries are model calls of this task
    last = model.seen[-1]
    assert last[0].role == "system" and not is_summary(last[0]) and is_summary(last[1])
    assert last[2] == Message("user", TASK["input"])


def test_limits_must_make_sense() -> None:
    for bad in ({"timeout_s": 0}, {"budget_usd": -1.0}, {"max_tokens": 0}):
        with pytest.raises(ConfigurationError):
            _run(Looping(), **bad)
