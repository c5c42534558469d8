"""Trace propagation and spans through the real OpenTelemetry SDK (an in-memory exporter):
the traceparent a producing stage puts in its headers makes the next stage's CONSUMER
span its child, and the model and tool spans carry the GenAI attributes."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentstream.controls.guarded import GuardedModel
from agentstream.models.base import Message
from agentstream.models.scripted import ScriptedModel
from agentstream.telemetry import tracing
from agentstream.tools.registry import ToolRegistry, tool


def _named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [span for span in exporter.get_finished_spans() if span.name == name]
    assert len(found) == 1, f"{name}: {[s.name for s in exporter.get_finished_spans()]}"
    return found[0]


def test_off_no_header_is_added_and_no_span_is_made() -> None:
    assert not tracing.enabled()
    with tracing.producing("t", 0, [("a", b"1")]) as traced:
        assert traced.headers == [("a", b"1")]
    assert tracing.traceparent() is None and tracing.trace_ids() == {}


def test_off_the_genai_blocks_are_shared_and_record_nothing() -> None:
    """No generator per model or tool call while tracing is off: one do-nothing block each."""
    assert not tracing.enabled()
    assert tracing.model_call("openai:gpt-4o") is tracing.model_call("scripted:x")
    assert tracing.tool_call("search_kb") is tracing.tool_call("lookup_invoice")
    assert tracing.agent_run("billing") is tracing.agent_run("sales")
    with tracing.agent_run("billing"), tracing.model_call("openai:gpt-4o") as call, tracing.tool_call("kb") as tool_call:
        call.replied("gpt-4o", 1, 2)  # no span behind them: nothing to set
        tool_call.failed("tool_error")
    assert tracing.trace_ids() == {}


def test_a_record_produced_in_one_stage_is_consumed_as_a_child_in_the_next(spans: InMemorySpanExporter) -> None:
    with tracing.consuming("agents.tasks.v1", 2, 7, "agents.router", headers=[]):
        with tracing.producing("agents.specialist.billing.v1", None, [("traceparent", b"stale"), ("x", b"1")]) as sent:
            headers = sent.headers
    assert headers is not None
    assert [name for name, _ in headers] == ["x", "traceparent"], "a stale traceparent is replaced, others kept"
    with tracing.consuming("agents.specialist.billing.v1", 2, 11, "agents.billing", headers):
        with tracing.producing("agents.supervisor.v1", 2, None) as result:
            result.landed(5)

    routed = _named(spans, "process agents.tasks.v1")
    send = _named(spans, "send agents.specialist.billing.v1")
    billing = _named(spans, "process agents.specialist.billing.v1")
    to_supervisor = _named(spans, "send agents.supervisor.v1")
    assert routed.parent is None, "a record without a traceparent starts the task's trace"
    assert len({s.context.trace_id for s in spans.get_finished_spans()}) == 1
    assert send.parent is not None and send.parent.span_id == routed.context.span_id
    assert billing.parent is not None and billing.parent.span_id == send.context.span_id
    assert (routed.kind, send.kind, billing.kind) == (SpanKind.CONSUMER, SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert dict(billing.attributes or {}) == {
        "messaging.system": "kafka", "messaging.operation.name": "process", "messaging.operation.type": "process",
        "messaging.destination.name": "agents.specialist.billing.v1", "messaging.destination.partition.id": "2",
        "messaging.kafka.offset": 11, "messaging.consumer.group.name": "agents.billing",
    }
    assert (to_supervisor.attributes or {})["messaging.kafka.offset"] == 5


def test_a_kept_traceparent_continues_its_trace_later(spans: InMemorySpanExporter) -> None:
    with tracing.consuming("agents.tasks.v1", 0, 1, "g", headers=[]):
        entry: dict[str, object] = {}
        tracing.keep(entry)
        ids = tracing.trace_ids()
    with tracing.consuming("agents.results.v1", 0, 9, "g", headers=[]):  # another task's record at hand
        with tracing.resumed(str(entry["trace"])):
            with tracing.producing("agents.specialist.billing.v1", None, None):
                pass
    send = _named(spans, "send agents.specialist.billing.v1")
    assert format(send.context.trace_id, "032x") == ids["trace_id"]
    assert send.parent is not None and format(send.parent.span_id, "016x") == ids["span_id"]


def test_a_model_call_is_a_chat_span_with_gen_ai_attributes(spans: InMemorySpanExporter) -> None:
    model = GuardedModel(ScriptedModel())
    response = asyncio.run(model.complete([Message("user", "Please check invoice INV-1001")], []))
    chat = _named(spans, f"chat {model.model_id.partition(':')[2]}")
    attributes = dict(chat.attributes or {})
    assert chat.kind == SpanKind.CLIENT
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == model.model_id.partition(":")[0]
    assert attributes["gen_ai.request.model"] == model.model_id.partition(":")[2]
    assert attributes["gen_ai.usage.input_tokens"] == response.usage.input_tokens > 0
    assert attributes["gen_ai.usage.output_tokens"] == response.usage.output_tokens > 0


@tool
def lookup(order_id: str) -> str:
    """Look an order up.

    Args:
        order_id: the order's id.
    """
    if order_id == "bad":
        raise KeyError(order_id)
    return f"order {order_id}: shipped"


def test_a_tool_call_is_an_execute_tool_span_marked_when_it_fails(spans: InMemorySpanExporter) -> None:
    registry = ToolRegistry()
    registry.register(lookup)
    asyncio.run(registry.call("lookup", {"order_id": "A1"}))
    ok = _named(spans, "execute_tool lookup")
    assert dict(ok.attributes or {}) == {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}
    spans.clear()
    asyncio.run(registry.call("lookup", {"order_id": "bad"}))
    failed = _named(spans, "execute_tool lookup")
    assert (failed.attributes or {})["error.type"] == "tool_error" and failed.status.status_code == StatusCode.ERROR
