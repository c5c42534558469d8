"""docker-compose.yml: Apache Kafka (KRaft), the topics, every worker, Prometheus and Grafana."""

from __future__ import annotations

from typing import Any

from agentstream.deploy.grafana import GRAFANA_IMAGE, grafana_mounts
from agentstream.deploy.image import IMAGE
from agentstream.deploy.prometheus import PROMETHEUS_FILE, PROMETHEUS_IMAGE
from agentstream.deploy.workers import Worker, drain_seconds
from agentstream.settings import BOOTSTRAP_ENV

KAFKA_ADDRESS = "kafka:9092"


def kafka_image(version: str) -> str:
    """The official Apache Kafka image (KRaft) of ``version``: the one the tests run on."""
    return f"apache/kafka:{version}"


def compose(workers: list[Worker], kafka_version: str) -> dict[str, Any]:
    services: dict[str, Any] = {"kafka": _kafka(kafka_version), "topology": _topology_apply()}
    for worker in workers:
        services[worker.name] = _worker(worker)
    services["prometheus"] = {
        "image": PROMETHEUS_IMAGE,
        "volumes": [f"./{PROMETHEUS_FILE}:/etc/prometheus/prometheus.yml:ro"],
        "ports": ["9090:9090"],
        "depends_on": [w.name for w in workers],
    }
    services["grafana"] = {
        "image": GRAFANA_IMAGE,
        # Anonymous read-only viewers: a local stack; put real sign-in in front of anything shared.
        "environment": {"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer"},
        "volumes": grafana_mounts(),
        "ports": ["3000:3000"],
        "depends_on": ["prometheus"],
    }
    return {"name": "agentstream", "services": services}


def _kafka(version: str) -> dict[str, Any]:
    return {
        "image": kafka_image(version),
        "environment": {
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{KAFKA_ADDRESS}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka:9093",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            # Topics come from `topology apply` only: a typo must not create one with defaults.
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        },
        "healthcheck": {
            "test": ["CMD", "/opt/kafka/bin/kafka-broker-api-versions.sh", "--bootstrap-server", "localhost:9092"],
            "interval": "5s", "timeout": "10s", "retries": 30,
        },
    }


def _agentstream(command: list[str]) -> dict[str, Any]:
    # Every agentstream service names the same build, so the image is built once and shared.
    return {"image": IMAGE, "build": {"context": "."}, "command": command,
            "environment": {BOOTSTRAP_ENV: KAFKA_ADDRESS}}


def _topology_apply() -> dict[str, Any]:
    return {
        **_agentstream(["topology", "apply"]),
        "depends_on": {"kafka": {"condition": "service_healthy"}},
        "healthcheck": {"disable": True},  # a one-shot job: the image's worker probe is not for it
        "restart": "no",
    }


def _worker(worker: Worker) -> dict[str, Any]:
    return {
        **_agentstream(worker.command),
        "depends_on": {"topology": {"condition": "service_completed_successfully"}},
        "restart": "unless-stopped",
        "stop_grace_period": f"{drain_seconds()}s",
    }
