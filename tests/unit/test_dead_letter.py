"""Retry/DLQ headers, the DeadLetter envelope, what downstream gets, and the dlq output."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from typing import Any

import pytest
from agentstream.events import TASK_EVENT, TASK_RESULT, TASK_SUBMITTED
from agentstream.retry import headers as h
from agentstream.retry.classify import ErrorClass, TransientStageError, ValidationFailed
from agentstream.retry.dead_letter import (
    DEAD_LETTER,
    MAX_VALUE_BYTES,
    build_dead_letter,
    dead_letter_event,
    dead_letter_message,
    failed_result,
    read_original,
)
from agentstream.retry.dlq_ops import DeadLetterFilter, DlqError, format_dead_letter, format_table, parse_since
from agentstream.runtime.errors import HandlerError
from agentstream.serde import SchemaSet, UndecodableError

T0 = 1_700_000_000_123
TASK = {
    "task_id": "task-7",
    "session_id": "sess-7",
    "tenant_id": "acme",
    "input": "Where is my refund?",
    "submitted_at": T0,
    "requested_agent": None,
    "metadata": {},
    "budget_usd": None,
}


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet.load()


def _failure(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _letter(schemas: SchemaSet, value: bytes | None, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "key": b"sess-7",
        "value": value,
        "headers": [("trace-id", b"abc"), ("agentstream-behavior", None)],
        "topic": "agents.tasks.v1",
        "partition": 3,
        "offset": 41,
        "stage": "router",
        "group": "agents.router",
        "error": _failure(ValidationFailed("session_id is empty")),
        "error_class": ErrorClass.PERMANENT,
        "attempts": 1,
        "first_failure_ms": T0,
        "schemas": schemas,
    }
    return build_dead_letter(**{**args, **overrides})


# -- headers --------------------------------------------------------------------------


def test_header_names_are_unique_and_prefixed() -> None:
    names = [value for name, value in vars(h).items() if name.isupper() and isinstance(value, str) and name != "PREFIX"]
    assert len(names) == len(set(names)) >= 13
    assert all(n.startswith(h.PREFIX) and re.fullmatch(r"[a-z0-9-]+", n) for n in names)
    assert h.RETRY_CONTEXT <= set(names)


def test_headers_round_trip() -> None:
    values = {h.ATTEMPT: 2, h.ORIGINAL_TOPIC: "agents.tasks.v1", h.DUE_MS: T0, h.ERROR_MESSAGE: "Zeit ✓"}
    encoded = h.encode_headers({**values, h.REPLAY: None, "raw": b"\x00\x01"})
    assert all(isinstance(v, bytes) for _, v in encoded)
    assert h.REPLAY not in dict(encoded)  # None leaves the header out
    decoded = h.decode_headers(encoded)
    assert decoded == {**{k: str(v) for k, v in values.items()}, "raw": "\x00\x01"}
    assert int(decoded[h.ATTEMPT]) == 2


def test_decode_headers_takes_none_duplicates_and_bad_utf8() -> None:
    assert h.decode_headers(None) == {}
    assert h.decode_headers([]) == {}
    decoded = h.decode_headers([(h.ATTEMPT, b"1"), (h.ATTEMPT, b"2"), ("empty", None), ("bad", b"\xff")])
    assert decoded == {h.ATTEMPT: "2", "empty": "", "bad": "\ufffd"}


def test_failure_headers_carry_the_whole_context() -> None:
    error = HandlerError("agents.tasks.v1[3]@41", _failure(TimeoutError("model took 30 s")))
    headers = h.decode_headers(
        h.failure_headers(
            attempt=2, first_failure_ms=T0, due_ms=T0 + 5000, topic="agents.tasks.v1", partition=3, offset=41,
            group="agents.router", stage="router", error=error, error_class=ErrorClass.TRANSIENT,
        )
    )
    assert headers[h.ATTEMPT] == "2" and headers[h.DUE_MS] == str(T0 + 5000)
    assert headers[h.ORIGINAL_OFFSET] == "41" and headers[h.CONSUMER_GROUP] == "agents.router"
    assert (headers[h.ERROR_CLASS], headers[h.ERROR_TYPE]) == ("TRANSIENT", "TimeoutError")
    assert headers[h.ERROR_MESSAGE] == "model took 30 s"
    assert "TimeoutError: model took 30 s" in headers[h.ERROR_STACK]


def test_replay_headers_drop_the_failure_context() -> None:
    original = [("trace-id", b"abc"), (h.ATTEMPT, b"4"), (h.DUE_MS, b"1"), (h.REPLAY, b"old"), ("empty", None)]
    assert h.replay_headers(original, "t-1-2") == [
        ("trace-id", b"abc"),
        ("empty", None),
        (h.ATTEMPT, b"0"),
        (h.REPLAY, b"t-1-2"),
    ]


def _ping(n: int) -> None:
    if n == 0:
        raise ValueError("bottom of a deep stack")
    _pong(n - 1)


def _pong(n: int) -> None:
    _ping(n)  # alternating frames: traceback does not fold them as repeats


def test_trim_stack_keeps_the_last_frames_within_4_kb() -> None:
    try:
        _ping(200)
    except ValueError as caught:
        exc = caught
    stack = h.trim_stack(exc)
    assert len(stack.encode()) <= h.MAX_STACK_BYTES
    assert stack.startswith("... (") and "first frames trimmed" in stack.splitlines()[0]
    assert stack.rstrip().endswith("ValueError: bottom of a deep stack")
    assert stack.splitlines()[1].startswith("  ")  # a whole line, not half of one
    assert "in _ping" in stack


def test_trim_stack_leaves_a_short_stack_whole_and_shows_a_handler_errors_cause() -> None:
    cause = _failure(KeyError("task_id"))
    stack = h.trim_stack(HandlerError("t[0]@1", cause))
    assert "Traceback" in stack and stack.rstrip().endswith("KeyError: 'task_id'")
    assert "HandlerError" not in stack


def test_trim_text() -> None:
    assert h.trim_text("short") == "short"
    long = h.trim_text("é" * 5000, 100)
    assert len(long.encode()) <= 100 and long.endswith("more bytes)")


# -- the envelope ---------------------------------------------------------------------


def test_dead_letter_encodes_and_carries_the_ids(schemas: SchemaSet) -> None:
    value = schemas.encode(TASK_SUBMITTED, TASK)
    letter = _letter(schemas, value)
    assert letter["id"] == "agents.tasks.v1-3-41"
    assert (letter["task_id"], letter["session_id"]) == ("task-7", "sess-7")
    assert letter["value"] == value and not letter["value_truncated"]
    assert letter["value_sha256"] == hashlib.sha256(value).hexdigest() and letter["value_size"] == len(value)
    assert letter["error_type"] == "agentstream.retry.classify.ValidationFailed"
    assert letter["error_message"] == "session_id is empty" and "ValidationFailed" in letter["error_stack"]
    assert letter["first_failure_at"] == T0 and letter["dead_lettered_at"] >= T0
    assert letter["headers"] == [{"name": "trace-id", "value": b"abc"}, {"name": "agentstream-behavior", "value": None}]
    key, data, headers = dead_letter_message(letter, schemas)
    assert key == b"agents.tasks.v1-3-41"
    assert schemas.decode(data) == (DEAD_LETTER, letter)
    assert h.decode_headers(headers)[h.DEAD_LETTER_ID] == letter["id"]


def test_undecodable_value_falls_back_to_the_key_as_session(schemas: SchemaSet) -> None:
    letter = _letter(schemas, os.urandom(300), error=_failure(UndecodableError("bad")))
    assert (letter["task_id"], letter["session_id"]) == (None, "sess-7")
    assert _letter(schemas, None, key=b"\xff\xfe")["session_id"] is None
    assert read_original(b"junk", schemas) is None


def test_a_handler_error_is_named_by_its_cause(schemas: SchemaSet) -> None:
    error = HandlerError("agents.tasks.v1[3]@41", _failure(TransientStageError("kb down")))
    letter = _letter(schemas, None, error=error, error_class=ErrorClass.TRANSIENT, attempts=4)
    assert letter["error_type"] == "agentstream.retry.classify.TransientStageError"
    assert (letter["error_message"], letter["error_class"], letter["attempts"]) == ("kb down", "TRANSIENT", 4)


def test_a_retry_tier_record_is_dead_lettered_against_its_original_source(schemas: SchemaSet) -> None:
    tier_headers = h.encode_headers(
        {h.ORIGINAL_TOPIC: "agents.tasks.v1", h.ORIGINAL_PARTITION: 3, h.ORIGINAL_OFFSET: 17, h.FIRST_FAILURE_MS: T0}
    )
    tier = {"topic": "agents.tasks.v1.retry-3", "partition": 3, "offset": 5}
    letter = _letter(schemas, None, headers=tier_headers, first_failure_ms=None, **tier)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == ("agents.tasks.v1", 3, 17)
    assert letter["id"] == "agents.tasks.v1-3-17" and letter["first_failure_at"] == T0


def test_unknown_offset_gets_a_uuid_and_a_replay_names_its_origin(schemas: SchemaSet) -> None:
    letter = _letter(schemas, b"x", offset=None, headers=[(h.REPLAY, b"agents.tasks.v1-3-2")])
    assert uuid.UUID(letter["id"]) and letter["source_offset"] == -1
    assert letter["replayed_from"] == "agents.tasks.v1-3-2"
    schemas.encode(DEAD_LETTER, letter)


def test_a_5_mb_value_is_truncated_with_its_size_and_digest(schemas: SchemaSet) -> None:
    value = os.urandom(5 * 1024 * 1024)
    letter = _letter(schemas, value)
    assert letter["value_truncated"] and letter["value"] == value[:MAX_VALUE_BYTES]
    assert letter["value_size"] == len(value) and letter["value_sha256"] == hashlib.sha256(value).hexdigest()
    _, data, _ = dead_letter_message(letter, schemas)
    assert len(data) < 1024 * 1024  # fits a broker's default message limit
    assert schemas.decode_as(DEAD_LETTER, data)["value_size"] == len(value)


# -- what downstream gets -------------------------------------------------------------


def test_failed_result_and_event(schemas: SchemaSet) -> None:
    letter = _letter(schemas, schemas.encode(TASK_SUBMITTED, TASK))
    result = failed_result(letter, TASK)
    assert result is not None
    assert (result["task_id"], result["session_id"], result["tenant_id"], result["status"]) == (
        "task-7", "sess-7", "acme", "FAILED",
    )
    assert result["error"]["code"] == "DEAD_LETTERED"
    message = result["error"]["message"]
    assert "stage router" in message and "ValidationFailed: session_id is empty" in message
    assert letter["id"] in message
    schemas.encode(TASK_RESULT, result)
    event = dead_letter_event(letter)
    assert event is not None
    assert (event["kind"], event["state"], event["stage"]) == ("ERROR", "DEAD_LETTERED", "router")
    assert event["task_id"] == "task-7" and letter["id"] in event["detail"]
    schemas.encode(TASK_EVENT, event)


def test_no_result_or_event_without_the_ids(schemas: SchemaSet) -> None:
    letter = _letter(schemas, os.urandom(50))
    assert failed_result(letter, None) is None
    assert failed_result(letter, {"task_id": "t", "session_id": "s"}) is None  # no tenant
    assert dead_letter_event(letter) is None  # no task id


# -- dlq output (no broker) -----------------------------------------------------------


def test_parse_since() -> None:
    now = T0
    assert parse_since("90s", now) == now - 90_000
    assert parse_since("1h", now) == now - 3_600_000
    assert parse_since("2d", now) == now - 2 * 86_400_000
    assert parse_since("2024-05-01T12:00:00Z", now) == parse_since("2024-05-01T12:00:00", now) == 1_714_564_800_000
    with pytest.raises(DlqError, match="relative time like"):
        parse_since("yesterday", now)


def test_filter(schemas: SchemaSet) -> None:
    letter = _letter(schemas, None)
    assert DeadLetterFilter().matches(letter)
    assert DeadLetterFilter(stage="router", error="permanent").matches(letter)
    assert DeadLetterFilter(error="ValidationFailed").matches(letter)
    assert not DeadLetterFilter(error="TRANSIENT").matches(letter)
    assert not DeadLetterFilter(stage="billing").matches(letter)
    assert not DeadLetterFilter(since_ms=letter["dead_lettered_at"] + 1).matches(letter)


def test_table_and_show(schemas: SchemaSet) -> None:
    decodable = _letter(schemas, schemas.encode(TASK_SUBMITTED, TASK))
    garbage = _letter(schemas, b"\x00\x01\x02" * 200, offset=42)
    table = format_table([decodable, garbage]).splitlines()
    assert table[0].split() == ["ID", "DEAD-LETTERED", "(UTC)", "STAGE", "CLASS", "TYPE", "TASK", "SESSION", "ATTEMPTS"]
    assert table[1].split()[0] == "agents.tasks.v1-3-41" and "ValidationFailed" in table[1] and "task-7" in table[1]
    assert table[2].split()[-3:] == ["-", "sess-7", "1"]
    shown = format_dead_letter(decodable, schemas)
    assert "decoded as TaskSubmitted" in shown and '"input": "Where is my refund?"' in shown
    assert "trace-id: 'abc'" in shown and "agentstream-behavior: null" in shown
    raw = format_dead_letter(garbage, schemas)
    assert "not decodable (NotAvroError): hex 00 01 02" in raw and "(344 more bytes)" in raw
