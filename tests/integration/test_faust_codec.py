"""faust-streaming apps read and write our events through ``AvroEventCodec`` on the real broker.

Each faust worker is a real process (``apps/faust_consumer.py``, or the example app)
with a unique app id, so its own consumer group. A worker start costs about 5 s here:
~1 s of imports, faust's 1 s wait for tables, then a group join of half the 6 s
session timeout. So one worker serves the tests of the codec, and one the example.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from agentstream.clients import producer_config
from agentstream.serde import SchemaSet
from agentstream.topology import Topology, load_topology

from .harness import REPO, WorkerProcess, create_topics, read_all

pytestmark = pytest.mark.timeout(180)

CONSUMER_APP = REPO / "tests" / "integration" / "apps" / "faust_consumer.py"
EXAMPLE_APP = REPO / "examples" / "faust_results_app.py"
FAUST_CLI = Path(sys.executable).with_name("faust")  # the console script of faust-streaming
T0 = 1_700_000_000_123
WORKER_READY_S = 60.0  # generous: a start takes ~5 s, more on a loaded CI machine
SUBMITTED: dict[str, Any] = {
    "task_id": "faust-task-1",
    "session_id": "faust-session-1",
    "tenant_id": "acme",
    "input": "Sent by faust. Ünïcödé ✓",
    "submitted_at": T0,
    "requested_agent": "billing",
    "metadata": {"channel": "faust"},
    "budget_usd": 0.25,
}


def _result(task_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "session_id": f"session-{task_id}",
        "tenant_id": "acme",
        "status": "COMPLETED",
        "output": f"done: {task_id} ✓",
        "error": None,
        "agents": ["billing"],
        "usage": {"input_tokens": 10, "output_tokens": 20, "cost_usd": 0.001, "llm_calls": 1, "tool_calls": 0},
        "behavior_versions": {"billing": "v1"},
        "completed_at": T0 + 500,
        "submitted_at": None,
        **fields,
    }


def _topology(bootstrap: str) -> Topology:
    """A topology under a unique prefix, with its results and tasks topics created."""
    topology = load_topology(prefix=f"faust{uuid.uuid4().hex[:10]}")
    for logical in ("results", "tasks"):
        spec = topology.topic_spec(logical)
        create_topics(bootstrap, [spec.name], partitions=spec.partitions)
    return topology


def _produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = Producer(producer_config(bootstrap))
    for key, value in records:
        producer.produce(topic, value, key.encode())
    assert producer.flush(30) == 0, "the broker did not acknowledge every record"


def _received(worker: WorkerProcess) -> dict[str, dict[str, Any]]:
    """The RESULT lines the faust worker printed so far, by task_id."""
    lines = (json.loads(line.removeprefix("RESULT ")) for line in worker.matching(r"^RESULT "))
    return {line["value"]["task_id"]: line for line in lines}


def _wait_received(worker: WorkerProcess, task_ids: set[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not task_ids <= _received(worker).keys():
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            missing = sorted(task_ids - _received(worker).keys())
            raise AssertionError(f"the faust worker did not print {missing}:\n{worker.tail()}")
        time.sleep(0.05)
    return _received(worker)


def _stop(worker: WorkerProcess) -> None:
    worker.stop()
    assert worker.proc.returncode == 0, f"the faust worker did not stop cleanly:\n{worker.tail()}"


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet.load()


@pytest.fixture(scope="module")
def codec_worker(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProcess, Topology]]:
    """A faust worker consuming the results topic; at start it sends ``SUBMITTED`` to tasks."""
    topology = _topology(bootstrap)
    app_id = f"{topology.prefix}-codec-test"
    worker = WorkerProcess(
        [
            str(CONSUMER_APP),
            "--bootstrap", bootstrap,
            "--app-id", app_id,
            "--datadir", str(tmp_path_factory.mktemp("faust") / app_id),
            "--results", topology.topic("results"),
            "--tasks", topology.topic("tasks"),
            "--submit", json.dumps(SUBMITTED),
        ],
        name="faust worker",
    )  # fmt: skip
    try:
        yield worker, topology
    finally:
        _stop(worker)


def test_faust_decodes_results_written_by_confluent_kafka_identically(
    codec_worker: tuple[WorkerProcess, Topology], bootstrap: str, schemas: SchemaSet
) -> None:
    worker, topology = codec_worker
    results = [
        _result("faust-ok"),
        _result(
            "faust-failed",
            status="FAILED",
            output=None,
            error={"code": "TOOL_TIMEOUT", "message": "lookup_invoice timed out"},
            agents=["billing", "account"],
            behavior_versions={"billing": "v2", "account": "v1"},
            submitted_at=T0,
        ),
        _result("faust-rejected", status="REJECTED", agents=[], behavior_versions={}),
    ]
    written = {r["task_id"]: (r["session_id"], schemas.encode("TaskResult", r)) for r in results}
    started = time.monotonic()
    _produce(bootstrap, topology.topic("results"), list(written.values()))

    received = _wait_received(worker, set(written), WORKER_READY_S)

    print(f"faust worker printed {len(written)} results {time.monotonic() - started:.1f} s after producing")
    for task_id, (key, data) in written.items():
        line = received[task_id]
        assert line["key"] == key
        assert line["type"] == "TaskResultRecord"  # the topic's value_type, nested records too
        assert line["value"] == schemas.decode_as("TaskResult", data)


def test_a_bad_value_surfaces_our_typed_error_and_the_worker_goes_on(
    codec_worker: tuple[WorkerProcess, Topology], bootstrap: str, schemas: SchemaSet
) -> None:
    worker, topology = codec_worker
    after = _result("faust-after-bad-value")
    key = after["session_id"]  # same key, same partition: the good value comes after the bad one
    bad, good = b"plain text, not Avro", schemas.encode("TaskResult", after)
    _produce(bootstrap, topology.topic("results"), [(key, bad), (key, good)])

    _wait_received(worker, {after["task_id"]}, WORKER_READY_S)

    # faust wraps our error in its ValueDecodeError; the agent crashes, its supervisor
    # restarts it, and the bad record is skipped (faust has no dead-letter topic).
    assert worker.matching(r"agentstream\.serde\.NotAvroError: Cannot decode 20 bytes")


def test_a_task_sent_by_faust_decodes_with_schemaset(
    codec_worker: tuple[WorkerProcess, Topology], bootstrap: str, schemas: SchemaSet
) -> None:
    worker, topology = codec_worker
    sent = worker.wait_for_line(r"^SENT \d+ \d+$", timeout=WORKER_READY_S)
    partition = int(sent.split()[1])

    records = read_all(bootstrap, topology.topic("tasks"))

    assert [(key, p) for key, _, p in records] == [(SUBMITTED["session_id"].encode(), partition)]
    value = records[0][1]
    assert value is not None
    assert schemas.decode_as("TaskSubmitted", value) == SUBMITTED


def test_example_app_prints_results_and_submits_tasks(
    bootstrap: str, schemas: SchemaSet, tmp_path: Path
) -> None:
    topology = _topology(bootstrap)
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AGENTSTREAM_PREFIX": topology.prefix, "FAUST_DATADIR": str(tmp_path)}
    result = _result("example-result", agents=["billing", "technical"])
    _produce(bootstrap, topology.topic("results"), [(result["session_id"], schemas.encode("TaskResult", result))])
    # The documented way: the faust command with -A, from the repository root.
    worker = WorkerProcess(
        [str(FAUST_CLI), "-A", "examples.faust_results_app", "worker", "-l", "info"], name="example worker", env=env
    )
    try:
        worker.wait_for_line(r"result task_id=example-result status=COMPLETED agents=billing,technical", WORKER_READY_S)
    finally:
        _stop(worker)

    # The other documented way, running the file, with its submit command.
    submitted = subprocess.run(
        [sys.executable, str(EXAMPLE_APP), "submit", "Where is my refund?", "--session", "example-session"],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WORKER_READY_S,
    )
    assert submitted.returncode == 0, submitted.stderr
    match = re.search(r"submitted task_id=(\S+) session_id=example-session to (\S+)\[(\d+)\]@\d+", submitted.stdout)
    assert match, submitted.stdout + submitted.stderr
    assert match[2] == topology.topic("tasks")

    records = read_all(bootstrap, topology.topic("tasks"))
    assert [(key, p) for key, _, p in records] == [(b"example-session", int(match[3]))]
    value = records[0][1]
    assert value is not None
    task = schemas.decode_as("TaskSubmitted", value)
    assert (task["task_id"], task["input"], task["tenant_id"]) == (match[1], "Where is my refund?", "demo")

