"""Failure handling: error classes, retry/DLQ headers and the DeadLetter envelope.

The retry-tier runtime lives in ``agentstream.runtime``; operating the DLQ from the
command line is ``agentstream.retry.dlq_ops`` (not imported here: it is a tool, not
part of a worker's path).
"""

from __future__ import annotations

from agentstream.retry import headers
from agentstream.retry.classify import (
    ErrorClass,
    LimitReached,
    TransientStageError,
    ValidationFailed,
    classify,
    deciding_error,
)
from agentstream.retry.dead_letter import (
    DEAD_LETTER,
    DEAD_LETTERED,
    MAX_VALUE_BYTES,
    build_dead_letter,
    dead_letter_event,
    dead_letter_message,
    failed_result,
    read_original,
)

__all__ = [
    "DEAD_LETTER",
    "DEAD_LETTERED",
    "MAX_VALUE_BYTES",
    "ErrorClass",
    "LimitReached",
    "TransientStageError",
    "ValidationFailed",
    "build_dead_letter",
    "classify",
    "dead_letter_event",
    "dead_letter_message",
    "deciding_error",
    "failed_result",
    "headers",
    "read_original",
]
