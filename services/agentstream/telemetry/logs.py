"""How a process logs: text (the default) or one JSON object per line
(``AGENTSTREAM_LOG_FORMAT=json``), both redacted (telemetry/redact.py).

The JSON formatter is a small ``logging.Formatter`` of our own on the standard library's
json rather than python-json-logger: what a line holds is the record's context
(telemetry/log_context.py) and the trace it belongs to, not the LogRecord's attributes,
and redaction has to run over the finished line anyway, so a library would add a
dependency and leave both to us.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TextIO

from agentstream.errors import ConfigurationError
from agentstream.settings import LOG_FORMAT_ENV
from agentstream.telemetry import log_context
from agentstream.telemetry.redact import Redactor, secret_values
from agentstream.telemetry.tracing import trace_ids

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMATS = ("text", "json")

Redact = Callable[[str], str]


class RedactingFormatter(logging.Formatter):
    """The text format, with secrets replaced."""

    def __init__(self, redact: Redact, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, the context's fields (worker,
    task_id, session_id, tenant_id, agent, step, record), trace and span ids when a span
    is current, message and exception. Secrets are replaced in the finished line."""

    def __init__(self, redact: Redact) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        line.update(_ordered(log_context.current()))
        line.update(trace_ids())
        # The message and the traceback are redacted before JSON escapes them (a quote
        # becomes \", which the patterns' quotes do not take, nor does a secret value that
        # holds one), and the finished line again for the context fields.
        line["message"] = self._redact(record.getMessage())
        if record.exc_info:
            line["exception"] = self._redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = self._redact(record.exc_text)
        return self._redact(json.dumps(line, ensure_ascii=False, default=str))


def _ordered(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: fields[name] for name in log_context.FIELDS if name in fields}


def formatter(log_format: str, redact: Redact | None = None) -> logging.Formatter:
    """The formatter of ``log_format`` ("text" or "json"), redacting with ``redact``
    (default: the patterns and this process's secret environment variables)."""
    chosen = redact or Redactor(secret_values())
    if log_format == "json":
        return JsonFormatter(chosen)
    if log_format == "text":
        return RedactingFormatter(chosen)
    raise ConfigurationError(f"{LOG_FORMAT_ENV}={log_format!r} is not a log format; use one of {', '.join(LOG_FORMATS)}.")


def task_line_level(routine: bool) -> int:
    """The level of a worker's line about one task: DEBUG when the task went the usual way
    (a first run that completed, a route the router's model chose, a result published
    COMPLETED without an error), INFO when it did not (a run resumed from its checkpoint,
    from a retry tier or replayed from the dead-letter queue; a failure, a partial failure,
    a cancel). Why: a routine line per task per worker is what a busy
    worker's INFO output would otherwise consist of, at ~35 µs of CPU a line (4-6 % of a
    worker's main thread at once; bench/RESULTS.md, session 38), while each task's way is
    kept in its TaskEvents, spans and metrics already. ``AGENTSTREAM_LOG_LEVEL=DEBUG`` shows
    every task's line."""
    return logging.DEBUG if routine else logging.INFO


def configure(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Log at ``level`` to ``stream`` (stderr) in ``log_format``: the root logger's handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format.strip().lower() or "text"))  # a bad value fails before any output
    logging.basicConfig(level=level, handlers=[handler])
