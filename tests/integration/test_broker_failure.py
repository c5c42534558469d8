"""Losing a broker of a 3-node Apache Kafka cluster under load loses no task.

The cluster (three combined broker+controller JVMs) runs the pipeline's topics with
replication factor 3 and ``min.insync.replicas=2``; producers are idempotent with
``acks=all``. While tasks are being submitted, one node gets SIGKILL: in one test the
broker that leads the most partitions of the pipeline's topics, in the other the active
KRaft controller. Every task must end with exactly one result, and the cluster must heal
(every partition back to 3 in-sync replicas) once the node is started again.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigEntry, ConfigResource, ResourceType

from agentstream.apache_kafka import KafkaCluster
from agentstream.clients import admin_config, producer_config
from agentstream.settings import FLUSH_TIMEOUT_ENV, HEALTH_STALL_ENV
from agentstream.topology import DEFAULT_PATH as DEFAULT_TOPOLOGY_PATH
from tests import support_desk

from .harness import wait_for
from .test_durable import SCHEMAS, DurableStack, _tasks

pytestmark = [pytest.mark.kafka_only, pytest.mark.slow]

TASKS = 240
# The loss of the active controller once held the workers' writes up for 26 s here (three
# nodes and the pipeline on two loaded cores; CI, session 29): at the default 30 s a worker
# stopped, by design, for an orchestrator this test does not play.
FAILOVER_PATIENCE = {FLUSH_TIMEOUT_ENV: "90", HEALTH_STALL_ENV: "90"}
RATE = 16.0  # tasks per second: the kill lands in the middle of a 15 s submission


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with KafkaCluster(tmp_path_factory.mktemp("kafka3"), nodes=3, heap_mb=384) as started:
        yield started


def _replicated_topology(directory: Path) -> Path:
    text = DEFAULT_TOPOLOGY_PATH.read_text(encoding="utf-8")
    path = support_desk.copy_app(directory)
    path.write_text(re.sub(r"(?m)^replication_factor: *\d+", "replication_factor: 3", text), encoding="utf-8")
    return path


def _pipeline_partitions(admin: AdminClient, prefix: str) -> dict[tuple[str, int], tuple[int, list[int], list[int]]]:
    """(leader, replicas, in-sync replicas) of every partition of the stack's topics."""
    metadata = admin.list_topics(timeout=10)
    return {(name, p.id): (p.leader, list(p.replicas), list(p.isrs))
            for name, topic in metadata.topics.items() if name.startswith(prefix) for p in topic.partitions.values()}


def _submit_paced(stack: DurableStack, tasks: list[dict[str, object]], rate: float, sent: list[int]) -> None:
    producer = Producer(producer_config(stack.bootstrap))
    began = time.monotonic()
    for i, task in enumerate(tasks):
        producer.produce(stack.topology.topic("tasks"), SCHEMAS.encode("TaskSubmitted", task), str(task["session_id"]))
        producer.poll(0)
        sent[0] = i + 1
        ahead = (i + 1) / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)  # pacing the offered load, not waiting for a condition
    assert producer.flush(120) == 0, "submissions still unacknowledged 120 s after the last one"


@pytest.mark.parametrize("victim", ["partition leader", "active controller"])
def test_sigkill_of_a_broker_under_load_loses_no_task(cluster: KafkaCluster, tmp_path: Path, victim: str) -> None:
    admin = AdminClient(admin_config(cluster.bootstrap))
    stack = DurableStack(cluster.bootstrap, tmp_path, latency="0.05-0.3", topology_path=_replicated_topology(tmp_path),
                         env=FAILOVER_PATIENCE)
    expected = {spec.name for spec in stack.topology.all_topics()}
    # Topics just created reach the brokers' metadata a moment after CreateTopics returns.
    wait_for(lambda: {t for t, _ in _pipeline_partitions(admin, stack.prefix)} >= expected, 30, "the topics in metadata")
    assert all(len(replicas) == 3 for _, replicas, _ in _pipeline_partitions(admin, stack.prefix).values())
    tasks_topic = ConfigResource(ResourceType.TOPIC, stack.topology.topic("tasks"))
    configs: dict[str, ConfigEntry] = {}

    def read_configs() -> bool:
        configs.update(admin.describe_configs([tasks_topic])[tasks_topic].result())
        return bool(configs)

    # The broker asked may learn of the topic after the one that answered the metadata
    # (UNKNOWN_TOPIC_OR_PART meanwhile: wait_for retries on it; seen once in session 37's CI).
    wait_for(read_configs, 30, "the tasks topic's configs")
    assert configs["min.insync.replicas"].value == "2"

    for name, command in {"router": ["router"], "billing": ["specialist", "--type", "billing"],
                          "supervisor": ["supervisor"]}.items():
        stack.start(name, *command)
    tasks = _tasks(TASKS, sessions=80)
    sent = [0]
    submitter = threading.Thread(target=_submit_paced, args=(stack, tasks, RATE, sent), daemon=True)
    try:
        for worker in stack.workers.values():
            worker.wait_for_line(r": assigned .*\[\d\]", 90)
        submitter.start()
        wait_for(lambda: sent[0] >= TASKS // 3, 60, "a third of the tasks submitted")
        if victim == "active controller":
            node_id = cluster.active_controller()
        else:
            leaders = Counter(leader for leader, _, _ in _pipeline_partitions(admin, stack.prefix).values())
            node_id = leaders.most_common(1)[0][0]
        cluster.kill(node_id)
        killed_at = time.monotonic()
        submitter.join(180)
        assert not submitter.is_alive(), "the submitter did not finish"
        try:
            results = stack.results({str(t["task_id"]) for t in tasks}, timeout=240)
        except AssertionError as exc:
            logs = "\n".join(f"--- {w.name}\n{w.tail(25)}" for w in stack.workers.values())
            raise AssertionError(f"{exc}\n{logs}") from None
        all_done = time.monotonic() - killed_at
        cluster.restart(node_id)
        healed = wait_for(lambda: all(len(isr) == 3 for _, _, isr in _pipeline_partitions(admin, stack.prefix).values()),
                          180, "every partition back to 3 in-sync replicas")
    finally:
        codes = stack.stop_all()
    duplicates = {task: len(got) for task, got in results.items() if len(got) != 1}
    refused = sum(len(w.matching("offsets not committed")) for w in stack.workers.values())
    statuses = Counter(got[0]["status"] for got in results.values())
    print(f"\nSIGKILL of the {victim} (node {node_id}) under load: {TASKS} tasks, 0 lost, "
          f"{sum(duplicates.values()) - len(duplicates)} duplicate results, statuses {dict(statuses)}; "
          f"all results {all_done:.1f} s after the kill; healed {healed:.1f} s after the restart; "
          f"{refused} offset commits refused by the group during the failover")
    assert not duplicates, f"tasks with more than one result: {duplicates}"
    assert statuses == {"COMPLETED": TASKS}, statuses
    assert all(code == 0 for code in codes.values()), codes
