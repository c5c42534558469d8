"""What a failure means for the event that caused it: retry, dead-letter, or stop.

- TRANSIENT: the same event may succeed later (a model or tool timeout, a rate limit, a
  5xx, a lost connection, a retriable broker error). It goes to the next retry tier, and
  to the DLQ once the tiers are used up.
- PERMANENT: trying again cannot help (bytes that are not our Avro, an unknown schema
  fingerprint, a record of the wrong schema, a validation failure, an unknown agent type,
  a permanent model error, a bug). It goes to the DLQ at once.
- LIMIT: the agent loop reached its budget, step or time limit. The task stops with its
  partial result; nothing is retried or dead-lettered.

The chain is read from the outside in: ``HandlerError`` (the runtime's wrapper) is looked
through to its ``cause``, and an exception of a type this module does not know is looked
through to its ``__cause__`` (``raise X from Y``), so a tool's ``RuntimeError`` raised
from a ``TimeoutError`` is transient. The first exception of a known type decides; when
none does, the failure is PERMANENT (an unexpected exception is a bug, and retrying a bug
only delays its dead letter).
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

import pydantic
from confluent_kafka import KafkaError, KafkaException

from agentstream.errors import AgentStreamError, BrokerUnavailableError, UnknownAgentTypeError
from agentstream.models.errors import PermanentModelError, TransientModelError
from agentstream.runtime.errors import HandlerError
from agentstream.serde import SerdeError

__all__ = [
    "ErrorClass",
    "LimitReached",
    "TransientStageError",
    "ValidationFailed",
    "classify",
    "deciding_error",
]

# Guards against a cause chain that loops back on itself.
_MAX_DEPTH = 32


class ErrorClass(StrEnum):
    TRANSIENT = "TRANSIENT"
    PERMANENT = "PERMANENT"
    LIMIT = "LIMIT"


class TransientStageError(AgentStreamError):
    """A stage says the event may succeed later (e.g. a dependency is down); retry it."""


class ValidationFailed(AgentStreamError):
    """The event decoded but its content is not acceptable (e.g. an empty session id)."""


class LimitReached(AgentStreamError):
    """The agent loop hit its budget, step or time limit; stop with the partial result.

    ``partial`` holds the best answer so far, when there is one.
    """

    def __init__(self, message: str, *, partial: str | None = None) -> None:
        super().__init__(message)
        self.partial = partial


# asyncio.TimeoutError is TimeoutError since Python 3.11; both names are listed for readers.
_TRANSIENT: tuple[type[BaseException], ...] = (
    TransientStageError,
    TransientModelError,
    BrokerUnavailableError,
    TimeoutError,
    asyncio.TimeoutError,
    ConnectionError,
)
_PERMANENT: tuple[type[BaseException], ...] = (
    ValidationFailed,
    SerdeError,
    pydantic.ValidationError,
    UnknownAgentTypeError,
    PermanentModelError,
)


def _known(exc: BaseException) -> ErrorClass | None:
    """The class of ``exc`` judged by its own type alone, or None when its type says nothing."""
    if isinstance(exc, LimitReached):
        return ErrorClass.LIMIT
    if isinstance(exc, _TRANSIENT):
        return ErrorClass.TRANSIENT
    if isinstance(exc, _PERMANENT):
        return ErrorClass.PERMANENT
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        retriable = isinstance(error, KafkaError) and error.retriable()
        return ErrorClass.TRANSIENT if retriable else ErrorClass.PERMANENT
    if not isinstance(exc, Exception):
        # Cancellation, KeyboardInterrupt, SystemExit: the work was stopped, not wrong.
        return ErrorClass.TRANSIENT
    return None


def _inner(exc: BaseException) -> BaseException | None:
    if isinstance(exc, HandlerError):
        return exc.cause
    return exc.__cause__


def deciding_error(exc: BaseException) -> BaseException:
    """The exception in ``exc``'s chain whose type decides its class (``exc`` if none does).

    The dead letter names this one's type and message rather than a wrapper's.
    """
    current: BaseException | None = exc
    outermost: BaseException | None = None  # the first one that is not the runtime's wrapper
    for _ in range(_MAX_DEPTH):
        if current is None:
            break
        if isinstance(current, BaseExceptionGroup) or _known(current) is not None:
            return current
        if outermost is None and not isinstance(current, HandlerError):
            outermost = current
        current = _inner(current)
    return outermost or exc


def classify(exc: BaseException) -> ErrorClass:
    """TRANSIENT, PERMANENT or LIMIT for a failure of a stage (see the module docstring)."""
    decider = deciding_error(exc)
    if isinstance(decider, BaseExceptionGroup):
        # Several failures at once (a TaskGroup): the most final one wins.
        classes = {classify(inner) for inner in decider.exceptions}
        for verdict in (ErrorClass.PERMANENT, ErrorClass.LIMIT, ErrorClass.TRANSIENT):
            if verdict in classes:
                return verdict
        return ErrorClass.PERMANENT
    return _known(decider) or ErrorClass.PERMANENT
