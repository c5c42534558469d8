"""The LLM router's contract: the route tool, the checks on the model's answer, and the
fall-back to the rules when the model fails, is unsure or answers something invalid.
Pure parts, plus the classifier over an in-process model (no network, no broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from agentstream.models.base import Message, ModelResponse, ToolCall, Usage
from agentstream.models.errors import ModelServerError
from agentstream.models.openai_provider import INVALID_ARGUMENTS_KEY
from agentstream.router.classifier import (
    ROUTE_TOOL,
    Classified,
    MalformedRoute,
    ModelRoute,
    check_route,
    choose,
    parse_route,
    route_messages,
    route_tool,
)
from agentstream.router.model_route import ModelClassifier
from agentstream.topology import RoutingSettings

KNOWN = ["technical", "billing", "account"]
RULES_ROUTE = (["technical"], "simple")


def _reply(arguments: dict[str, Any] | None = None, *, text: str | None = None, name: str = ROUTE_TOOL) -> ModelResponse:
    calls = () if arguments is None else (ToolCall("call-1", name, arguments),)
    return ModelResponse(text=text, tool_calls=calls, usage=Usage(10, 5), model="test:router")


def test_the_tool_offers_exactly_the_known_types_and_tiers() -> None:
    tool = route_tool(KNOWN)
    properties = tool["parameters"]["properties"]
    assert tool["name"] == ROUTE_TOOL
    assert properties["agent_types"]["items"]["enum"] == ["account", "billing", "technical"]
    assert properties["tier"]["enum"] == ["simple", "standard", "complex"]
    assert tool["parameters"]["required"] == ["agent_types", "tier", "confidence"]


def test_a_valid_call_gives_sorted_unique_types() -> None:
    got = parse_route(_reply({"agent_types": ["technical", "account", "technical"], "tier": "complex", "confidence": 0.9}), KNOWN)
    assert got == ModelRoute(("account", "technical"), "complex", 0.9)


def test_json_text_is_accepted_from_a_server_without_tools() -> None:
    text = json.dumps({"agent_types": ["billing"], "tier": "simple", "confidence": 1})
    assert parse_route(_reply(text=text), KNOWN) == ModelRoute(("billing",), "simple", 1.0)


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"agent_types": ["shipping"], "tier": "simple", "confidence": 0.9},
         "unknown agent types ['shipping']; valid agent types are ['account', 'billing', 'technical']"),
        ({"agent_types": [], "tier": "simple", "confidence": 0.9}, "agent_types must be a non-empty list"),
        ({"agent_types": "billing", "tier": "simple", "confidence": 0.9}, "agent_types must be a non-empty list"),
        ({"agent_types": [3], "tier": "simple", "confidence": 0.9}, "agent_types must be a non-empty list"),
        ({"agent_types": ["billing"], "tier": "hard", "confidence": 0.9},
         "tier must be one of ['simple', 'standard', 'complex'], got 'hard'"),
        ({"agent_types": ["billing"], "confidence": 0.9}, "tier must be one of"),
        ({"agent_types": ["billing"], "tier": "simple", "confidence": 1.5}, "confidence must be a number from 0 to 1, got 1.5"),
        ({"agent_types": ["billing"], "tier": "simple", "confidence": "high"}, "got 'high'"),
        ({"agent_types": ["billing"], "tier": "simple", "confidence": True}, "got True"),
        ({"agent_types": ["billing"], "tier": "simple", "confidence": float("nan")}, "got nan"),
        ({"agent_types": ["billing"], "tier": "simple"}, "got None"),
    ],
)
def test_invalid_arguments_name_the_bad_value(arguments: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedRoute) as caught:
        check_route(arguments, KNOWN)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (_reply({INVALID_ARGUMENTS_KEY: "{agent_types: [billing"}), "arguments are not JSON"),
        (_reply({"query": "x"}, name="search_kb"), "the model called ['search_kb'], not route_task"),
        (_reply(text="This is a billing question."), "no route_task call, and the text is not JSON"),
        (_reply(text='["billing"]'), "the text is not a JSON object"),
        (_reply(text=None), "no route_task call"),
    ],
)
def test_malformed_answers_are_refused(reply: ModelResponse, reason: str) -> None:
    with pytest.raises(MalformedRoute, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_route(reply, KNOWN)


def test_a_confident_model_decides() -> None:
    decision = choose(ModelRoute(("account", "billing"), "complex", 0.8), RULES_ROUTE, 0.5, "openai:m")
    assert (decision.route, decision.tier, decision.by) == (["account", "billing"], "complex", "model")
    assert decision.describe() == "by model: openai:m, confidence 0.80"


def test_an_unsure_model_leaves_it_to_the_rules() -> None:
    decision = choose(ModelRoute(("account",), "complex", 0.4), RULES_ROUTE, 0.5, "openai:m")
    assert (decision.route, decision.tier, decision.by) == (["technical"], "simple", "rules")
    assert decision.why == "model openai:m unsure: confidence 0.40 below routing.min_confidence 0.5"


def test_a_confidence_at_the_threshold_is_enough() -> None:
    assert choose(ModelRoute(("account",), "simple", 0.5), RULES_ROUTE, 0.5, "m").by == "model"


def test_without_a_model_route_the_rules_decide_and_say_why() -> None:
    decision = choose("model m unavailable: ModelServerError: 503", RULES_ROUTE, 0.5, "m")
    assert (decision.route, decision.by) == (["technical"], "rules")
    assert decision.describe() == "by rules: model m unavailable: ModelServerError: 503"


def test_the_prompt_names_the_specialists_and_the_sessions_recent_requests() -> None:
    turns = [{"input": f"question {i}", "agents": ["billing"]} for i in range(5)]
    system, user = route_messages("and the other one?", KNOWN, {"billing": "invoices and refunds"}, turns)
    assert "- billing: invoices and refunds\n- technical: technical" in (system.content or "")
    assert ROUTE_TOOL in (system.content or "")
    content = user.content or ""
    assert "question 1" not in content and "question 2 (handled by billing)" in content
    assert content.endswith("The task to route:\nand the other one?")
    assert route_messages("hi", KNOWN, {}, [])[1].content == "hi"


class _Model:
    """An in-process model: answers with ``reply``, raises ``error`` or stalls."""

    def __init__(self, reply: ModelResponse | None = None, error: Exception | None = None, stall_s: float = 0.0) -> None:
        self.model_id = "test:router"
        self.reply, self.error, self.stall_s = reply, error, stall_s
        self.calls: list[Sequence[dict[str, Any]]] = []

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        self.calls.append(tools)
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


def _classifier(model: _Model, **routing: Any) -> ModelClassifier:
    settings = RoutingSettings.model_validate({
        "default": "technical",
        "model": {"models": {"standard": "openai:unused"}, "timeout_s": 0.2, "call_timeout_s": 0.2},
        "controls": {"retry": {"max_attempts": 1}, "breaker": {"failure_threshold": 1, "reset_timeout_s": 60}},
        **routing,
    })
    return ModelClassifier(settings, KNOWN, fixed=model)


def test_the_classifier_offers_the_route_tool_and_returns_the_checked_route() -> None:
    model = _Model(_reply({"agent_types": ["account"], "tier": "standard", "confidence": 0.9}))
    got = asyncio.run(_classifier(model).classify("t-1", "Please close my profile", []))
    assert got == Classified(ModelRoute(("account",), "standard", 0.9), Usage(10, 5))  # the call's usage with it
    assert [tool["name"] for tool in model.calls[0]] == [ROUTE_TOOL]


def test_a_failing_model_opens_its_breaker_and_the_reason_is_returned() -> None:
    model = _Model(error=ModelServerError("HTTP 503: overloaded", model_id="test:router"))
    classifier = _classifier(model)
    first = asyncio.run(classifier.classify("t-1", "hello", []))
    second = asyncio.run(classifier.classify("t-2", "hello", [])).answer
    assert first == Classified("model test:router unavailable: ModelServerError: HTTP 503: overloaded")
    assert isinstance(second, str) and second.startswith("model test:router unavailable: CircuitOpenError: ")
    assert len(model.calls) == 1  # the breaker refused the second call before the model saw it


def test_a_model_slower_than_the_routing_timeout_is_unavailable() -> None:
    got = asyncio.run(_classifier(_Model(_reply({}), stall_s=5)).classify("t-1", "hello", []))
    assert got == Classified("model test:router unavailable: no route within routing.model.timeout_s 0.2 s")


def test_an_invalid_answer_is_returned_as_the_reason() -> None:
    got = asyncio.run(_classifier(_Model(_reply(text="billing, I think"))).classify("t-1", "hello", []))
    assert isinstance(got.answer, str) and got.answer.startswith("model test:router answer invalid: no route_task call")
    assert got.usage == Usage(10, 5)  # an invalid answer was paid for too
