"""The backbone end to end: tasks flow router → specialists → supervisor over a real broker.

Tasks are produced with plain confluent-kafka and fastavro from the published schema
files (as an upstream system would), not through agentstream's own serde.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition

from agentstream.stack import Stack
from tests import support_desk

from .harness import REPO, latest_by_key, read_all, wait_for

SCHEMAS = REPO / "schemas"


def _schema(name: str) -> Any:
    return fastavro.parse_schema(json.loads((SCHEMAS / f"{name}.avsc").read_text()))


def _fingerprint(schema: Any) -> bytes:
    """The 8 fingerprint bytes as framed on the wire (fastavro's hex is already in wire order)."""
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    return bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


def _single_object(name: str, record: dict[str, Any]) -> bytes:
    schema = _schema(name)
    fingerprint = _fingerprint(schema)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    return b"\xc3\x01" + fingerprint + body.getvalue()


def _decode(name: str, data: bytes) -> dict[str, Any]:
    schema = _schema(name)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == _fingerprint(schema)
    return fastavro.schemaless_reader(io.BytesIO(data[10:]), schema)  # type: ignore[return-value]


def _task(text: str, session: str, **extra: Any) -> dict[str, Any]:
    return {
        "task_id": f"t-{uuid.uuid4().hex[:12]}",
        "session_id": session,
        "tenant_id": "it",
        "input": text,
        "submitted_at": int(time.time() * 1000),
        "requested_agent": None,
        "metadata": {},
        "budget_usd": None,
        **extra,
    }


class Upstream:
    """An upstream system: produces raw bytes to the tasks topic, reads the results topic."""

    def __init__(self, stack: Stack) -> None:
        self.tasks_topic = stack.topology.topic("tasks")
        self.producer = Producer(
            {"bootstrap.servers": stack.bootstrap, "enable.idempotence": True, "partitioner": "murmur2_random"}
        )
        self.results = Consumer(
            {"bootstrap.servers": stack.bootstrap, "group.id": f"it-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
        topic = stack.topology.topic("results")
        partitions = stack.topology.topic_spec("results").partitions
        # Results of tests that ran earlier are skipped by task id, so reading from 0 is fine.
        self.results.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.seen: dict[str, list[dict[str, Any]]] = {}

    def send(self, task: dict[str, Any]) -> None:
        self.send_raw(_single_object("TaskSubmitted", task), task["session_id"])

    def send_raw(self, value: bytes, session: str) -> None:
        self.producer.produce(self.tasks_topic, value, session.encode())
        assert self.producer.flush(30) == 0

    def wait_results(self, task_ids: set[str], timeout: float = 120.0) -> dict[str, list[dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while not task_ids <= set(self.seen):
            if time.monotonic() > deadline:
                missing = task_ids - set(self.seen)
                raise AssertionError(f"{len(missing)} tasks got no result within {timeout:.0f} s: {sorted(missing)[:5]}")
            msg = self.results.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            result = _decode("TaskResult", msg.value())
            self.seen.setdefault(result["task_id"], []).append(result)
        return {task_id: self.seen[task_id] for task_id in task_ids}

    def close(self) -> None:
        self.results.close()


def test_fifty_tasks_get_exactly_fifty_results_with_the_right_routes(pipeline: Stack) -> None:
    upstream = Upstream(pipeline)
    tickets = support_desk.tickets()
    expected: dict[str, list[str]] = {}
    for i in range(50):
        ticket = tickets[i % len(tickets)]
        task = _task(ticket["input"], f"s50-{i % 17}-{uuid.uuid4().hex[:6]}", requested_agent=ticket["requested_agent"])
        expected[task["task_id"]] = sorted(ticket["expected_route"])
        upstream.send(task)
    results = upstream.wait_results(set(expected))
    for task_id, got in results.items():
        assert len(got) == 1, f"{task_id} got {len(got)} results"
        assert got[0]["status"] == "COMPLETED", got[0]
        assert sorted(got[0]["agents"]) == expected[task_id]
    mixed = [got[0] for task_id, got in results.items() if len(expected[task_id]) > 1]
    assert mixed and all({"billing", "technical"} <= set(r["agents"]) for r in mixed)
    assert all("Billing:" in r["output"] and "Technical:" in r["output"] for r in mixed)
    upstream.close()
    # Each specialist tombstones a finished run's head and steps after its result (one write
    # of them all, the head last): only the done markers stay in its compacted changelog.
    def only_done_markers() -> bool:
        for agent in {a for agents in expected.values() for a in agents}:
            state = latest_by_key(read_all(pipeline.bootstrap, pipeline.topology.changelog_topic(agent, "checkpoints")))
            mine = [key for key in state if key.split("/")[1] in expected]
            if any(not key.startswith("d/") for key in mine) or len(mine) != sum(agent in a for a in expected.values()):
                return False
        return True

    wait_for(only_done_markers, 60, "one done marker per run and nothing else of them in the checkpoints changelogs")


def test_same_task_id_twice_gives_one_result(pipeline: Stack) -> None:
    upstream = Upstream(pipeline)
    session = f"dup-{uuid.uuid4().hex[:8]}"
    task = _task("Refund the duplicate charge on INV-1002 please", session)
    upstream.send(task)
    upstream.send(task)
    # A later task of the same session travels the same partitions behind the duplicate:
    # once its result is in, the duplicate has been through every stage.
    sentinel = _task("The app crashes on login", session)
    upstream.send(sentinel)
    results = upstream.wait_results({task["task_id"], sentinel["task_id"]})
    assert len(results[task["task_id"]]) == 1
    assert results[task["task_id"]][0]["status"] == "COMPLETED"
    upstream.close()


def test_bad_inputs_are_rejected_or_skipped_and_the_partition_moves_on(pipeline: Stack) -> None:
    upstream = Upstream(pipeline)
    session = f"bad-{uuid.uuid4().hex[:8]}"
    oversize = _task("x" * 100_000, session)
    upstream.send(oversize)
    upstream.send_raw(b"this is not avro at all", session)
    unknown = bytearray(_single_object("TaskSubmitted", _task("hello", session)))
    unknown[2:10] = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    upstream.send_raw(bytes(unknown), session)
    good = _task("My invoice INV-1001 looks wrong", session)
    upstream.send(good)
    results = upstream.wait_results({oversize["task_id"], good["task_id"]})
    rejected = results[oversize["task_id"]][0]
    assert rejected["status"] == "REJECTED"
    assert rejected["error"]["code"] == "INVALID_TASK" and "over the limit" in rejected["error"]["message"]
    assert results[good["task_id"]][0]["status"] == "COMPLETED"
    log = (Path(pipeline.log_dir or ".") / "router.log").read_text()
    tasks_topic = pipeline.topology.topic("tasks")
    skipped = [line for line in log.splitlines() if f"{tasks_topic}[" in line and "]@" in line and "Error" in line]
    assert any("NotAvroError" in line for line in skipped), log[-2000:]
    assert any("UnknownFingerprintError" in line for line in skipped), log[-2000:]
    upstream.close()


def test_workers_are_all_alive(pipeline: Stack) -> None:
    assert pipeline.dead_workers() == {}, {n: (pipeline.log_dir / f"{n}.log").read_text()[-1500:] for n in pipeline.dead_workers()}  # type: ignore[operator]


