"""Every Kafka header name the retry chain and the DLQ use, and their encoding.

Modelled on Spring Kafka's retry-topic headers and KIP-1034's DLQ headers, all prefixed
``agentstream-`` so they never clash with an upstream's own. Values are UTF-8 text;
numbers are decimal, timestamps epoch milliseconds.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Mapping

from agentstream.retry.classify import deciding_error
from agentstream.runtime.errors import HandlerError

__all__ = [
    "ATTEMPT",
    "CONSUMER_GROUP",
    "DEAD_LETTER_ID",
    "DUE_MS",
    "ERROR_CLASS",
    "ERROR_MESSAGE",
    "ERROR_STACK",
    "ERROR_TYPE",
    "FIRST_FAILURE_MS",
    "MAX_MESSAGE_BYTES",
    "MAX_STACK_BYTES",
    "ORIGINAL_OFFSET",
    "ORIGINAL_PARTITION",
    "ORIGINAL_TOPIC",
    "PREFIX",
    "PURGED",
    "REPLAY",
    "RETRY_CONTEXT",
    "STAGE",
    "HeaderList",
    "decode_headers",
    "encode_headers",
    "failure_headers",
    "replay_headers",
    "trim_stack",
    "trim_text",
    "type_name",
]

PREFIX = "agentstream-"

ATTEMPT = "agentstream-attempt"  # tries so far, the first included; 0 on a replayed event
FIRST_FAILURE_MS = "agentstream-first-failure-ms"
DUE_MS = "agentstream-due-ms"  # a retry tier holds the event until this time
ORIGINAL_TOPIC = "agentstream-original-topic"  # the stage input, never a retry tier
ORIGINAL_PARTITION = "agentstream-original-partition"
ORIGINAL_OFFSET = "agentstream-original-offset"
CONSUMER_GROUP = "agentstream-consumer-group"
STAGE = "agentstream-stage"
ERROR_CLASS = "agentstream-error-class"  # TRANSIENT, PERMANENT, LIMIT
ERROR_TYPE = "agentstream-error-type"  # the deciding exception type
ERROR_MESSAGE = "agentstream-error-message"
ERROR_STACK = "agentstream-error-stack"  # the last frames, at most MAX_STACK_BYTES
REPLAY = "agentstream-replay"  # on a replayed event: the id of its dead letter
DEAD_LETTER_ID = "agentstream-dead-letter-id"  # on a DLQ record and its purge marker
PURGED = "agentstream-purged"  # on a purge marker: when it was purged (epoch ms)

# What a failure adds to an event; stale once the event is replayed from the DLQ.
RETRY_CONTEXT = frozenset(
    {
        ATTEMPT,
        FIRST_FAILURE_MS,
        DUE_MS,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        CONSUMER_GROUP,
        STAGE,
        ERROR_CLASS,
        ERROR_TYPE,
        ERROR_MESSAGE,
        ERROR_STACK,
        REPLAY,
    }
)

MAX_STACK_BYTES = 4096
MAX_MESSAGE_BYTES = 2048

HeaderList = list[tuple[str, bytes]]
_HeaderValue = str | bytes | int | None


def encode_headers(values: Mapping[str, _HeaderValue]) -> HeaderList:
    """Kafka headers from a mapping; ints become decimal text and None values are left out."""
    out: HeaderList = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bytes):
            out.append((name, value))
        else:
            out.append((name, str(value).encode("utf-8")))
    return out


def decode_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers as text; a name given twice keeps its last value, as Spring reads them."""
    if not headers:
        return {}
    return {name: (value or b"").decode("utf-8", "replace") for name, value in headers}


def failure_headers(
    *,
    attempt: int,
    first_failure_ms: int,
    due_ms: int | None,
    topic: str,
    partition: int,
    offset: int,
    group: str,
    stage: str,
    error: BaseException,
    error_class: str,
) -> HeaderList:
    """The failure context a retry-tier record carries (``topic`` is the stage input)."""
    decider = deciding_error(error)
    return encode_headers(
        {
            ATTEMPT: attempt,
            FIRST_FAILURE_MS: first_failure_ms,
            DUE_MS: due_ms,
            ORIGINAL_TOPIC: topic,
            ORIGINAL_PARTITION: partition,
            ORIGINAL_OFFSET: offset,
            CONSUMER_GROUP: group,
            STAGE: stage,
            ERROR_CLASS: str(error_class),
            ERROR_TYPE: type_name(decider),
            ERROR_MESSAGE: trim_text(str(decider)),
            ERROR_STACK: trim_stack(error),
        }
    )


def type_name(exc: BaseException) -> str:
    """``module.QualName`` of an exception type; builtins by their bare name."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def replay_headers(headers: Iterable[tuple[str, bytes | None]], dead_letter_id: str) -> list[tuple[str, bytes | None]]:
    """The original headers without the stale failure context, plus attempt 0 and the marker."""
    kept = [(name, value) for name, value in headers if name not in RETRY_CONTEXT]
    return [*kept, (ATTEMPT, b"0"), (REPLAY, dead_letter_id.encode("utf-8"))]


def trim_text(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, keeping its start."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = f"... ({len(data) - limit} more bytes)"
    return data[: max(0, limit - len(marker))].decode("utf-8", "ignore") + marker


def trim_stack(exc: BaseException, limit: int = MAX_STACK_BYTES) -> str:
    """The traceback of ``exc`` (causes included), cut to its last ``limit`` UTF-8 bytes.

    The end is kept: it holds the innermost frames and the exception line. A
    ``HandlerError`` is shown through its cause, as its own frames are the runtime's.
    """
    if isinstance(exc, HandlerError):
        exc = exc.cause
    text = "".join(traceback.format_exception(exc))
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    head = f"... ({len(data)} bytes, first frames trimmed)\n"
    tail = data[len(data) - (limit - len(head.encode("utf-8"))) :].decode("utf-8", "ignore")
    # Start at a line boundary so the first kept line is whole.
    newline = tail.find("\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1 :]
    return head + tail
