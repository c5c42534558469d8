"""Whose a dead letter is (gateway/dlq.py): the tenant of the event it holds, else of its
task in the view, else nobody's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agentstream.client import new_task
from agentstream.events import TASK_SUBMITTED
from agentstream.gateway.dlq import SUMMARY_FIELDS, summary, tenant_of
from agentstream.serde import SchemaSet

SCHEMAS = SchemaSet.load()


class FakeGateway:
    """What tenant_of reads of a Gateway: the schemas and the view's tasks."""

    def __init__(self, views: dict[str, dict[str, Any]]) -> None:
        self.config = SimpleNamespace(schemas=SCHEMAS)
        self._views = views

    def task(self, task_id: str) -> dict[str, Any] | None:
        return self._views.get(task_id)


def letter(value: bytes | None, task_id: str | None) -> dict[str, Any]:
    return {"value": value, "task_id": task_id}


def test_the_event_held_names_the_tenant_before_the_view_does() -> None:
    task = new_task("hello", "s-1", "acme", task_id="t-1")
    gateway = FakeGateway({"t-1": {"tenant_id": "globex"}})
    assert tenant_of(gateway, letter(SCHEMAS.encode(TASK_SUBMITTED, task), "t-1")) == "acme"  # type: ignore[arg-type]


def test_an_undecodable_event_takes_its_tasks_tenant_from_the_view() -> None:
    gateway = FakeGateway({"t-2": {"tenant_id": "globex"}})
    assert tenant_of(gateway, letter(b"\x00garbage", "t-2")) == "globex"  # type: ignore[arg-type]


def test_a_letter_naming_no_tenant_either_way_is_nobodys() -> None:
    gateway = FakeGateway({})
    assert tenant_of(gateway, letter(b"\x00garbage", "t-unknown")) is None  # type: ignore[arg-type]
    assert tenant_of(gateway, letter(None, None)) is None  # type: ignore[arg-type]


def test_a_summary_leaves_out_the_bytes_and_the_stack() -> None:
    full = {name: name for name in SUMMARY_FIELDS} | {"value": b"x", "key": b"k", "error_stack": "Traceback"}
    assert summary(full) == {name: name for name in SUMMARY_FIELDS}
