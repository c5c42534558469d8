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
    else:
        assert any(field in reason for field in _FIELDS), f"the reason {reason!r} names no field"


@pytest.mark.parametrize("field", _FIELDS)
def test_a_lone_surrogate_is_rejected_with_a_reason_naming_the_field(field: str) -> None:
    """A str from a JSON or Python client can hold a lone surrogate; UTF-8 (and so Avro and
    Kafka) cannot carry it, so validation must reject it instead of raising on encode."""
    record = {"task_id": "t", "session_id": "s", "tenant_id": "acme", "input": "hello", field: "ok \ud800 no"}
    reason = validate_task(record, 1000)
    assert reason is not None and field in reason and "surrogate" in reason
