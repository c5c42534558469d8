"""Kubernetes core objects: the namespace, the topology ConfigMap, and per agent type a
Deployment (probes, resources, a grace period that covers the drain) and a PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from agentstream.deploy.image import STATE_ROOT, UID, image_paths
from agentstream.deploy.workers import Worker, drain_seconds
from agentstream.settings import BOOTSTRAP_ENV, DEPLOY_METRICS_PORT, HEALTHZ_PATH, METRICS_PATH, READYZ_PATH

NAMESPACE = "agentstream"
KAFKA_CLUSTER = "agentstream"  # the Strimzi Kafka resource the topics and workers use
KAFKA_BOOTSTRAP = f"{KAFKA_CLUSTER}-kafka-bootstrap.{NAMESPACE}.svc:9092"  # Strimzi's bootstrap Service
TOPOLOGY_CONFIGMAP = "agentstream-topology"
TOPOLOGY_KEY = "topology.yaml"
# Per replica. Memory: RocksDB block caches and librdkafka queues; CPU is mostly waiting on
# models. Measure with the soak bench (bench/RESULTS.md) before changing them.
RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def labels(worker: Worker) -> dict[str, str]:
    return {"app.kubernetes.io/name": "agentstream", "app.kubernetes.io/component": worker.name}


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}


def topology_configmap(topology_text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": TOPOLOGY_CONFIGMAP, "namespace": NAMESPACE},
            "data": {TOPOLOGY_KEY: topology_text}}


def deployment(worker: Worker, image: str, app_path: str) -> dict[str, Any]:
    # No `replicas`: the ScaledObject owns the count (keda.py); applying a count here again
    # would undo its scaling on every `kubectl apply`.
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": worker.name, "namespace": NAMESPACE, "labels": labels(worker)},
        "spec": {
            "selector": {"matchLabels": labels(worker)},
            # One pod at a time: each start is a rebalance and a restore.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(worker), "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(DEPLOY_METRICS_PORT),
                    "prometheus.io/path": METRICS_PATH}},
                "spec": _pod(worker, image, app_path),
            },
        },
    }


def _pod(worker: Worker, image: str, app_path: str) -> dict[str, Any]:
    return {
        "terminationGracePeriodSeconds": drain_seconds(),
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "fsGroup": UID},
        "containers": [{
            "name": "worker",
            "image": image,
            "args": worker.command,
            "env": [{"name": BOOTSTRAP_ENV, "value": KAFKA_BOOTSTRAP}],
            "ports": [{"name": "metrics", "containerPort": DEPLOY_METRICS_PORT}],
            # Live while a long restore runs (runtime/health.py), so no startup probe is needed.
            "livenessProbe": {"httpGet": {"path": HEALTHZ_PATH, "port": "metrics"},
                              "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
            "readinessProbe": {"httpGet": {"path": READYZ_PATH, "port": "metrics"},
                               "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 2},
            "resources": RESOURCES,
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [
                {"name": "state", "mountPath": STATE_ROOT},
                {"name": "tmp", "mountPath": "/tmp"},
                # Over the image's copy of the file only: the app's tools and prompts beside it stay.
                {"name": "topology", "mountPath": image_paths(app_path)["topology"], "subPath": TOPOLOGY_KEY,
                 "readOnly": True},
            ],
        }],
        # The stores are caches of their changelogs: a new pod restores them, so no volume claim.
        "volumes": [
            {"name": "state", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "topology", "configMap": {"name": TOPOLOGY_CONFIGMAP}},
        ],
    }


def disruption_budget(worker: Worker) -> dict[str, Any]:
    # One pod of a group down at a time during node drains: each leaving member moves its
    # partitions, and several at once would stall the whole group behind restores.
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": worker.name, "namespace": NAMESPACE, "labels": labels(worker)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(worker)}},
    }
