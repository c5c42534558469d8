"""docker-compose.yml: Apache Kafka (KRaft), the topics, every worker, the gateway (profile
``gateway``), the rollout watcher when there is a canary, Prometheus and Grafana."""

from __future__ import annotations

from typing import Any

from agentstream.deploy import gateway, tenants, watcher
from agentstream.deploy.grafana import GRAFANA_IMAGE, grafana_mounts
from agentstream.deploy.image import IMAGE
from agentstream.deploy.prometheus import PROMETHEUS_FILE, PROMETHEUS_IMAGE
from agentstream.deploy.workers import Worker, drain_seconds
from agentstream.settings import BOOTSTRAP_ENV, DEFAULT_GATEWAY_PORT, HEALTHZ_PATH

KAFKA_ADDRESS = "kafka:9092"
# The gateway starts with `docker compose --profile gateway up`. Both it and the router read
# the tenants file you write (deploy/tenants.py), so where the topology has tenancy even a
# plain `up` needs ./deploy/tenants.yaml: the router's limits fail closed.
GATEWAY_PROFILE = "gateway"


def kafka_image(version: str) -> str:
    """The official Apache Kafka image (KRaft) of ``version``: the one the tests run on."""
    return f"apache/kafka:{version}"


def compose(workers: list[Worker], kafka_version: str, *, watch: bool) -> dict[str, Any]:
    """``watch``: the topology has a canary, so the rollout watcher runs too."""
    services: dict[str, Any] = {"kafka": _kafka(kafka_version), "topology": _topology_apply()}
    for worker in workers:
        services[worker.name] = _worker(worker)
    services[gateway.GATEWAY] = _gateway()
    if watch:
        services[watcher.WATCH_SERVICE] = _watcher()
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
    return {"name": "agentstream", "services": services,
            "secrets": tenants.compose_secrets()}


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
    service = _agentstream(worker.command)
    if worker.tenants:
        service = tenants.compose_service(service)
    return {**service, **_after_topology(), "stop_grace_period": f"{drain_seconds()}s"}


def _after_topology() -> dict[str, Any]:
    return {"depends_on": {"topology": {"condition": "service_completed_successfully"}}, "restart": "unless-stopped"}


def _gateway() -> dict[str, Any]:
    service = tenants.compose_service(_agentstream([gateway.GATEWAY]))
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{DEFAULT_GATEWAY_PORT}{HEALTHZ_PATH}', timeout=4)"
    return {
        **service,
        "profiles": [GATEWAY_PROFILE],
        "ports": [f"{DEFAULT_GATEWAY_PORT}:{DEFAULT_GATEWAY_PORT}"],
        **_after_topology(),
        # The image's check asks a worker's port; the gateway answers on its own (urlopen raises on a 503).
        "healthcheck": {"test": ["CMD", "python", "-c", probe], "interval": "15s", "timeout": "5s", "retries": 3,
                        "start_period": "60s"},
        "stop_grace_period": f"{gateway.GRACE_S}s",
    }


def _watcher() -> dict[str, Any]:
    # It serves no port, so the image's worker check does not apply; a crash restarts it.
    return {**_agentstream(watcher.COMMAND), **_after_topology(), "healthcheck": {"disable": True}}
