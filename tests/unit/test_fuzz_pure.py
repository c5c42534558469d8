"""Property tests (hypothesis) for the pure pieces every stage's input goes through first:
the serde, which must turn any bytes into a record or a SerdeError (the retry chain sends a
SerdeError to the DLQ; any other exception is a bug the chain cannot classify as bad input),
and the router's validation, which must name what is wrong with any record, never raise."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentstream.router.decide import validate_task
from agentstream.serde import MAGIC, SchemaSet, SerdeError

SCHEMAS = SchemaSet.load()
# Fixed examples, no shrinking database: the same inputs on every machine and in CI.
FUZZ = settings(derandomize=True, database=None, max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def _framed(draw: st.DrawFn) -> bytes:
    """A valid single-object header of a loaded schema followed by random body bytes, so
    the fuzzing reaches the Avro reader instead of stopping at the marker check."""
    name = draw(st.sampled_from(SCHEMAS.names))
    return MAGIC + SCHEMAS.fingerprint(name) + draw(st.binary(max_size=300))


@st.composite
def _mangled(draw: st.DrawFn) -> bytes:
    """A real record with bytes cut, flipped or appended: near-valid input, the hard case."""
    name = draw(st.sampled_from(["TaskSubmitted", "RoutedTask", "SpecialistResult"]))
    good = SCHEMAS.encode(name, _SAMPLES[name])
    cut = draw(st.integers(0, len(good)))
    flip = draw(st.binary(min_size=0, max_size=8))
    at = draw(st.integers(10, len(good) - 1))
    mode = draw(st.sampled_from(["truncate", "overwrite", "append"]))
    if mode == "truncate":
        return good[:cut]
    if mode == "overwrite":
        return good[:at] + flip + good[at + len(flip):]
    return good + flip + b"\x00"


_USAGE = {"input_tokens": 1, "output_tokens": 2, "cost_usd": 0.5, "llm_calls": 1, "tool_calls": 0, "retries": 0}
_SAMPLES: dict[str, dict[str, Any]] = {
    "TaskSubmitted": {"task_id": "t-1", "session_id": "s-1", "tenant_id": "acme", "input": "Refund INV-1002 please",
                      "submitted_at": 1_700_000_000_000, "requested_agent": "billing", "metadata": {"k": "v"},
                      "budget_usd": 0.25},
    "RoutedTask": {"task_id": "t-1", "session_id": "s-1", "tenant_id": "acme", "input": "Refund INV-1002",
                   "submitted_at": 1_700_000_000_000, "agent_type": "billing", "route": ["billing"], "tier": "standard",
                   "metadata": {}, "routed_at": 1_700_000_000_001, "budget_usd": None},
    "SpecialistResult": {"task_id": "t-1", "session_id": "s-1", "tenant_id": "acme", "agent_type": "billing",
                         "route": ["billing"], "status": "COMPLETED", "output": "done", "error": None, "tools_used": [],
                         "usage": _USAGE, "behavior_version": "v", "submitted_at": None, "started_at": 1,
                         "finished_at": 2, "tier": "standard", "model": "scripted"},
}


def _decodes_or_serde_error(data: bytes) -> None:
    try:
        name, record = SCHEMAS.decode(data)
    except SerdeError as exc:
        assert str(exc), "a SerdeError must say what is wrong"
        return
    # Random bytes that happen to decode must be a whole, valid record of that schema.
    assert isinstance(record, dict) and name in SCHEMAS.names


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_decode_to_a_record_or_raise_serde_error(data: bytes) -> None:
    _decodes_or_serde_error(data)


@FUZZ
@given(_framed())
def test_a_known_header_with_a_random_body_decodes_or_raises_serde_error(data: bytes) -> None:
    _decodes_or_serde_error(data)


@FUZZ
@given(_mangled())
def test_truncated_or_corrupted_records_decode_or_raise_serde_error(data: bytes) -> None:
    _decodes_or_serde_error(data)


@FUZZ
@given(st.sampled_from(["TaskSubmitted", "RoutedTask"]), st.binary(max_size=400))
def test_decode_as_raises_only_serde_error(name: str, data: bytes) -> None:
    try:
        SCHEMAS.decode_as(name, data)
    except SerdeError:
        pass


# Any JSON-ish value a producer could put in a field, including lone surrogates (a Python
# str can hold them, UTF-8 cannot), NUL, right-to-left and astral characters.
_TEXT = st.text(st.characters(codec=None), max_size=60) | st.sampled_from(
    ["", "   ", "\x00", "\u202e\u05e9\u05dc\u05d5\u05dd", "\U0001f600" * 3, "\ud800", "a\udfffb"]
)
_ANY = st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=20) | _TEXT | st.lists(_TEXT, max_size=3)
_FIELDS = ("task_id", "session_id", "tenant_id", "input")


@st.composite
def _task_dicts(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for field in (*_FIELDS, "requested_agent", "metadata", "budget_usd", "submitted_at"):
        # Mostly plausible text, so later checks are reached past the earlier fields; a
        # field may also be missing altogether or hold any other type.
        kind = draw(st.integers(0, 9))
        if kind < 7:
            record[field] = draw(_TEXT)
        elif kind < 9:
            record[field] = draw(_ANY)
    return record


@FUZZ
@given(_task_dicts(), st.integers(1, 200))
def test_validate_task_never_raises_and_names_the_field_at_fault(record: dict[str, Any], limit: int) -> None:
    reason = validate_task(record, limit)
    if reason is None:
        for field in _FIELDS:
            assert isinstance(record[field], str) and record[field].strip()
        assert len(record["input"].encode("utf-8")) <= limit
        budget = record.get("budget_usd")
        assert budget is None or (isinstance(budget, (int, float)) and budget >= 0)
    else:
        assert any(field in reason for field in (*_FIELDS, "budget_usd", "metadata")), f"the reason {reason!r} names no field"


@pytest.mark.parametrize("budget", [-0.01, -1e300, float("nan"), float("-inf"), "1.5", True])
def test_a_negative_nan_or_non_number_budget_is_rejected_by_the_router(budget: Any) -> None:
    """Found by the fuzz: a negative budget passed the router and crashed the specialist's loop."""
    record = {"task_id": "t", "session_id": "s", "tenant_id": "acme", "input": "hello", "budget_usd": budget}
    reason = validate_task(record, 1000)
    assert reason is not None and "budget_usd" in reason and repr(budget) in reason
    assert validate_task({**record, "budget_usd": 0.0}, 1000) is None
    assert validate_task({**record, "budget_usd": None}, 1000) is None


@pytest.mark.parametrize("field", _FIELDS)
def test_a_lone_surrogate_is_rejected_with_a_reason_naming_the_field(field: str) -> None:
    """A str from a JSON or Python client can hold a lone surrogate; UTF-8 (and so Avro and
    Kafka) cannot carry it, so validation must reject it instead of raising on encode."""
    record = {"task_id": "t", "session_id": "s", "tenant_id": "acme", "input": "hello", field: "ok \ud800 no"}
    reason = validate_task(record, 1000)
    assert reason is not None and field in reason and "surrogate" in reason


# The producer's default message.max.bytes (librdkafka); a record over it is refused at
# produce() time, so a dead letter over it would be lost with the event it records.
PRODUCER_LIMIT = 1_000_000
_FILL = st.sampled_from(["x", "\u00e9", "\U0001f600"])


@st.composite
def _accepted_records(draw: st.DrawFn) -> tuple[bytes | None, bytes]:
    """A key and value the broker took (together under the limit): random bytes, or a
    TaskSubmitted whose id or session (which the dead letter copies out) is most of it."""
    # Sizes by hand rather than integers(): the failures live near the limit, which a
    # uniform-ish draw of 60 examples may miss.
    key_bytes = draw(st.sampled_from([0, 1, 1_000, 100_000, 400_000, 900_000, 990_000]))
    key = None if key_bytes == 0 else (draw(_FILL) * key_bytes).encode()[:key_bytes]
    room = PRODUCER_LIMIT - 2_000 - len(key or b"")
    size = int(max(0, room) * draw(st.sampled_from([1.0, 0.9, 0.6, 0.4, 0.1, 0.0])))
    if draw(st.booleans()):
        return key, b"\x01" * size
    fill = draw(_FILL)
    text = fill * (size // len(fill.encode()) // 2)  # task_id and session_id share the room
    task = {**_SAMPLES["TaskSubmitted"], "task_id": text, "session_id": text[: len(text) // 2]}
    value = SCHEMAS.encode("TaskSubmitted", task)
    return key, value[:room] if len(value) > room else value


@settings(derandomize=True, database=None, max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_accepted_records())
def test_the_dead_letter_of_any_record_the_broker_took_fits_the_producer_limit(record: tuple[bytes | None, bytes]) -> None:
    from agentstream.retry.dead_letter import build_dead_letter, dead_letter_message
    from agentstream.serde import UndecodableError

    key, value = record
    letter = build_dead_letter(
        key=key, value=value, headers=None, topic="agents.tasks.v1", partition=3, offset=41, stage="router",
        group="router", error=UndecodableError("corrupt"), error_class="PERMANENT", attempts=1,
        first_failure_ms=None, schemas=SCHEMAS,
    )
    out_key, out_value, headers = dead_letter_message(letter, SCHEMAS)
    size = len(out_key) + len(out_value) + sum(len(n) + len(v or b"") for n, v in headers)
    assert size < PRODUCER_LIMIT, f"a {len(key or b'')}+{len(value)}-byte record makes a {size}-byte dead letter"
    if len(key or b"") <= 900_000:  # any key but one that leaves no room for the rest
        assert letter["key"] == key, "the key is kept whole: replay sends the event to its partition"
    whole = letter["key"] == key and letter["value"] == value
    assert letter["value_truncated"] is not whole, "a cut key or value is marked, so replay refuses it"
