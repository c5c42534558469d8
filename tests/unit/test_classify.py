"""Every failure a stage can meet gets the right class, also when wrapped."""

from __future__ import annotations

import asyncio

import pydantic
import pytest
from agentstream.controls.errors import CircuitOpenError
from agentstream.errors import BrokerUnavailableError, ConfigurationError, UnknownAgentTypeError
from agentstream.models.errors import (
    BadRequestError,
    ContextTooLongError,
    ModelAuthError,
    ModelConnectionError,
    ModelServerError,
    ModelTimeoutError,
    PermanentModelError,
    RateLimitedError,
    TransientModelError,
)
from agentstream.retry.classify import (
    ErrorClass,
    LimitReached,
    TransientStageError,
    ValidationFailed,
    classify,
    deciding_error,
)
from agentstream.runtime.errors import HandlerError
from agentstream.serde import SchemaSet, SerdeError
from confluent_kafka import KafkaError, KafkaException

TRANSIENT, PERMANENT, LIMIT = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.LIMIT


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet.load()


def _raised(exc: BaseException, cause: BaseException) -> BaseException:
    """``exc`` as if raised ``from cause``."""
    try:
        raise exc from cause
    except BaseException as caught:
        return caught


def _kafka(code: int, *, retriable: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "broker said no", retriable=retriable))


class _Task(pydantic.BaseModel):
    session_id: str = pydantic.Field(min_length=1)


def _pydantic_error() -> pydantic.ValidationError:
    try:
        _Task(session_id="")
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("the model accepted an empty session id")


@pytest.mark.parametrize(
    "exc",
    [
        TransientModelError("flaky"),
        RateLimitedError("429", retry_after=2.0),
        ModelTimeoutError("no reply in 30 s"),
        ModelServerError("503"),
        ModelConnectionError("connection reset"),
        CircuitOpenError("breaker open"),
        TimeoutError(),
        asyncio.TimeoutError(),
        ConnectionResetError("peer reset"),
        BrokerUnavailableError("no broker"),
        TransientStageError("the knowledge base is down"),
        _kafka(KafkaError._TRANSPORT, retriable=True),
        asyncio.CancelledError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient(exc: BaseException) -> None:
    assert classify(exc) is TRANSIENT


@pytest.mark.parametrize(
    "exc",
    [
        ValidationFailed("empty session"),
        _pydantic_error(),
        UnknownAgentTypeError("no agent type 'legal'"),
        PermanentModelError("no"),
        ModelAuthError("401"),
        BadRequestError("400"),
        ContextTooLongError("too long"),
        _kafka(KafkaError.MSG_SIZE_TOO_LARGE, retriable=False),
        ValueError("a bug"),
        KeyError("a bug"),
        ConfigurationError("misconfigured"),
        ZeroDivisionError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent(exc: BaseException) -> None:
    assert classify(exc) is PERMANENT


@pytest.mark.parametrize(
    "data",
    [b"\x00\x01random bytes", b"\xc3\x01" + b"\xee" * 8 + b"\x02ab", b"\xc3\x01" + b"garbage" * 1000],
    ids=["not-avro", "unknown-fingerprint", "garbage-after-marker"],
)
def test_serde_failures_are_permanent(schemas: SchemaSet, data: bytes) -> None:
    with pytest.raises(SerdeError) as caught:
        schemas.decode(data)
    assert classify(caught.value) is PERMANENT


def test_undecodable_body_and_wrong_schema_are_permanent(schemas: SchemaSet) -> None:
    event = {"task_id": "t", "session_id": "s", "stage": "router", "kind": "STATE", "state": "QUEUED", "at": 1}
    data = schemas.encode("TaskEvent", event)
    for bad, call in ((data[:-3], schemas.decode), (data, lambda d: schemas.decode_as("TaskSubmitted", d))):
        with pytest.raises(SerdeError) as caught:
            call(bad)
        assert classify(caught.value) is PERMANENT, type(caught.value).__name__


def test_limit() -> None:
    assert classify(LimitReached("budget spent", partial="half an answer")) is LIMIT
    assert classify(HandlerError("t[0]@1", LimitReached("8 steps"))) is LIMIT


def test_handler_error_is_looked_through() -> None:
    assert classify(HandlerError("t[0]@1", TimeoutError())) is TRANSIENT
    assert classify(HandlerError("t[0]@1", UnknownAgentTypeError("legal"))) is PERMANENT
    assert classify(HandlerError("t[0]@1", RuntimeError("a bug"))) is PERMANENT


def test_cause_chain_of_unknown_types_is_followed() -> None:
    # A tool wraps a timeout in its own exception type: still worth retrying.
    assert classify(_raised(RuntimeError("tool failed"), TimeoutError())) is TRANSIENT
    wrapped = HandlerError("t[2]@9", _raised(RuntimeError("lookup failed"), ModelConnectionError("reset")))
    assert classify(wrapped) is TRANSIENT
    assert classify(_raised(RuntimeError("x"), _raised(ValueError("y"), LimitReached("steps")))) is LIMIT


def test_the_outermost_known_type_decides() -> None:
    # The stage judged the timeout and called it a validation failure: believe the stage.
    assert classify(_raised(ValidationFailed("bad input"), TimeoutError())) is PERMANENT
    assert classify(_raised(TransientStageError("try later"), ValueError("inner"))) is TRANSIENT
    # Serde errors are raised from fastavro's EOFError etc.: the serde error decides.
    assert classify(_raised(SerdeError("undecodable"), TimeoutError())) is PERMANENT


def test_implicit_context_is_not_a_cause() -> None:
    try:
        try:
            raise TimeoutError
        except TimeoutError:
            raise ValueError("bug while handling a timeout") from None
    except ValueError as exc:
        assert classify(exc) is PERMANENT


def test_deciding_error_names_the_inner_exception() -> None:
    inner = UnknownAgentTypeError("legal")
    assert deciding_error(HandlerError("t[0]@1", _raised(RuntimeError("x"), inner))) is inner
    bug = ValueError("bug")
    assert deciding_error(HandlerError("t[0]@1", bug)) is bug  # not the runtime's wrapper
    outer = _raised(RuntimeError("outer"), KeyError("inner"))
    assert deciding_error(outer) is outer


def test_exception_groups_take_the_most_final_class() -> None:
    assert classify(ExceptionGroup("tools", [TimeoutError(), ModelServerError("503")])) is TRANSIENT
    assert classify(ExceptionGroup("tools", [TimeoutError(), ValueError("bug")])) is PERMANENT
    assert classify(HandlerError("t[0]@1", ExceptionGroup("tools", [TimeoutError(), LimitReached("x")]))) is LIMIT


def test_a_cause_cycle_terminates() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    assert classify(first) is PERMANENT


def test_error_class_values_are_the_wire_names() -> None:
    assert [str(c) for c in ErrorClass] == ["TRANSIENT", "PERMANENT", "LIMIT"]
