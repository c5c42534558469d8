"""The fields every log line of a record's handling carries (JSON logs, telemetry/logs.py).

A context variable rather than arguments: the runtime binds the record's fields where it
dispatches a record (runtime/processor.py), the agent loop binds its step, and every log
call inside — in the handler, in the work it spawns (asyncio copies the context into new
tasks), in a tool — carries them without passing anything along.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

# The field names, in the order a JSON line shows them.
FIELDS = ("worker", "task_id", "session_id", "tenant_id", "agent", "step", "record")
# Record fields copied from a decoded value (a task, a routed task, a result) when present.
_VALUE_FIELDS = ("task_id", "session_id", "tenant_id")

_fields: ContextVar[Mapping[str, Any]] = ContextVar("agentstream_log_fields", default={})


def current() -> Mapping[str, Any]:
    """The fields bound in the current context (empty outside any binding)."""
    return _fields.get()


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add ``fields`` (None values are left out) for the rest of the current context;
    ``unbind(token)`` undoes it."""
    return bind_fields({k: v for k, v in fields.items() if v is not None})


def bind_fields(fields: Mapping[str, Any]) -> Token[Mapping[str, Any]]:
    """:func:`bind` of fields known to hold no None (e.g. :func:`record_fields`): the
    runtime binds a record's fields for every record, so it skips the filtering."""
    return _fields.set({**_fields.get(), **fields})


def unbind(token: Token[Mapping[str, Any]]) -> None:
    _fields.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """``fields`` on every log line inside the block."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def record_fields(worker: str, where: str, key: bytes | None, value: object) -> dict[str, Any]:
    """The fields of one record: ``topic[partition]@offset``, the session (every
    per-session topic is keyed by it), and the ids a decoded record holds."""
    fields: dict[str, Any] = {"worker": worker, "record": where}
    if key is not None:
        fields["session_id"] = key.decode("utf-8", "replace")
    _add_task_fields(fields, value)  # a value's own session_id wins over the key
    return fields


def task_fields(value: object) -> dict[str, Any]:
    """The ids ``value`` holds when it is a decoded task, routed task or result (nothing
    for anything else, e.g. bytes a handler decodes itself)."""
    fields: dict[str, Any] = {}
    _add_task_fields(fields, value)
    return fields


def _add_task_fields(fields: dict[str, Any], value: object) -> None:
    # A plain loop, not a comprehension: this runs for every record handled (issue #18).
    if not isinstance(value, Mapping):
        return
    for name in _VALUE_FIELDS:
        field = value.get(name)
        if isinstance(field, str):
            fields[name] = field
    agent = value.get("agent_type")
    if isinstance(agent, str):
        fields["agent"] = agent
