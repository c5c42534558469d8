"""What the runtime wraps around a record's handler (telemetry/handling.py): the record's
log fields inside and nothing after, and a CONSUMER span only when tracing is on."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentstream.runtime.context import MessageContext
from agentstream.telemetry import log_context, tracing
from agentstream.telemetry.handling import Handling

CTX = MessageContext("agents.results.v1", 3, 42, b"s-1", (), 1_700_000_000_000)
RESULT = {"task_id": "t-1", "session_id": "s-1", "tenant_id": "acme", "agent_type": "billing"}


def test_the_records_fields_are_bound_inside_and_gone_after() -> None:
    with log_context.bound(worker="router"):
        with Handling("router", "agents.router", CTX, RESULT):
            assert dict(log_context.current()) == {
                "worker": "router", "record": "agents.results.v1[3]@42", "session_id": "s-1",
                "task_id": "t-1", "tenant_id": "acme", "agent": "billing"}
            assert tracing.trace_ids() == {}, "tracing off: no span"
        assert dict(log_context.current()) == {"worker": "router"}


def test_the_fields_are_unbound_when_the_handler_raises() -> None:
    with pytest.raises(ValueError, match="bad record"):
        with Handling("router", "agents.router", CTX, b"raw"):
            raise ValueError("bad record")
    assert dict(log_context.current()) == {}


def test_with_tracing_on_the_handler_runs_in_a_consumer_span(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="bad record"):
        with Handling("router", "agents.router", CTX, RESULT):
            assert set(tracing.trace_ids()) == {"trace_id", "span_id"}
            assert log_context.current()["task_id"] == "t-1"
            raise ValueError("bad record")
    assert dict(log_context.current()) == {}
    (span,) = spans.get_finished_spans()
    assert (span.name, span.kind) == ("process agents.results.v1", SpanKind.CONSUMER)
    assert span.attributes is not None and span.attributes["messaging.kafka.offset"] == 42
    assert span.attributes["messaging.consumer.group.name"] == "agents.router"
    assert span.status.status_code == StatusCode.ERROR, "the handler's exception reaches the span"
