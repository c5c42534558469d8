"""What the runtime wraps around every record's handler: its log fields and its CONSUMER
span, in one call so the dispatch stays one line (runtime/processor.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agentstream.runtime.context import MessageContext
from agentstream.telemetry import log_context, tracing


@contextmanager
def handling(worker: str, group: str, ctx: MessageContext, value: object) -> Iterator[None]:
    """Log lines inside carry the record's fields; spans inside are children of its
    CONSUMER span (itself the child of the span that produced the record)."""
    token = log_context.bind(**log_context.record_fields(worker, ctx.where, ctx.key, value))
    try:
        with tracing.consuming(ctx.topic, ctx.partition, ctx.offset, group, ctx.headers, ctx.key):
            yield
    finally:
        log_context.unbind(token)
