"""Every schema stays BACKWARD and FORWARD compatible with its last released copy.

``schemas/history/<Name>.avsc`` is the last released version; ``schemas/history/<version>/``
keeps the releases before it, and the current schemas must read and be read by those too.
The check uses the Apache
``avro`` package's compatibility checker (fastavro has none). BACKWARD: the current
schema reads what the released one wrote. FORWARD: the released one reads what the
current one writes (consumers not yet upgraded).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
HISTORY_DIR = SCHEMAS_DIR / "history"
CURRENT = sorted(p.stem for p in SCHEMAS_DIR.glob("*.avsc"))
RELEASED = sorted(p.stem for p in HISTORY_DIR.glob("*.avsc"))
OLDER_RELEASES = sorted(HISTORY_DIR.glob("*/*.avsc"))


def _json(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def _problems(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """The checker's findings as one readable line, or none."""
    # A fresh checker each time: it memoizes by object identity.
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = sorted({kind.value for kind in result.incompatibilities})
    return [f"{', '.join(kinds)}: {sorted(result.messages)} at {sorted(result.locations)}"]


def compatibility_problems(current: dict[str, Any], released: dict[str, Any]) -> list[str]:
    """Why ``current`` may not replace ``released``; empty when it may."""
    backward = [f"BACKWARD (current reads released): {p}" for p in _problems(current, released)]
    forward = [f"FORWARD (released reads current): {p}" for p in _problems(released, current)]
    return backward + forward


def test_there_are_schemas_and_a_release() -> None:
    assert CURRENT and RELEASED


@pytest.mark.parametrize("path", sorted(SCHEMAS_DIR.glob("*.avsc")) + sorted(HISTORY_DIR.glob("*.avsc")), ids=str)
def test_each_file_parses_alone_and_is_named_after_its_record(path: Path) -> None:
    schema = avro.schema.parse(path.read_text(encoding="utf-8"))
    assert isinstance(schema, avro.schema.RecordSchema)
    assert (schema.namespace, schema.name) == ("agentstream.v1", path.stem)


@pytest.mark.parametrize("name", RELEASED)
def test_every_released_schema_still_exists(name: str) -> None:
    assert name in CURRENT, f"schemas/{name}.avsc was released (schemas/history/) and must not disappear"


@pytest.mark.parametrize("name", sorted(set(CURRENT) & set(RELEASED)))
def test_current_is_compatible_with_released_both_ways(name: str) -> None:
    problems = compatibility_problems(_json(SCHEMAS_DIR / f"{name}.avsc"), _json(HISTORY_DIR / f"{name}.avsc"))
    assert not problems, f"schemas/{name}.avsc breaks compatibility:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", OLDER_RELEASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_current_is_compatible_with_older_releases_both_ways(path: Path) -> None:
    problems = compatibility_problems(_json(SCHEMAS_DIR / path.name), _json(path))
    assert not problems, f"schemas/{path.name} breaks compatibility with release {path.parent.name}:\n" + "\n".join(problems)


def test_every_enum_has_a_default_symbol() -> None:
    # Without one, a symbol added later cannot be read by consumers not yet upgraded.
    found: dict[str, list[str]] = {}
    for path in SCHEMAS_DIR.glob("*.avsc"):
        _named_types(_json(path), "", found)
    enums = {name: json.loads(copies[0]) for name, copies in found.items() if json.loads(copies[0])["type"] == "enum"}
    assert enums, "the schemas declare enums"
    missing = sorted(name for name, enum in enums.items() if enum.get("default") not in enum["symbols"])
    assert not missing, f"enums without a default symbol: {missing}"


def _named_types(node: Any, namespace: str, found: dict[str, list[str]]) -> None:
    if isinstance(node, list):
        for item in node:
            _named_types(item, namespace, found)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            namespace = node.get("namespace", namespace)
            fullname = node["name"] if "." in node["name"] else f"{namespace}.{node['name']}"
            found.setdefault(fullname, []).append(json.dumps(node, sort_keys=True))
        for key in ("type", "fields", "items", "values"):
            if key in node and not isinstance(node[key], str):
                _named_types(node[key], namespace, found)


def test_named_types_shared_by_several_files_are_identical() -> None:
    # Usage and TaskError are defined inline in each file (so each parses alone); a copy
    # that drifts would give one full name two meanings.
    found: dict[str, list[str]] = {}
    for path in SCHEMAS_DIR.glob("*.avsc"):
        _named_types(_json(path), "", found)
    assert {"agentstream.v1.Usage", "agentstream.v1.TaskError"} <= found.keys()
    drifted = sorted(name for name, copies in found.items() if len(set(copies)) > 1)
    assert not drifted, f"these named types differ between schema files: {drifted}"


# --- the check itself catches incompatible changes -----------------------------------


def _released(name: str) -> dict[str, Any]:
    return _json(HISTORY_DIR / f"{name}.avsc")


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_adding_an_optional_field_with_a_default_is_compatible() -> None:
    released = _released("TaskSubmitted")
    current = copy.deepcopy(released)
    current["fields"].append({"name": "priority", "type": ["null", "int"], "default": None})
    assert compatibility_problems(current, released) == []


def test_removing_a_field_without_default_breaks_forward() -> None:
    released = _released("TaskSubmitted")
    current = copy.deepcopy(released)
    current["fields"] = [f for f in current["fields"] if f["name"] != "input"]
    problems = compatibility_problems(current, released)
    assert problems and all(p.startswith("FORWARD") for p in problems)
    assert any("input" in p for p in problems)


def test_adding_a_field_without_default_breaks_backward() -> None:
    released = _released("TaskSubmitted")
    current = copy.deepcopy(released)
    current["fields"].append({"name": "priority", "type": "int"})
    problems = compatibility_problems(current, released)
    assert problems and all(p.startswith("BACKWARD") for p in problems)


def test_removing_an_enum_symbol_breaks_backward_without_a_default() -> None:
    # With a default the checker lets the removed symbol read as the default, which hides a
    # meaning: the release notes must say so. Without one it is refused outright.
    released = _released("TaskEvent")
    current = copy.deepcopy(released)
    state = _field(current, "state")["type"]
    state["symbols"] = [s for s in state["symbols"] if s != "PAUSED"]
    del state["default"]
    problems = compatibility_problems(current, released)
    assert any(p.startswith("BACKWARD") and "PAUSED" in p for p in problems)


def test_adding_an_enum_symbol_is_read_by_released_readers_as_the_default() -> None:
    # The released enums have a default symbol, so consumers not yet upgraded read a new
    # status as that default (FAILED for a TaskResult) instead of failing to decode.
    released = _released("TaskResult")
    current = copy.deepcopy(released)
    _field(current, "status")["type"]["symbols"].append("PAUSED")
    assert compatibility_problems(current, released) == []


def test_adding_an_enum_symbol_broke_forward_before_enums_had_defaults() -> None:
    released = _json(HISTORY_DIR / "0.1.0" / "TaskResult.avsc")
    current = copy.deepcopy(released)
    _field(current, "status")["type"]["symbols"].append("PAUSED")
    problems = compatibility_problems(current, released)
    assert problems and all(p.startswith("FORWARD") for p in problems)


def test_a_new_symbol_decodes_as_the_default_for_an_old_reader() -> None:
    import io

    import fastavro

    reader = _released("TaskEvent")
    writer = copy.deepcopy(reader)
    _field(writer, "state")["type"]["symbols"].append("ARCHIVED")
    record = {"task_id": "t", "session_id": "s", "stage": "router", "kind": "STATE", "state": "ARCHIVED",
              "detail": "", "at": 0}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer), record)
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    assert decoded["state"] == "RUNNING"


def test_changing_a_field_type_breaks_both_ways() -> None:
    released = _released("TaskEvent")
    current = copy.deepcopy(released)
    _field(current, "detail")["type"] = "int"
    _field(current, "detail")["default"] = 0
    problems = compatibility_problems(current, released)
    assert any(p.startswith("BACKWARD") for p in problems) and any(p.startswith("FORWARD") for p in problems)


def test_a_field_with_a_default_added_to_a_nested_record_is_compatible_and_without_one_is_not() -> None:
    # SupervisorReview.revisions (the revise verdict) was added inside TaskResult.review.
    current = _json(SCHEMAS_DIR / "TaskResult.avsc")
    before = copy.deepcopy(current)
    nested = _field(before, "review")["type"][1]
    nested["fields"] = [f for f in nested["fields"] if f["name"] != "revisions"]
    assert compatibility_problems(current, before) == []
    no_default = copy.deepcopy(current)
    revisions = next(f for f in _field(no_default, "review")["type"][1]["fields"] if f["name"] == "revisions")
    del revisions["default"]
    problems = compatibility_problems(no_default, before)
    assert problems and all(p.startswith("BACKWARD") for p in problems)


def _enums(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node] if node.get("type") == "enum" else []
        return found + [enum for value in node.values() for enum in _enums(value)]
    if isinstance(node, list):
        return [enum for value in node for enum in _enums(value)]
    return []


@pytest.mark.parametrize("name", CURRENT)
def test_every_enum_has_a_default_so_a_later_symbol_stays_readable(name: str) -> None:
    # ApprovalVerdict included: a verdict added later reads as "deny" in an older specialist.
    missing = [enum["name"] for enum in _enums(_json(SCHEMAS_DIR / f"{name}.avsc")) if enum.get("default") not in enum["symbols"]]
    assert not missing, f"schemas/{name}.avsc: enums {missing} need a default symbol (README 'Topics and contract')"


def test_a_later_decision_verdict_reads_as_deny_in_the_current_schema() -> None:
    current = _json(SCHEMAS_DIR / "ApprovalDecision.avsc")
    later = copy.deepcopy(current)
    later["fields"][4]["type"]["symbols"].append("escalate")
    assert later["fields"][4]["name"] == "decision"
    assert not compatibility_problems(later, current)  # the later schema reads ours, ours reads the later one
