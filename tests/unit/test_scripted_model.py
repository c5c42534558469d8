"""ScriptedModel: tool calls from an app's planning rules (here the support desk's, from
examples/support_desk/topology.yaml), replies quoting tool results, call log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from agentstream.models import SCRIPTED_MARKER, Message, Model, ModelResponse, ScriptedModel, ToolCall, task_scope
from agentstream.models import scripted as scripted_module
from agentstream.errors import ConfigurationError
from agentstream.models.call_log import MarkedFailures
from agentstream.models.scripted_rules import ScriptedRule
from agentstream.specialist.loop import default_system_prompt
from agentstream.topology import parse_topology
from tests import support_desk

TOOLS = support_desk.registry().schemas()
BILLING, ACCOUNT, TECHNICAL = (support_desk.rules(agent) for agent in ("billing", "account", "technical"))


def _conversation(agent_type: str, text: str) -> list[Message]:
    return [Message("system", default_system_prompt(agent_type)), Message("user", text)]


def _complete(
    model: ScriptedModel, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = TOOLS
) -> ModelResponse:
    return asyncio.run(model.complete(messages, tools))


def _calls(response: ModelResponse) -> list[tuple[str, dict[str, Any]]]:
    return [(call.name, call.arguments) for call in response.tool_calls]


def test_it_implements_the_model_interface() -> None:
    model = ScriptedModel()
    assert isinstance(model, Model)
    assert model.model_id == "scripted:default"


def test_billing_with_an_invoice_id_looks_the_invoice_up() -> None:
    text = "I was charged twice on invoice inv-1002, please refund"
    response = _complete(ScriptedModel(rules=BILLING), _conversation("billing", text))
    assert response.text is None
    assert _calls(response) == [
        ("lookup_invoice", {"invoice_id": "INV-1002"}),
        ("search_kb", {"query": text, "category": "billing"}),
    ]
    assert [call.id for call in response.tool_calls] == ["call_0_0", "call_0_1"]


def test_billing_with_an_order_number_looks_the_order_up() -> None:
    response = _complete(ScriptedModel(rules=BILLING), _conversation("billing", "Where is order 5001?"))
    assert _calls(response)[0] == ("lookup_order", {"order_id": "5001"})


def test_account_with_an_email_looks_the_account_up() -> None:
    response = _complete(ScriptedModel(rules=ACCOUNT), _conversation("account", "Reset 2FA for Maria.Keller@example.com"))
    assert _calls(response)[0] == ("lookup_account", {"email": "maria.keller@example.com"})


def test_technical_searches_the_knowledge_base_even_when_ids_are_present() -> None:
    text = "The app crashes when I open invoice INV-1001"
    response = _complete(ScriptedModel(rules=TECHNICAL), _conversation("technical", text))
    assert _calls(response) == [("search_kb", {"query": text, "category": "technical"})]


def test_only_offered_tools_are_called() -> None:
    offered = [schema for schema in TOOLS if schema["name"] == "lookup_order"]
    response = _complete(ScriptedModel(rules=BILLING), _conversation("billing", "Invoice INV-1001 for order 5001"), offered)
    assert _calls(response) == [("lookup_order", {"order_id": "5001"})]


def test_without_anything_to_call_it_answers_at_once() -> None:
    response = _complete(ScriptedModel(rules=BILLING), _conversation("billing", "Hello"), tools=[])
    assert response.tool_calls == ()
    assert response.text is not None and response.text.startswith(SCRIPTED_MARKER)


def test_after_tool_results_it_answers_citing_them() -> None:
    invoice = {"invoice_id": "INV-1002", "amount_due": 240.0, "amount_paid": 480.0, "status": "overpaid"}
    messages = [
        *_conversation("billing", "Charged twice on INV-1002"),
        Message("assistant", None, tool_calls=(ToolCall("call_0_0", "lookup_invoice", {"invoice_id": "INV-1002"}),)),
        Message("tool", json.dumps(invoice), tool_call_id="call_0_0", name="lookup_invoice"),
    ]
    response = _complete(ScriptedModel(), messages)
    assert response.tool_calls == ()
    assert response.text is not None
    assert response.text.startswith(f'{SCRIPTED_MARKER} Reply to: "Charged twice on INV-1002"')
    assert "lookup_invoice" in response.text
    assert "amount_paid=480.0" in response.text and "status=overpaid" in response.text


def test_a_failed_tool_result_is_reported_as_unverified() -> None:
    messages = [
        *_conversation("account", "Lock my account bob@example.com"),
        Message("assistant", None, tool_calls=(ToolCall("c1", "lookup_account", {"email": "bob@example.com"}),)),
        Message("tool", "Error: tool lookup_account timed out after 10 s.", tool_call_id="c1", name="lookup_account"),
    ]
    text = _complete(ScriptedModel(), messages).text or ""
    assert "could not verify" in text and "timed out" in text


def test_replies_are_deterministic() -> None:
    messages = _conversation("billing", "Refund order 5003 and invoice INV-1003")
    assert _complete(ScriptedModel(rules=BILLING), messages) == _complete(ScriptedModel(rules=BILLING), messages)


def test_usage_is_estimated_at_four_characters_per_token() -> None:
    messages = [
        *_conversation("technical", "crash"),
        Message("assistant", None, tool_calls=(ToolCall("c1", "search_kb", {"query": "crash"}),)),
        Message("tool", "[]", tool_call_id="c1", name="search_kb"),
    ]
    response = _complete(ScriptedModel(), messages)
    assert response.text is not None
    assert response.usage.output_tokens == len(response.text) // 4
    assert response.usage.input_tokens >= sum(len(m.content or "") for m in messages) // 4
    assert response.usage.cost_usd == 0.0
    assert response.model == "scripted:default"


def test_call_log_counts_calls_per_task_and_step() -> None:
    log: list[tuple[str, int]] = []
    model = ScriptedModel(call_log=log)
    first_turn = _conversation("billing", "Refund INV-1001")
    with task_scope("task-7"):
        _complete(model, first_turn)
        _complete(model, [*first_turn, Message("assistant", "Looking.", tool_calls=()), Message("tool", "{}", tool_call_id="c1", name="lookup_invoice")])
    # Without a task scope the task's input (the last user message) is the key, and the
    # session's earlier turns before it are not steps of this task.
    earlier = [Message("user", "Was I charged twice?"), Message("assistant", "Yes; refunded.")]
    _complete(model, [first_turn[0], *earlier, *first_turn[1:]])
    assert log == [("task-7", 0), ("task-7", 1), ("Refund INV-1001", 0)]


def test_latency_is_simulated_with_asyncio_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(scripted_module, "asyncio", SimpleNamespace(sleep=fake_sleep))
    _complete(ScriptedModel(latency_s=0.25), _conversation("billing", "hi"))
    _complete(ScriptedModel(), _conversation("billing", "hi"))
    assert slept == [0.25]


def test_fault_marks_count_only_in_the_tasks_own_input() -> None:
    # A later task of the session sees the earlier task's input in its history; that
    # task's marks must not make this one fail too.
    model = MarkedFailures(ScriptedModel(rules=BILLING))
    earlier = [Message("user", "Check INV-1001 #reply-bytes=2000000"), Message("assistant", "(not answered)")]
    conversation = [Message("system", default_system_prompt("billing")), *earlier, Message("user", "Refund INV-1002")]
    reply = _complete(model, conversation)  # type: ignore[arg-type]
    assert len(reply.text or "") < 10_000 and reply.tool_calls
    huge = _complete(model, [*conversation[:-1], Message("user", "INV-1002 #reply-bytes=5000")])  # type: ignore[arg-type]
    assert huge.text == "x" * 5000


# -- the planning rules, app-neutral -------------------------------------------------------
SCHEMA = [{"name": "lookup", "description": "", "parameters": {}}, {"name": "search", "description": "", "parameters": {}}]


def _rules(*raw: dict[str, Any]) -> tuple[ScriptedRule, ...]:
    return tuple(ScriptedRule.model_validate(rule) for rule in raw)


def test_without_rules_it_answers_at_once_quoting_the_input() -> None:
    response = _complete(ScriptedModel(), [Message("system", "Be brief."), Message("user", "Where is REF-9?")], SCHEMA)
    assert response.tool_calls == ()
    assert response.text is not None and response.text.startswith(f'{SCRIPTED_MARKER} Reply to: "Where is REF-9?"')
    assert "no scripted rule fired" in response.text


def test_a_rule_calls_once_per_distinct_match_and_a_rule_without_find_passes_the_text() -> None:
    rules = _rules(
        {"find": r"\bref-(\d+)\b", "call": "lookup", "argument": "ref", "args": {"kind": "doc"}},
        {"call": "search", "argument": "query"},
        {"find": r"\bTAG-\w+\b", "call": "lookup", "argument": "tag", "case": "lower"},
    )
    text = "Compare REF-9 and ref-12 with REF-9, tag TAG-Red"
    calls = _calls(_complete(ScriptedModel(rules=rules), [Message("user", text)], SCHEMA))
    assert calls == [("lookup", {"ref": "9", "kind": "doc"}), ("lookup", {"ref": "12", "kind": "doc"}),
                     ("search", {"query": text}), ("lookup", {"tag": "tag-red"})]


def test_a_rule_without_argument_calls_with_its_fixed_args_only() -> None:
    calls = _calls(_complete(ScriptedModel(rules=_rules({"call": "search"})), [Message("user", "anything")], SCHEMA))
    assert calls == [("search", {})]


@pytest.mark.parametrize(("raw", "message"), [
    ({"find": "(", "call": "lookup", "argument": "x"}, r"find '\(' is not a regular expression"),
    ({"find": "x", "call": "lookup"}, r"names no argument to pass it in; add argument"),
    ({"call": "lookup", "when": "x"}, r"when"),
])
def test_a_bad_rule_is_refused_with_the_fix(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScriptedRule.model_validate(raw)


def test_the_topology_refuses_a_rule_calling_a_tool_the_agent_may_not_call(tmp_path: Path) -> None:
    raw = yaml.safe_load((support_desk.APP / "topology.yaml").read_text(encoding="utf-8"))
    raw["agents"]["technical"]["model"]["scripted"] = [{"call": "lookup_invoice", "argument": "invoice_id"}]
    with pytest.raises(ConfigurationError, match=r"agents.technical: model.scripted calls \['lookup_invoice'\], which are not in the agent's tools"):
        parse_topology(yaml.safe_dump(raw), tmp_path / "topology.yaml")


def test_the_router_model_refuses_scripted_rules(tmp_path: Path) -> None:
    raw = yaml.safe_load((support_desk.APP / "topology.yaml").read_text(encoding="utf-8"))
    raw["agents"]["router"]["routing"]["model"] = {"models": {"standard": "scripted:default"}, "scripted": [{"call": "x"}]}
    with pytest.raises(ConfigurationError, match=r"routing.model sets \['scripted'\], which shape a specialist's loop"):
        parse_topology(yaml.safe_dump(raw), tmp_path / "topology.yaml")


def test_a_list_of_records_is_cited_by_its_fields_whatever_the_domain() -> None:
    found = [{"document_id": "MSA-2041", "title": "Services"}, {"document_id": "NDA-0007", "title": "NDA"}]
    messages = [
        Message("user", "Which documents are there?"),
        Message("assistant", None, tool_calls=(ToolCall("c1", "list_documents", {}), ToolCall("c2", "search", {}))),
        Message("tool", json.dumps(found), tool_call_id="c1", name="list_documents"),
        Message("tool", "[]", tool_call_id="c2", name="search"),
    ]
    text = _complete(ScriptedModel(), messages).text or ""
    assert "- According to list_documents: document_id=MSA-2041, title=Services; document_id=NDA-0007, title=NDA" in text
    assert "- According to search: nothing found" in text
