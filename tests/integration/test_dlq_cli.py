"""`agentstream dlq list | show | replay | purge` as a subprocess against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from agentstream.broker import BOOTSTRAP_ENV
from agentstream.clients import admin_config, producer_config
from agentstream.events import TASK_SUBMITTED
from agentstream.retry import headers as h
from agentstream.retry.classify import ErrorClass, ValidationFailed
from agentstream.retry.dead_letter import build_dead_letter, dead_letter_message
from agentstream.runtime.lag import read_topic
from agentstream.serde import NotAvroError, SchemaSet
from agentstream.settings import PREFIX_ENV
from agentstream.topology import Topology, load_topology
from agentstream.topology_admin import apply
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tests.integration.harness import REPO

GARBAGE = b"\x00\xffnot avro at all\x01" * 3

Record = tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]


def _error(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _read(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Record]:
    """Every record of ``topic`` to its true end, with headers."""
    return [(r.key, r.value, r.partition, r.headers) for r in read_topic(bootstrap, topic, timeout)]


class Dlq:
    """Runs the CLI against one topology prefix."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.env = {**os.environ, BOOTSTRAP_ENV: bootstrap, PREFIX_ENV: prefix, "PYTHONUNBUFFERED": "1"}

    def __call__(self, *args: str, stdin: str = "", expect: int = 0) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "agentstream", "dlq", *args],
            input=stdin, capture_output=True, text=True, env=self.env, cwd=REPO, timeout=120,
        )
        command = " ".join(args)
        assert done.returncode == expect, f"dlq {command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def ids(self, *args: str) -> list[str]:
        lines = self("list", *args).splitlines()
        return [line.split()[0] for line in lines[1:-1]] if len(lines) > 2 else []


@pytest.fixture(scope="module")
def world(bootstrap: str) -> dict[str, Any]:
    """A fresh topology with three dead letters (one written twice, as a redelivery would)."""
    prefix = f"dlq{uuid.uuid4().hex[:8]}"
    topology: Topology = load_topology(prefix=prefix)
    apply(AdminClient(admin_config(bootstrap)), topology)
    schemas = SchemaSet.load()
    tasks, billing = topology.topic("tasks"), topology.specialist_topic("billing")
    task = {
        "task_id": f"task-{prefix}", "session_id": f"sess-{prefix}", "tenant_id": "acme", "input": "Refund order 42",
        "submitted_at": 1_700_000_000_000, "requested_agent": None, "metadata": {}, "budget_usd": None,
    }
    submitted = schemas.encode(TASK_SUBMITTED, task)
    common = {"group": f"{prefix}.router", "first_failure_ms": None, "schemas": schemas}
    invalid = build_dead_letter(
        key=task["session_id"].encode(), value=submitted, headers=[("trace-id", b"t-1")], topic=tasks, partition=3,
        offset=41, stage="router", error=_error(ValidationFailed("input is too long")),
        error_class=ErrorClass.PERMANENT, attempts=1, **common,
    )
    poison = build_dead_letter(
        key=b"sess-poison", value=GARBAGE, headers=None, topic=tasks, partition=1, offset=7, stage="router",
        error=_error(NotAvroError("not single-object Avro")), error_class=ErrorClass.PERMANENT, attempts=1, **common,
    )
    # Failed in the last retry tier: its headers name the original source, which wins.
    tier_headers = [("trace-id", b"t-3")] + h.encode_headers(
        {h.ATTEMPT: 4, h.ORIGINAL_TOPIC: billing, h.ORIGINAL_PARTITION: 2, h.ORIGINAL_OFFSET: 5, h.DUE_MS: 1}
    )
    timed_out = build_dead_letter(
        key=b"sess-slow", value=b"billing event bytes", headers=tier_headers, topic=f"{billing}.retry-3", partition=2,
        offset=0, stage="billing", error=_error(TimeoutError("model call took 120 s")),
        error_class=ErrorClass.TRANSIENT, attempts=4, **{**common, "group": f"{prefix}.specialist.billing"},
    )
    producer = Producer(producer_config(bootstrap))
    for letter in (invalid, poison, timed_out, timed_out):
        key, value, headers = dead_letter_message(letter, schemas)
        producer.produce(topology.topic("dlq"), value, key, headers=headers)
    assert producer.flush(30) == 0
    return {
        "dlq": Dlq(bootstrap, prefix), "bootstrap": bootstrap, "topology": topology, "task": task,
        "submitted": submitted, "letters": (invalid, poison, timed_out),
    }


def test_list_shows_a_table_and_filters(world: dict[str, Any]) -> None:
    dlq, (invalid, poison, timed_out) = world["dlq"], world["letters"]
    out = dlq("list")
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["ID", "DEAD-LETTERED", "(UTC)", "STAGE", "CLASS"]
    assert lines[-1] == f"3 dead letter(s) in {world['topology'].topic('dlq')}"  # the redelivered copy listed once
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert set(rows) == {invalid["id"], poison["id"], timed_out["id"]}
    task = world["task"]
    assert rows[invalid["id"]][3:] == ["router", "PERMANENT", "ValidationFailed", task["task_id"], task["session_id"], "1"]
    assert rows[poison["id"]][3:] == ["router", "PERMANENT", "NotAvroError", "-", "sess-poison", "1"]
    assert rows[timed_out["id"]][3:] == ["billing", "TRANSIENT", "TimeoutError", "-", "sess-slow", "4"]
    assert timed_out["id"] == f"{world['topology'].specialist_topic('billing')}-2-5"
    assert dlq.ids("--stage", "billing") == [timed_out["id"]]
    assert sorted(dlq.ids("--error", "permanent")) == sorted([invalid["id"], poison["id"]])
    assert dlq.ids("--error", "NotAvroError") == [poison["id"]]
    assert len(dlq.ids("--since", "1h")) == 3
    assert "No dead letters" in dlq("list", "--since", "2999-01-01T00:00:00Z")


def test_show_decodes_what_it_can(world: dict[str, Any]) -> None:
    dlq, (invalid, poison, _) = world["dlq"], world["letters"]
    shown = dlq("show", invalid["id"])
    assert f"id:             {invalid['id']}" in shown
    assert f"source:         {world['topology'].topic('tasks')}[3]@41" in shown
    assert "error:          PERMANENT agentstream.retry.classify.ValidationFailed" in shown
    assert "message:        input is too long" in shown
    assert "decoded as TaskSubmitted" in shown and '"input": "Refund order 42"' in shown
    assert "trace-id: 't-1'" in shown and 'raise exc' in shown  # headers and the stack
    raw = dlq("show", poison["id"])
    assert "not decodable (NotAvroError): hex 00 ff 6e 6f 74" in raw
    assert "No dead letter 'nope'" in dlq("show", "nope", expect=2)


def test_replay_reinjects_the_original_bytes_with_the_marker(world: dict[str, Any]) -> None:
    dlq, topology, (invalid, _, timed_out) = world["dlq"], world["topology"], world["letters"]
    tasks, billing = topology.topic("tasks"), topology.specialist_topic("billing")
    assert f"replayed {invalid['id']} -> {tasks}[3]" in dlq("replay", invalid["id"])
    [(key, value, partition, headers)] = _read(world["bootstrap"], tasks)
    assert (key, value, partition) == (world["task"]["session_id"].encode(), world["submitted"], 3)
    assert headers == [("trace-id", b"t-1"), (h.ATTEMPT, b"0"), (h.REPLAY, invalid["id"].encode())]

    assert f"replayed {timed_out['id']} -> {billing}[2]" in dlq("replay", "--all-matching", "--stage", "billing")
    [(key, value, partition, headers)] = _read(world["bootstrap"], billing)
    assert (key, value, partition) == (b"sess-slow", b"billing event bytes", 2)
    # The stale retry context (attempt 4, due time, original-*) is gone.
    assert headers == [("trace-id", b"t-3"), (h.ATTEMPT, b"0"), (h.REPLAY, timed_out["id"].encode())]

    assert "Say what to replay: a dead letter id" in dlq("replay", expect=2)
    assert "Give a dead letter id or --all-matching" in dlq("replay", invalid["id"], "--all-matching", expect=2)


def test_replay_never_creates_the_source_topic(bootstrap: str) -> None:
    """A dead letter whose source topic is gone: replay says to apply the topology, and
    producing does not make the broker create the topic with its default partitions."""
    prefix = f"dlq{uuid.uuid4().hex[:8]}"
    topology = load_topology(prefix=prefix)
    admin = AdminClient(admin_config(bootstrap))
    apply(admin, topology)
    gone = f"{prefix}.gone.v1"
    letter = build_dead_letter(
        key=b"s-1", value=b"event", headers=None, topic=gone, partition=0, offset=0, stage="router",
        error=_error(ValueError("bad")), error_class=ErrorClass.PERMANENT, attempts=1, group=f"{prefix}.router",
        first_failure_ms=None, schemas=SchemaSet.load(),
    )
    key, value, headers = dead_letter_message(letter, SchemaSet.load())
    producer = Producer(producer_config(bootstrap))
    producer.produce(topology.topic("dlq"), value, key, headers=headers)
    assert producer.flush(30) == 0

    out = Dlq(bootstrap, prefix)("replay", letter["id"], expect=2)
    assert out.strip() == (f"agentstream: Topic {gone} does not exist on {bootstrap}; create the topology's topics "
                           "with `agentstream topology apply`.")
    assert gone not in admin.list_topics(timeout=30).topics


def test_purge_asks_and_then_hides(world: dict[str, Any]) -> None:
    # Last in the file: it empties the module's DLQ.
    dlq, (invalid, poison, timed_out) = world["dlq"], world["letters"]
    out = dlq("purge", "--stage", "router", stdin="n\n", expect=1)
    assert "Purge 2 dead letter(s)" in out and "Not purged." in out
    assert len(dlq.ids()) == 3
    assert "2 dead letter(s) purged" in dlq("purge", "--stage", "router", stdin="y\n")
    assert dlq.ids() == [timed_out["id"]]
    assert "or it was purged" in dlq("show", poison["id"], expect=2)
    assert "1 dead letter(s) purged" in dlq("purge", "--yes")
    assert "No dead letters" in dlq("list") and "nothing to purge" in dlq("purge", "--yes")
    # The markers are tombstones keyed by id, next to the dead letters they hide.
    records = _read(world["bootstrap"], world["topology"].topic("dlq"))
    markers = sorted(k.decode() for k, v, _, _ in records if v is None)
    assert markers == sorted([invalid["id"], poison["id"], timed_out["id"]])
