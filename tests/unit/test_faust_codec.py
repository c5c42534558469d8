"""The faust codec and records, without a broker: bytes, registry, typed errors, schema drift."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Needs the faust extra, which `make install` includes (the message agentstream gives
# when it is missing is tested below).
from faust import Record
from faust.exceptions import ValueDecodeError
from faust.serializers import codecs as faust_codecs
from faust.serializers.registry import Registry

from agentstream.integrations.faust import (
    AvroEventCodec,
    TaskErrorRecord,
    TaskResultRecord,
    TaskSubmittedRecord,
    UsageRecord,
    codec_name,
    register_codecs,
)
from agentstream.serde import (
    EncodeError,
    NotAvroError,
    SchemaSet,
    UndecodableError,
    UnknownFingerprintError,
    UnknownSchemaError,
    WrongSchemaError,
)

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
T0 = 1_700_000_000_123

RESULT: dict[str, Any] = {
    "task_id": "task-1",
    "session_id": "sess-1",
    "tenant_id": "acme",
    "status": "FAILED",
    "output": None,
    "error": {"code": "TOOL_TIMEOUT", "message": "lookup_invoice timed out ✗"},
    "agents": ["billing", "account"],
    "usage": {"input_tokens": 1200, "output_tokens": 340, "cost_usd": 0.0123, "llm_calls": 3, "tool_calls": 2, "retries": 0},
    "behavior_versions": {"billing": "v3", "account": "v1"},
    "completed_at": T0 + 900,
    "submitted_at": T0,
    "tier": "standard",
    "models": {"billing": "scripted:default"},
    "review": {"verdict": "escalate", "feedback": "the refund needs a manager", "confidence": 0.8, "model": "openai:m",
               "revisions": 1},
}
SUBMITTED: dict[str, Any] = {
    "task_id": "task-1",
    "session_id": "sess-1",
    "tenant_id": "acme",
    "input": "Refund order 42, please. Ünïcödé ✓",
    "submitted_at": T0,
    "requested_agent": None,
    "metadata": {"channel": "email"},
    "budget_usd": 0.5,
}


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet.load(SCHEMAS_DIR)


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """faust's codec registry is process-global: give each test its own copy."""
    registry = dict(faust_codecs.codecs)
    monkeypatch.setattr(faust_codecs, "codecs", registry)
    return registry


@pytest.mark.parametrize(("name", "record"), [("TaskResult", RESULT), ("TaskSubmitted", SUBMITTED)])
def test_dumps_writes_the_same_bytes_as_schemaset_and_loads_reads_them_back(
    schemas: SchemaSet, name: str, record: dict[str, Any]
) -> None:
    codec = AvroEventCodec(name, schemas)
    data = codec.dumps(record)
    assert data == schemas.encode(name, record)
    assert codec.loads(data) == record


def test_records_encode_like_the_dicts_they_mirror(schemas: SchemaSet) -> None:
    result = TaskResultRecord(
        **{**RESULT, "usage": UsageRecord(**RESULT["usage"]), "error": TaskErrorRecord(**RESULT["error"])}
    )
    assert AvroEventCodec("TaskResult", schemas).dumps(result) == schemas.encode("TaskResult", RESULT)
    submitted = TaskSubmittedRecord(**SUBMITTED)
    assert AvroEventCodec("TaskSubmitted", schemas).dumps(submitted) == schemas.encode("TaskSubmitted", SUBMITTED)


def test_record_defaults_match_the_schema_defaults(schemas: SchemaSet) -> None:
    required = {k: SUBMITTED[k] for k in ("task_id", "session_id", "tenant_id", "input", "submitted_at")}
    first, second = TaskSubmittedRecord(**required), TaskSubmittedRecord(**required)
    assert first.metadata == {} and first.metadata is not second.metadata  # not one shared dict
    assert AvroEventCodec("TaskSubmitted", schemas).dumps(first) == schemas.encode("TaskSubmitted", required)


def test_faust_metadata_tag_is_not_written(schemas: SchemaSet) -> None:
    tagged = {**SUBMITTED, "__faust": {"ns": "someapp.Task"}}
    assert AvroEventCodec("TaskSubmitted", schemas).dumps(tagged) == schemas.encode("TaskSubmitted", SUBMITTED)


def test_faust_registry_builds_the_topic_value_type_with_nested_records(schemas: SchemaSet) -> None:
    codec = AvroEventCodec("TaskResult", schemas)
    registry = Registry(key_serializer="raw", value_serializer="json")
    result = registry.loads_value(TaskResultRecord, schemas.encode("TaskResult", RESULT), serializer=codec)
    assert isinstance(result, TaskResultRecord)
    assert isinstance(result.usage, UsageRecord) and result.usage.llm_calls == 3
    assert isinstance(result.error, TaskErrorRecord) and result.error.code == "TOOL_TIMEOUT"
    assert registry.dumps_value(None, result, serializer=codec) == schemas.encode("TaskResult", RESULT)


def test_registry_without_value_type_gives_the_plain_dict(schemas: SchemaSet) -> None:
    registry = Registry(key_serializer="raw", value_serializer=AvroEventCodec("TaskResult", schemas))
    assert registry.loads_value(None, schemas.encode("TaskResult", RESULT)) == RESULT


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", NotAvroError),
        (b'{"task_id": "task-1"}', NotAvroError),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", UnknownFingerprintError),
    ],
)
def test_bad_bytes_raise_typed_serde_errors(schemas: SchemaSet, data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        AvroEventCodec("TaskResult", schemas).loads(data)


def test_truncated_value_is_undecodable(schemas: SchemaSet) -> None:
    data = schemas.encode("TaskResult", RESULT)
    with pytest.raises(UndecodableError):
        AvroEventCodec("TaskResult", schemas).loads(data[:-5])


def test_a_value_of_another_schema_is_refused(schemas: SchemaSet) -> None:
    with pytest.raises(WrongSchemaError) as caught:
        AvroEventCodec("TaskResult", schemas).loads(schemas.encode("TaskSubmitted", SUBMITTED))
    assert (caught.value.expected, caught.value.actual) == ("TaskResult", "TaskSubmitted")


def test_faust_wraps_our_error_as_the_cause_of_its_decode_error(schemas: SchemaSet) -> None:
    registry = Registry(key_serializer="raw", value_serializer="json")
    with pytest.raises(ValueDecodeError) as caught:
        registry.loads_value(TaskResultRecord, b"not avro", serializer=AvroEventCodec("TaskResult", schemas))
    assert isinstance(caught.value.__cause__, NotAvroError)


@pytest.mark.parametrize(
    "value",
    [
        {**SUBMITTED, "submitted_at": "yesterday"},  # a field of the wrong type
        {**SUBMITTED, "sesion_id": "typo"},  # a misspelt field
        "not a record",
        None,
    ],
)
def test_values_that_do_not_fit_the_schema_raise_encode_error(schemas: SchemaSet, value: Any) -> None:
    with pytest.raises(EncodeError):
        AvroEventCodec("TaskSubmitted", schemas).dumps(value)


def test_unknown_schema_name_fails_at_construction(schemas: SchemaSet) -> None:
    with pytest.raises(UnknownSchemaError, match="TaskResults"):
        AvroEventCodec("TaskResults", schemas)


def test_chained_and_cloned_codecs_keep_the_schema(schemas: SchemaSet) -> None:
    chained = AvroEventCodec("TaskResult", schemas) | faust_codecs.binary()  # Avro, then base64
    data = chained.dumps(RESULT)
    assert data == faust_codecs.binary().dumps(schemas.encode("TaskResult", RESULT))
    assert chained.loads(data) == RESULT
    assert repr(chained) == "AvroEventCodec('TaskResult') | binary()"


def test_register_codecs_registers_one_codec_per_schema_by_name(
    schemas: SchemaSet, isolated_registry: dict[str, Any]
) -> None:
    registered = register_codecs(schemas)
    assert set(registered) == {codec_name(name) for name in schemas.names}
    assert codec_name("TaskResult") == "agentstream.TaskResult"
    data = faust_codecs.dumps("agentstream.TaskResult", RESULT)
    assert data == schemas.encode("TaskResult", RESULT)
    assert faust_codecs.loads("agentstream.TaskResult", data) == RESULT
    assert isolated_registry["agentstream.TaskSubmitted"] is registered["agentstream.TaskSubmitted"]


def test_importing_the_integration_registers_nothing() -> None:
    # A fresh interpreter: this process has imported the module already.
    probe = (
        "import agentstream.integrations.faust\n"
        "from faust.serializers import codecs\n"
        "import json; print(json.dumps(sorted(n for n in codecs.codecs if n.startswith('agentstream'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_import_without_faust_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faust", None)  # makes `import faust` fail
    monkeypatch.delitem(sys.modules, "agentstream.integrations.faust")
    with pytest.raises(ImportError, match=r"pip install 'agentstream\[faust\]'"):
        importlib.import_module("agentstream.integrations.faust")


@pytest.mark.parametrize(
    ("record", "schema", "path"),
    [
        (TaskSubmittedRecord, "TaskSubmitted", ()),
        (TaskResultRecord, "TaskResult", ()),
        (UsageRecord, "TaskResult", ("usage",)),
        (TaskErrorRecord, "TaskResult", ("error",)),
    ],
)
def test_records_have_exactly_the_schema_fields(record: type[Record], schema: str, path: tuple[str, ...]) -> None:
    node: Any = json.loads((SCHEMAS_DIR / f"{schema}.avsc").read_text(encoding="utf-8"))
    for field_name in path:
        field_type = next(f["type"] for f in node["fields"] if f["name"] == field_name)
        node = next(t for t in field_type if isinstance(t, dict)) if isinstance(field_type, list) else field_type
    assert set(record._options.fields) == {f["name"] for f in node["fields"]}
