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
    return _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})


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
    fields.update(task_fields(value))
    return fields


def task_fields(value: object) -> dict[str, Any]:
    """The ids ``value`` holds when it is a decoded task, routed task or result (nothing
    for anything else, e.g. bytes a handler decodes itself)."""
    if not isinstance(value, Mapping):
        return {}
    fields = {name: value[name] for name in _VALUE_FIELDS if isinstance(value.get(name), str)}
    if isinstance(value.get("agent_type"), str):
        fields["agent"] = value["agent_type"]
    return fields
