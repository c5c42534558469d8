"""OpenTelemetry traces: one task is one trace across the router, the specialists and the
supervisor, carried from stage to stage in each record's W3C ``traceparent`` header.

Spans (names and attributes after the OpenTelemetry semantic conventions):
- ``send {topic}`` (PRODUCER) for every record a stage produces (runtime/processor.py);
  its context goes into the record's ``traceparent`` header;
- ``process {topic}`` (CONSUMER) for every record a stage handles, child of the span
  that produced the record (or a new trace for a record without one: an upstream task);
- ``invoke_agent {agent}`` around a specialist's agent loop, ``chat {model}`` per model
  call (controls/guarded.py) and ``execute_tool {name}`` per tool call (tools/registry.py).

Work that outlives its record (a specialist's loop resumed from a checkpoint after a
crash, a task the router's session gate let go later) continues the trace of the
traceparent kept with it (:func:`traceparent`, :func:`resumed`, :func:`adopt`).

Export is OTLP/HTTP (protobuf), and only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (:func:`setup`); the exporter and the batch
processor read their other standard ``OTEL_*`` variables themselves. Unset, no SDK is
loaded, no header is added and every helper here returns at its first check.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentstream.errors import ConfigurationError
from agentstream.settings import OTEL_ENDPOINT_ENVS, SERVICE_NAME_PREFIX

TRACEPARENT = "traceparent"  # the W3C Trace Context header names
TRACESTATE = "tracestate"
_TRACE_HEADERS = (TRACEPARENT, TRACESTATE)

Headers = list[tuple[str, bytes]]

_propagator = TraceContextTextMapPropagator()  # W3C only, whatever OTEL_PROPAGATORS says
_tracer: trace.Tracer = trace.NoOpTracer()
_enabled = False


def enabled() -> bool:
    return _enabled


def setup(worker: str, environ: Mapping[str, str]) -> bool:
    """Install the SDK with an OTLP/HTTP exporter when an endpoint variable is set; True if
    it did. The service name is ``agentstream-<worker>`` unless OTEL_SERVICE_NAME says."""
    if not any(environ.get(name, "").strip() for name in OTEL_ENDPOINT_ENVS):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigurationError(
            f"{OTEL_ENDPOINT_ENVS[0]} is set but the OpenTelemetry SDK is not installed ({exc.name}); "
            "install it with `pip install 'agentstream[otel]'` or unset the variable."
        ) from None
    # Resource.create gives OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES precedence.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"{SERVICE_NAME_PREFIX}{worker}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # flushed at exit by the SDK
    trace.set_tracer_provider(provider)  # also for any library's own instrumentation
    use(provider)
    return True


def use(provider: trace.TracerProvider | None) -> None:
    """Make spans with ``provider`` (None: stop making spans). setup() calls it; tests give
    an SDK provider with an in-memory exporter."""
    global _enabled, _tracer
    _tracer = trace.NoOpTracer() if provider is None else provider.get_tracer("agentstream")
    _enabled = provider is not None


# -- propagation ---------------------------------------------------------------------------
def _context_of(headers: Sequence[tuple[str, bytes | None]]) -> otel_context.Context | None:
    carrier = {name: (value or b"").decode("latin-1") for name, value in headers if name in _TRACE_HEADERS}
    return _propagator.extract(carrier) if carrier else None


def _with_current(headers: Sequence[tuple[str, bytes]] | None) -> Headers:
    """``headers`` with the current span's trace context in place of any they carried."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    kept = [(name, value) for name, value in headers or () if name not in _TRACE_HEADERS]
    return [*kept, *((name, value.encode("latin-1")) for name, value in carrier.items())]


def traceparent() -> str | None:
    """The current span's ``traceparent`` value, to keep with work that may resume later."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def keep(entry: dict[str, Any]) -> None:
    """Store the current ``traceparent`` in ``entry["trace"]`` (nothing when tracing is off)."""
    kept = traceparent()
    if kept is not None:
        entry["trace"] = kept


@contextmanager
def resumed(kept: str | None) -> Iterator[None]:
    """Inside the block, new spans continue the trace of ``kept`` (from :func:`traceparent`)."""
    if not _enabled or not kept:
        yield
        return
    token = otel_context.attach(_propagator.extract({TRACEPARENT: kept}))
    try:
        yield
    finally:
        otel_context.detach(token)


def adopt(kept: str | None) -> None:
    """Continue the trace of ``kept`` for the rest of the current asyncio task: for the first
    line of spawned work (a task copies its context, so nothing leaks past it)."""
    if _enabled and kept:
        otel_context.attach(_propagator.extract({TRACEPARENT: kept}))


# -- messaging spans -----------------------------------------------------------------------
def _messaging(operation: str, topic: str, partition: int | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": topic,
    }
    if partition is not None and partition >= 0:
        attributes["messaging.destination.partition.id"] = str(partition)
    return attributes


class Produced:
    """What a producing block gives its code: the headers to send, and where the record
    landed once it is known."""

    __slots__ = ("headers", "_span")

    def __init__(self, headers: Headers | None, span: Span | None) -> None:
        self.headers = headers
        self._span = span

    def landed(self, offset: int) -> None:
        if self._span is not None:
            self._span.set_attribute("messaging.kafka.offset", offset)


@contextmanager
def producing(topic: str, partition: int | None, headers: Sequence[tuple[str, bytes]] | None) -> Iterator[Produced]:
    """A PRODUCER span for one record; ``Produced.headers`` carry its ``traceparent``."""
    if not _enabled:
        yield Produced(list(headers) if headers is not None else None, None)
        return
    with _tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER,
                                       attributes=_messaging("send", topic, partition)) as span:
        yield Produced(_with_current(headers), span)


@contextmanager
def consuming(topic: str, partition: int, offset: int, group: str,
              headers: Sequence[tuple[str, bytes | None]], key: bytes | None = None) -> Iterator[None]:
    """A CONSUMER span around a record's handler, child of the span that produced it."""
    if not _enabled:
        yield
        return
    attributes = _messaging("process", topic, partition)
    attributes["messaging.kafka.offset"] = offset
    attributes["messaging.consumer.group.name"] = group
    if key is not None:  # the session id on every per-session topic
        attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
    with _tracer.start_as_current_span(f"process {topic}", context=_context_of(headers), kind=SpanKind.CONSUMER,
                                       attributes=attributes):
        yield


# -- GenAI spans ---------------------------------------------------------------------------
class ModelCall:
    """What a model-call block records about the reply: model and token usage."""

    __slots__ = ("_span",)

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def replied(self, model: str, input_tokens: int, output_tokens: int) -> None:
        if self._span is not None:
            self._span.set_attributes({"gen_ai.response.model": model, "gen_ai.usage.input_tokens": input_tokens,
                                       "gen_ai.usage.output_tokens": output_tokens})


def model_call(model_id: str) -> AbstractContextManager[ModelCall]:
    """A CLIENT span ``chat {model}`` for one model call (``model_id`` is provider:model)."""
    if not _enabled:
        return _NO_MODEL_SPAN
    return _model_call_span(model_id)


@contextmanager
def _model_call_span(model_id: str) -> Iterator[ModelCall]:
    provider, _, model = model_id.partition(":") if ":" in model_id else ("", "", model_id)
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.provider.name": provider}
    with _tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes) as span:
        try:
            yield ModelCall(span)
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            raise


class ToolCall:
    """What a tool-call block records: whether the tool returned an error."""

    __slots__ = ("_span",)

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def failed(self, error_type: str) -> None:
        if self._span is not None:
            self._span.set_attribute("error.type", error_type)
            self._span.set_status(Status(StatusCode.ERROR, error_type))


def tool_call(name: str) -> AbstractContextManager[ToolCall]:
    """An INTERNAL span ``execute_tool {name}`` for one tool call."""
    if not _enabled:
        return _NO_TOOL_SPAN
    return _tool_call_span(name)


@contextmanager
def _tool_call_span(name: str) -> Iterator[ToolCall]:
    attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
    with _tracer.start_as_current_span(f"execute_tool {name}", attributes=attributes) as span:
        yield ToolCall(span)


def agent_run(agent: str) -> AbstractContextManager[None]:
    """An INTERNAL span ``invoke_agent {agent}`` around one agent loop."""
    if not _enabled:
        return _NO_SPAN
    return _agent_run_span(agent)


@contextmanager
def _agent_run_span(agent: str) -> Iterator[None]:
    attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
    with _tracer.start_as_current_span(f"invoke_agent {agent}", attributes=attributes):
        yield


# With tracing off (the default), the GenAI blocks above are these shared do-nothing context
# managers: a generator-based one per call cost a generator and its wrapper five times per run
# of a specialist (bench/RESULTS.md, session 20). Without a span, ModelCall and ToolCall
# record nothing, so one of each serves every call.
_NO_SPAN: AbstractContextManager[None] = nullcontext()
_NO_MODEL_SPAN: AbstractContextManager[ModelCall] = nullcontext(ModelCall(None))
_NO_TOOL_SPAN: AbstractContextManager[ToolCall] = nullcontext(ToolCall(None))


def trace_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span, for log lines (empty when none)."""
    if not _enabled:
        return {}
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}
