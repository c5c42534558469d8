"""What the runtime wraps around every record's handler: its log fields and its CONSUMER
span, in one call so the dispatch stays one line (runtime/processor.py)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import Token
from types import TracebackType
from typing import Any

from agentstream.runtime.context import MessageContext
from agentstream.telemetry import log_context, tracing


class Handling:
    """Log lines inside carry the record's fields; spans inside are children of its
    CONSUMER span (itself the child of the span that produced the record).

    A slotted class rather than a ``@contextmanager`` generator: it is entered once per
    record, and with tracing off (the default) it only sets and resets the log fields."""

    __slots__ = ("_ctx", "_group", "_span", "_token", "_value", "_worker")

    def __init__(self, worker: str, group: str, ctx: MessageContext, value: object) -> None:
        self._worker = worker
        self._group = group
        self._ctx = ctx
        self._value = value
        self._token: Token[Mapping[str, Any]] | None = None
        self._span: AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        ctx = self._ctx
        self._token = log_context.bind_fields(log_context.record_fields(self._worker, ctx.where, ctx.key, self._value))
        if not tracing.enabled():
            return
        span = tracing.consuming(ctx.topic, ctx.partition, ctx.offset, self._group, ctx.headers, ctx.key)
        try:
            span.__enter__()
        except BaseException:
            log_context.unbind(self._token)
            raise
        self._span = span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        try:
            return None if self._span is None else self._span.__exit__(kind, exc, tb)
        finally:
            assert self._token is not None
            log_context.unbind(self._token)
