"""Single-object Avro serde: roundtrips, typed rejections, and interop with Apache ``avro``."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from agentstream.errors import AgentStreamError, ConfigurationError
from agentstream.serde import (
    MAGIC,
    EncodeError,
    NotAvroError,
    SchemaSet,
    SerdeError,
    UndecodableError,
    UnknownFingerprintError,
    UnknownSchemaError,
    WrongSchemaError,
    parsing_canonical_form,
)
from agentstream.settings import SCHEMAS_DIR_ENV
from fastavro.schema import to_parsing_canonical_form

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
T0 = 1_700_000_000_123  # epoch millis with a non-zero millisecond part
USAGE = {"input_tokens": 1200, "output_tokens": 340, "cost_usd": 0.0123, "llm_calls": 3, "tool_calls": 2, "retries": 1}

# One full record per schema, every field set (so optional branches are exercised too).
SAMPLES: dict[str, dict[str, Any]] = {
    "ApprovalRequested": {
        "approval_id": "billing:task-1:0:1", "task_id": "task-1", "session_id": "sess-1", "tenant_id": "acme",
        "agent_type": "billing", "tool": "refund_invoice", "arguments_json": '{"invoice_id":"INV-1"}',
        "arguments_hash": "a" * 64, "input": "Refund INV-1 ✓", "answer_so_far": "Looking it up.",
        "tool_description": "Refund an invoice.", "requested_at": T0, "deadline": T0 + 86_400_000,
        "approvers": "team-leads",
    },
    "ApprovalDecision": {
        "approval_id": "billing:task-1:0:1", "task_id": "task-1", "session_id": "sess-1", "agent_type": "billing",
        "decision": "edit", "arguments_hash": "a" * 64, "edited_arguments_json": '{"invoice_id":"INV-2"}',
        "who": "ops@acme", "why": "wrong invoice", "decided_at": T0 + 9,
    },
    "AuditRecord": {
        "audit_id": "0b7c3f5e-1d2a-4c44-9a55-3e2f1a6b7c8d", "at": T0, "tenant_id": "acme", "subject": "key:ci",
        "action": "task.submit", "target_id": "task-1", "outcome": "accepted", "detail": "über", "source": "gateway",
    },
    "TaskCancel": {
        "task_id": "task-1", "session_id": "sess-1", "tenant_id": "acme", "requested_by": "ops@acme",
        "reason": "the customer withdrew the request ✓", "requested_at": T0 + 11,
    },
    "RolloutControl": {
        "agent_type": "billing", "weight": 0.0, "reason": "rolled back: completion 40% < 85% over 20 tasks",
        "set_by": "rollout-watch", "candidate_version": "0123456789ab", "at": T0 + 11,
        "last_rollback_at": T0 + 11, "last_rollback": {"candidate_version": "0123456789ab", "tasks": 20, "breaches": [
            {"rule": "min_completion", "value": 0.4, "limit": 0.85, "text": "completion 40% < 85%"}]},
    },
    "DeadLetter": {
        "id": "agents.tasks.v1-3-41", "key": b"sess-1", "value": b"\xc3\x01 not avro", "value_size": 12,
        "value_sha256": "0" * 64, "value_truncated": False,
        "headers": [{"name": "trace-id", "value": b"abc"}, {"name": "empty", "value": None}],
        "source_topic": "agents.tasks.v1", "source_partition": 3, "source_offset": 41, "stage": "router",
        "consumer_group": "agents.router", "error_class": "PERMANENT",
        "error_type": "agentstream.serde.UnknownFingerprintError", "error_message": "Unknown writer schema fingerprint",
        "error_stack": "Traceback ...", "attempts": 1, "first_failure_at": T0, "dead_lettered_at": T0 + 5,
        "task_id": "task-1", "session_id": "sess-1", "replayed_from": "agents.tasks.v1-3-7",
    },
    "Transcript": {
        "run_id": "task-1", "task_id": "task-1", "session_id": "sess-1", "tenant_id": "acme", "agent_type": "billing",
        "revision": 0, "behavior_version": "0123456789ab", "variant": "candidate", "model": "scripted:default",
        "tier": "standard", "task": '{"input":"Refund order 42"}', "status": "COMPLETED", "output": "Done ✓", "error": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.001, "llm_calls": 2, "tool_calls": 1,
                  "retries": 0},
        "steps": '[{"kind":"model","step":0}]', "owners": 1, "started_at": T0, "finished_at": T0 + 3,
        "recorded_at": T0 + 4,
    },
    "TaskSubmitted": {
        "task_id": "task-1",
        "session_id": "sess-1",
        "tenant_id": "acme",
        "input": "Refund order 42, please. Ünïcödé ✓",
        "submitted_at": T0,
        "requested_agent": "billing",
        "metadata": {"channel": "email"},
        "budget_usd": 0.5,
    },
    "RoutedTask": {
        "task_id": "task-1",
        "session_id": "sess-1",
        "tenant_id": "acme",
        "input": "Refund order 42",
        "submitted_at": T0,
        "agent_type": "billing",
        "route": ["billing", "support"],
        "tier": "premium",
        "metadata": {},
        "routed_at": T0 + 5,
        "budget_usd": None,
        "history": [
            {"task_id": "task-0", "input": "Was I charged twice?", "output": "Yes; refunded.", "status": "COMPLETED", "agents": ["billing"]},
            {"task_id": "task-00", "input": "And ünïcode €?", "output": None, "status": "FAILED", "agents": []},
        ],
        "router_usage": {**USAGE, "llm_calls": 1, "tool_calls": 0, "retries": 0},
        "revision": 1,
        "feedback": "Name the refunded amount.",
        "previous_output": "Refunded.",
    },
    "SpecialistResult": {
        "task_id": "task-1",
        "session_id": "sess-1",
        "tenant_id": "acme",
        "agent_type": "billing",
        "route": ["billing"],
        "status": "FAILED",
        "output": None,
        "error": {"code": "tool_timeout", "message": "refund API timed out"},
        "tools_used": ["lookup_order", "refund"],
        "usage": USAGE,
        "behavior_version": "billing@3",
        "submitted_at": 1699999999000,
        "started_at": T0 + 10,
        "finished_at": T0 + 2_000,
        "tier": "complex",
        "model": "openai:gpt-4o-mini",
        "input": "Refund order 42 ✓",
        "router_usage": None,
        "revision": 1,
        "variant": "candidate",
        "steps": 3,
        "tool_errors": 1,
        "dry_run": ["refund_invoice: answered from the live run's recorded result"],
    },
    "TaskResult": {
        "task_id": "task-1",
        "session_id": "sess-1",
        "tenant_id": "acme",
        "status": "COMPLETED",
        "output": "Refunded.",
        "error": None,
        "agents": ["billing"],
        "usage": USAGE,
        "behavior_versions": {"billing": "billing@3"},
        "completed_at": T0 + 3_000,
        "submitted_at": T0,
        "tier": "complex",
        "models": {"billing": "openai:gpt-4o-mini", "supervisor": "openai:gpt-4o"},
        "review": {"verdict": "publish", "feedback": "", "confidence": 0.9, "model": "openai:gpt-4o", "revisions": 1},
    },
    "TaskEvent": {
        "task_id": "task-1",
        "session_id": "sess-1",
        "stage": "billing",
        "kind": "STATE",
        "state": "WAITING_INPUT",
        "detail": "awaiting approval",
        "at": T0 + 1,
    },
}


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet.load(SCHEMAS_DIR)


def _raw(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    return schema


def test_samples_cover_every_schema(schemas: SchemaSet) -> None:
    assert sorted(schemas.names) == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_roundtrip(schemas: SchemaSet, name: str) -> None:
    data = schemas.encode(name, SAMPLES[name])
    assert data[:2] == MAGIC and data[2:10] == schemas.fingerprint(name)
    assert schemas.decode(data) == (name, SAMPLES[name])
    assert schemas.decode_as(name, data) == SAMPLES[name]


def test_timestamps_stay_int_millis(schemas: SchemaSet) -> None:
    record = schemas.decode_as("TaskResult", schemas.encode("TaskResult", SAMPLES["TaskResult"]))
    assert type(record["completed_at"]) is int and record["completed_at"] == T0 + 3_000
    assert type(record["submitted_at"]) is int


def test_missing_optional_fields_get_their_defaults(schemas: SchemaSet) -> None:
    minimal = {k: SAMPLES["TaskSubmitted"][k] for k in ("task_id", "session_id", "tenant_id", "input", "submitted_at")}
    record = schemas.decode_as("TaskSubmitted", schemas.encode("TaskSubmitted", minimal))
    assert record == {**minimal, "requested_agent": None, "metadata": {}, "budget_usd": None}


def test_errors_share_the_project_root() -> None:
    for error in (NotAvroError, UnknownFingerprintError, UndecodableError, WrongSchemaError, EncodeError):
        assert issubclass(error, SerdeError)
    assert issubclass(SerdeError, AgentStreamError)


NOT_AVRO = [b"", b"\xc3\x01", b"\xc3\x01\x00\x00", b'{"task_id": "x", "more": 1}', b"\x00\x00\x00\x00\x01abc"]


@pytest.mark.parametrize("data", NOT_AVRO)
def test_rejects_bytes_that_are_not_single_object_avro(schemas: SchemaSet, data: bytes) -> None:
    with pytest.raises(NotAvroError, match="C3 01"):
        schemas.decode(data)


def test_rejects_an_unknown_fingerprint(schemas: SchemaSet) -> None:
    data = MAGIC + bytes.fromhex("0123456789abcdef") + b"\x02x"
    with pytest.raises(UnknownFingerprintError, match="0123456789abcdef") as caught:
        schemas.decode(data)
    assert caught.value.fingerprint == bytes.fromhex("0123456789abcdef")
    assert "TaskEvent" in str(caught.value)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_rejects_every_truncation(schemas: SchemaSet, name: str) -> None:
    data = schemas.encode(name, SAMPLES[name])
    for end in range(10, len(data)):
        with pytest.raises(UndecodableError):
            schemas.decode(data[:end])


def test_rejects_trailing_garbage(schemas: SchemaSet) -> None:
    data = schemas.encode("TaskEvent", SAMPLES["TaskEvent"])
    with pytest.raises(UndecodableError, match="3 trailing bytes"):
        schemas.decode(data + b"\x00\x01\x02")


def test_rejects_a_corrupt_body(schemas: SchemaSet) -> None:
    data = bytearray(schemas.encode("TaskEvent", SAMPLES["TaskEvent"]))
    data[10] = 0x7F  # task_id length becomes -64
    with pytest.raises(UndecodableError, match="TaskEvent"):
        schemas.decode(bytes(data))


def test_decode_as_rejects_another_schema(schemas: SchemaSet) -> None:
    data = schemas.encode("TaskEvent", SAMPLES["TaskEvent"])
    with pytest.raises(WrongSchemaError, match=r"Expected a TaskResult record.*TaskEvent") as caught:
        schemas.decode_as("TaskResult", data)
    assert (caught.value.expected, caught.value.actual) == ("TaskResult", "TaskEvent")


def test_decode_head_reads_the_leading_fields_through_the_one_named(schemas: SchemaSet) -> None:
    data = schemas.encode("TaskResult", SAMPLES["TaskResult"])
    whole = schemas.decode_as("TaskResult", data)
    head = schemas.decode_head("TaskResult", data, through="agents")
    names = [field["name"] for field in _raw("TaskResult")["fields"]]
    assert list(head) == names[: names.index("agents") + 1]
    assert head == {name: whole[name] for name in head}
    assert schemas.decode_head("TaskResult", data, through=names[-1]) == whole


def test_decode_head_keeps_the_checks_on_what_it_reads(schemas: SchemaSet) -> None:
    data = schemas.encode("TaskResult", SAMPLES["TaskResult"])
    with pytest.raises(WrongSchemaError, match=r"Expected a TaskResult record.*TaskEvent"):
        schemas.decode_head("TaskResult", schemas.encode("TaskEvent", SAMPLES["TaskEvent"]), through="task_id")
    with pytest.raises(UndecodableError, match="TaskResult"):
        schemas.decode_head("TaskResult", data[:14], through="agents")
    with pytest.raises(UnknownSchemaError, match=r"TaskResult has no field 'agent'.*'agents'"):
        schemas.decode_head("TaskResult", data, through="agent")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "BOGUS"}, r"kind is 'BOGUS', expected one of STATE, TOOL_CALL"),
        ({"at": "yesterday"}, r"at is 'yesterday', expected long"),
        ({"at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}, r"expected long"),
        ({"detial": "typo"}, r"more fields than the schema specifies: detial"),
        ({"task_id": None}, r"task_id is None, expected string"),
    ],
)
def test_encode_names_the_schema_and_the_problem(schemas: SchemaSet, change: dict[str, Any], message: str) -> None:
    with pytest.raises(EncodeError, match=rf"as TaskEvent: .*{message}"):
        schemas.encode("TaskEvent", {**SAMPLES["TaskEvent"], **change})


def test_encode_rejects_a_missing_required_field(schemas: SchemaSet) -> None:
    record = {k: v for k, v in SAMPLES["TaskEvent"].items() if k != "stage"}
    with pytest.raises(EncodeError, match="stage"):
        schemas.encode("TaskEvent", record)


def test_unknown_schema_name_lists_the_known_ones(schemas: SchemaSet) -> None:
    with pytest.raises(UnknownSchemaError, match=r"'TaskEvnt'.*TaskEvent"):
        schemas.encode("TaskEvnt", {})
    with pytest.raises(UnknownSchemaError):
        schemas.fingerprint("TaskEvnt")


def test_load_defaults_to_the_repository_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEMAS_DIR_ENV, raising=False)
    assert sorted(SchemaSet.load().names) == sorted(SAMPLES)


def test_environment_points_load_elsewhere_but_an_explicit_directory_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(SCHEMAS_DIR / "history"))
    assert SchemaSet.load().fingerprint("TaskEvent") == SchemaSet.load(SCHEMAS_DIR).fingerprint("TaskEvent")
    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(Path(__file__).parent))  # holds no .avsc
    with pytest.raises(ConfigurationError, match=r"No \*\.avsc"):
        SchemaSet.load()
    assert SchemaSet.load(SCHEMAS_DIR).names


def test_file_name_must_be_the_record_name() -> None:
    with pytest.raises(ConfigurationError, match=r"TaskEvent\.avsc"):
        SchemaSet({"Progress": _raw("TaskEvent")})


# --- interop with the Apache avro package ---------------------------------------------

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def _timestamp_fields(name: str) -> set[str]:
    def is_timestamp(t: Any) -> bool:
        if isinstance(t, list):
            return any(is_timestamp(branch) for branch in t)
        return isinstance(t, dict) and t.get("logicalType") == "timestamp-millis"

    return {f["name"] for f in _raw(name)["fields"] if is_timestamp(f["type"])}


def _with_datetimes(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Apache avro wants datetimes where the schema says timestamp-millis."""
    stamps = _timestamp_fields(name)
    return {k: EPOCH + dt.timedelta(milliseconds=v) if k in stamps and v is not None else v for k, v in record.items()}


def test_our_fingerprint_is_the_spec_one_apache_avro_computes(schemas: SchemaSet) -> None:
    # Parsing Canonical Form strips logicalType. Apache avro (Python, 1.12) instead
    # writes {"type":"long"} for a logical-typed long, unlike Java and fastavro; on the
    # physical schema every implementation agrees, and that is the fingerprint we write.
    for name in schemas.names:
        physical = avro.schema.parse(json.dumps(_without_logical_types(_raw(name))))
        assert physical.fingerprint("CRC-64-AVRO") == schemas.fingerprint(name), name


def test_canonical_form_matches_fastavro_and_apache_avro(schemas: SchemaSet) -> None:
    from fastavro import parse_schema

    for name in schemas.names:
        parsed = parse_schema(_raw(name), named_schemas={})
        assert parsing_canonical_form(parsed) == to_parsing_canonical_form(_raw(name))
        apache = avro.schema.parse(json.dumps(_raw(name))).canonical_form
        assert parsing_canonical_form(parsed, logical_as_object=True) == apache


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_apache_avro_decodes_what_we_write(schemas: SchemaSet, name: str) -> None:
    # The Apache side finds the writer schema by fingerprint, knowing only the files.
    by_fingerprint = {
        avro.schema.parse(json.dumps(_without_logical_types(_raw(n)))).fingerprint(): avro.schema.parse(
            json.dumps(_raw(n))
        )
        for n in schemas.names
    }
    data = schemas.encode(name, SAMPLES[name])
    assert data[:2] == b"\xc3\x01"
    writer = by_fingerprint[data[2:10]]
    body = io.BytesIO(data[10:])
    record = avro.io.DatumReader(writer).read(avro.io.BinaryDecoder(body))
    assert body.tell() == len(data) - 10
    assert record == _with_datetimes(name, SAMPLES[name])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_we_decode_what_apache_avro_writes(schemas: SchemaSet, name: str) -> None:
    schema = avro.schema.parse(json.dumps(_raw(name)))
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(_with_datetimes(name, SAMPLES[name]), avro.io.BinaryEncoder(body))
    # Framed with Apache avro's own fingerprint (its variant canonical form) and with
    # the spec/Java one: a producer using either is understood.
    spec_fingerprint = avro.schema.parse(json.dumps(_without_logical_types(_raw(name)))).fingerprint()
    for fingerprint in (schema.fingerprint(), spec_fingerprint):
        assert schemas.decode(b"\xc3\x01" + fingerprint + body.getvalue()) == (name, SAMPLES[name])
