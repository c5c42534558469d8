"""The specialist agent loop: answers, tool use, failures the model sees, stop reasons."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from agentstream.errors import ConfigurationError, ToolDefinitionError
from agentstream.models import (
    SCRIPTED_MARKER,
    Message,
    ModelResponse,
    ToolCall,
    Usage,
    current_task_key,
)
from agentstream.specialist import AgentOutcome, behavior_version, default_system_prompt, run_agent
from agentstream.specialist.loop import StepNotRecorded
from agentstream.tools import ToolRegistry, tool
from tests import support_desk

MIXED = "I was charged twice on invoice INV-1002 and the app crashes on login"


def _task(text: str, task_id: str = "task-1") -> dict[str, str]:
    return {"task_id": task_id, "session_id": "sess-1", "input": text}


class ReplayModel:
    """Returns the given responses in turn and records every conversation it was shown."""

    model_id = "test:replay"

    def __init__(self, *responses: ModelResponse | Exception) -> None:
        self.responses = list(responses)
        self.seen: list[list[Message]] = []

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        self.seen.append(list(messages))
        response = self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return response


def _calls(*calls: tuple[str, dict[str, Any]]) -> ModelResponse:
    tool_calls = tuple(ToolCall(f"c{n}", name, args) for n, (name, args) in enumerate(calls))
    return ModelResponse(None, tool_calls, Usage(10, 5, 0.001), "test:replay")


def _text(text: str | None) -> ModelResponse:
    return ModelResponse(text, (), Usage(20, 8, 0.002), "test:replay")


def _run(model: Any, registry: ToolRegistry, allowlist: Sequence[str], **kwargs: Any) -> AgentOutcome:
    text = kwargs.pop("text", "Help with INV-1001")
    return asyncio.run(
        run_agent(_task(text), kwargs.pop("agent_type", "billing"), model, registry, allowlist, **kwargs)
    )


def test_scripted_billing_run_uses_the_tool_and_cites_the_data() -> None:
    log: list[tuple[str, int]] = []
    outcome = asyncio.run(
        run_agent(_task(MIXED), "billing", support_desk.scripted_model("billing", call_log=log), support_desk.registry(), support_desk.allowlist("billing"))
    )
    assert outcome.status == "COMPLETED" and outcome.error is None
    assert outcome.tools_used == ["lookup_invoice", "search_kb"]
    assert outcome.output is not None and outcome.output.startswith(SCRIPTED_MARKER)
    assert "amount_paid=480.0" in outcome.output  # from INV-1002 in the bundled data
    assert "KB-102" in outcome.output
    assert outcome.steps == 2
    assert outcome.usage["llm_calls"] == 2 and outcome.usage["tool_calls"] == 2
    assert outcome.usage["input_tokens"] > 0 and outcome.usage["output_tokens"] > 0
    assert outcome.usage["cost_usd"] == 0.0
    assert log == [("task-1", 0), ("task-1", 1)]
    assert current_task_key() is None  # the task scope ends with the run


def test_scripted_technical_run_on_the_mixed_ticket_cites_the_crash_article() -> None:
    outcome = asyncio.run(
        run_agent(_task(MIXED), "technical", support_desk.scripted_model("technical"), support_desk.registry(), support_desk.allowlist("technical"))
    )
    assert outcome.status == "COMPLETED"
    assert outcome.tools_used == ["search_kb"]
    assert "KB-201" in (outcome.output or "")


def test_invalid_tool_arguments_become_a_message_the_model_sees() -> None:
    model = ReplayModel(_calls(("lookup_invoice", {"invoice": "INV-1001"})), _text("Sorry, I could not look it up."))
    outcome = _run(model, support_desk.registry(), support_desk.allowlist("billing"))
    assert outcome.status == "COMPLETED" and outcome.output == "Sorry, I could not look it up."
    tool_message = model.seen[1][-1]
    assert tool_message.role == "tool" and tool_message.tool_call_id == "c0" and tool_message.name == "lookup_invoice"
    assert tool_message.content is not None
    assert tool_message.content.startswith("Error: invalid arguments for lookup_invoice")
    assert "unexpected argument 'invoice'" in tool_message.content
    assert "invoice_id: field required" in tool_message.content
    assert outcome.tools_used == []  # nothing returned data
    assert outcome.usage["tool_calls"] == 1


def test_a_tool_outside_the_allowlist_is_refused_without_running() -> None:
    ran: list[str] = []

    @tool
    def refund(invoice_id: str) -> str:
        """Refund an invoice."""
        ran.append(invoice_id)
        return "refunded"

    registry = support_desk.registry()
    registry.register(refund)
    model = ReplayModel(_calls(("refund", {"invoice_id": "INV-1"}), ("search_kb", {"query": "refund"})), _text("Done."))
    outcome = _run(model, registry, ["search_kb"], agent_type="technical")
    refused, searched = model.seen[1][-2:]
    assert refused.content == (
        "Error: tool 'refund' is not available to the technical agent; available tools are ['search_kb']."
    )
    assert searched.name == "search_kb" and searched.content is not None and "KB-101" in searched.content
    assert ran == []
    assert outcome.tools_used == ["search_kb"] and outcome.usage["tool_calls"] == 2


def test_tools_of_one_turn_run_concurrently() -> None:
    events: list[str] = []

    async def scenario() -> AgentOutcome:
        flags = {"a": asyncio.Event(), "b": asyncio.Event()}

        @tool
        async def rendezvous(me: str, peer: str) -> str:
            """Waits until the peer call has started."""
            events.append(f"start {me}")
            flags[me].set()
            await flags[peer].wait()
            events.append(f"end {me}")
            return f"{me} done"

        model = ReplayModel(
            _calls(("rendezvous", {"me": "a", "peer": "b"}), ("rendezvous", {"me": "b", "peer": "a"})), _text("ok")
        )
        return await run_agent(
            _task("x"), "technical", model, ToolRegistry([rendezvous]), ["rendezvous"], tool_timeout_s=5
        )

    outcome = asyncio.run(scenario())
    assert outcome.status == "COMPLETED" and outcome.tools_used == ["rendezvous"]
    # Both calls started before either ended: they overlapped.
    assert events[:2] == ["start a", "start b"] and sorted(events[2:]) == ["end a", "end b"]


def test_max_steps_stops_with_a_reason_and_the_partial_answer() -> None:
    looping = [_calls(("search_kb", {"query": f"attempt {n}"})) for n in range(3)]
    outcome = _run(ReplayModel(*looping), support_desk.registry(), support_desk.allowlist("technical"), max_steps=3)
    assert outcome.status == "FAILED"
    assert outcome.error == ("MAX_STEPS", "Stopped after 3 model turns without a final answer.")
    assert outcome.steps == 3
    assert outcome.usage["llm_calls"] == 3 and outcome.usage["tool_calls"] == 3
    assert outcome.output is not None and outcome.output.startswith("(incomplete) Stopped after 3 model turns")
    assert "- search_kb:" in outcome.output


def test_a_model_exception_fails_the_run_with_model_error() -> None:
    model = ReplayModel(_calls(("search_kb", {"query": "crash"})), RuntimeError("provider unavailable"))
    outcome = _run(model, support_desk.registry(), support_desk.allowlist("technical"))
    assert outcome.status == "FAILED" and outcome.output is None
    assert outcome.error == ("MODEL_ERROR", "RuntimeError: provider unavailable")
    assert outcome.usage["llm_calls"] == 1 and outcome.steps == 1


def test_a_step_that_could_not_be_recorded_is_no_model_error() -> None:
    # The run's checkpoint failed, not the model: the stage's retry chain decides, not the loop.
    model = ReplayModel(StepNotRecorded("Step 0 of task task-1 could not be checkpointed: Message size too large"))
    with pytest.raises(StepNotRecorded):
        _run(model, support_desk.registry(), ["search_kb"])


def test_an_empty_model_reply_is_a_model_behavior_failure() -> None:
    outcome = _run(ReplayModel(_text("  ")), support_desk.registry(), ["search_kb"])
    assert outcome.status == "FAILED" and outcome.error is not None and outcome.error[0] == "MODEL_BEHAVIOR"


def test_usage_adds_up_over_turns() -> None:
    model = ReplayModel(_calls(("search_kb", {"query": "a"})), _text("answer"))
    outcome = _run(model, support_desk.registry(), ["search_kb"])
    assert outcome.usage == {
        "input_tokens": 30,
        "output_tokens": 13,
        "cost_usd": 0.003,
        "llm_calls": 2,
        "tool_calls": 1,
    }


def test_system_prompt_default_and_override() -> None:
    model = ReplayModel(_text("a"), _text("b"))
    _run(model, support_desk.registry(), ["search_kb"], agent_type="account")
    _run(model, support_desk.registry(), ["search_kb"], system_prompt="Be brief.")
    assert model.seen[0][0] == Message("system", default_system_prompt("account"))
    assert model.seen[0][1] == Message("user", "Help with INV-1001")
    assert model.seen[1][0].content == "Be brief."


def test_misconfiguration_raises() -> None:
    with pytest.raises(ConfigurationError, match="max_steps"):
        _run(ReplayModel(), support_desk.registry(), ["search_kb"], max_steps=0)
    with pytest.raises(ToolDefinitionError):
        _run(ReplayModel(), support_desk.registry(), ["no_such_tool"])


def test_behavior_version_fingerprints_prompt_tools_model_and_code() -> None:
    tools = support_desk.registry().schemas(support_desk.allowlist("billing"))
    base = behavior_version("billing", None, tools, "scripted:default", "0.1.0")
    assert len(base) == 12 and int(base, 16) >= 0
    assert base == behavior_version(
        "billing", default_system_prompt("billing"), list(reversed(tools)), "scripted:default", "0.1.0"
    )
    variants = {
        behavior_version("technical", None, tools, "scripted:default", "0.1.0"),
        behavior_version("billing", "Be brief.", tools, "scripted:default", "0.1.0"),
        behavior_version("billing", None, tools[:1], "scripted:default", "0.1.0"),
        behavior_version("billing", None, tools, "openai:gpt-4o-mini", "0.1.0"),
        behavior_version("billing", None, tools, "scripted:default", "0.2.0"),
    }
    assert base not in variants and len(variants) == 5
