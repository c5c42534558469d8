"""Kubernetes core objects: the namespace, the topology ConfigMap, and per agent type a
Deployment (probes, resources, a grace period that covers the drain) and a PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from agentstream.deploy import tenants
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
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": UID, "fsGroup": UID}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}


def labels(worker: Worker) -> dict[str, str]:
    return component_labels(worker.name)


def component_labels(name: str) -> dict[str, str]:
    """The labels of one deployed component (a worker, the gateway, the rollout watcher)."""
    return {"app.kubernetes.io/name": "agentstream", "app.kubernetes.io/component": name}


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}


def topology_configmap(topology_text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": TOPOLOGY_CONFIGMAP, "namespace": NAMESPACE},
            "data": {TOPOLOGY_KEY: topology_text}}


def deployment(worker: Worker, image: str, app_path: str) -> dict[str, Any]:
    # No `replicas`: the ScaledObject owns the count (keda.py); applying a count here again
    # would undo its scaling on every `kubectl apply`. One pod at a time: each start is a
    # rebalance and a restore.
    return deployment_of(worker.name, _pod(worker, image, app_path), ONE_POD_AT_A_TIME,
                         annotations=scrape_annotations(DEPLOY_METRICS_PORT))


ONE_POD_AT_A_TIME = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def deployment_of(name: str, pod: dict[str, Any], strategy: dict[str, Any], *,
                  annotations: dict[str, str] | None = None, replicas: int | None = None) -> dict[str, Any]:
    """A Deployment of the component ``name`` running ``pod``; ``replicas`` only where no
    autoscaler owns the count."""
    template: dict[str, Any] = {"labels": component_labels(name)}
    if annotations:
        template["annotations"] = annotations
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    spec |= {"selector": {"matchLabels": component_labels(name)}, "strategy": strategy,
             "template": {"metadata": template, "spec": pod}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": component_labels(name)},
        "spec": spec,
    }


def _pod(worker: Worker, image: str, app_path: str) -> dict[str, Any]:
    # A router reads the gateway's tenants Secret too (deploy/tenants.py: required, read-only).
    reads = worker.tenants
    return {
        "terminationGracePeriodSeconds": drain_seconds(),
        "securityContext": POD_SECURITY,
        "containers": [{
            "name": "worker",
            "image": image,
            "args": worker.command,
            "env": [{"name": BOOTSTRAP_ENV, "value": KAFKA_BOOTSTRAP}, *([tenants.k8s_env()] if reads else [])],
            "ports": [{"name": "metrics", "containerPort": DEPLOY_METRICS_PORT}],
            # Live while a long restore runs (runtime/health.py), so no startup probe is needed.
            **probes("metrics"),
            "resources": RESOURCES,
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": [*app_mounts(app_path), *([tenants.k8s_mount()] if reads else [])],
        }],
        # The stores are caches of their changelogs: a new pod restores them, so no volume claim.
        "volumes": [*app_volumes(), *([tenants.k8s_volume()] if reads else [])],
    }


def probes(port: str) -> dict[str, Any]:
    """Liveness on /healthz and readiness on /readyz of the named container port."""
    return {"livenessProbe": {"httpGet": {"path": HEALTHZ_PATH, "port": port},
                              "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
            "readinessProbe": {"httpGet": {"path": READYZ_PATH, "port": port},
                               "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 2}}


def app_mounts(app_path: str) -> list[dict[str, Any]]:
    """The state directory and /tmp (the root file system is read-only) and the topology."""
    return [
        {"name": "state", "mountPath": STATE_ROOT},
        {"name": "tmp", "mountPath": "/tmp"},
        # Over the image's copy of the file only: the app's tools and prompts beside it stay.
        {"name": "topology", "mountPath": image_paths(app_path)["topology"], "subPath": TOPOLOGY_KEY,
         "readOnly": True},
    ]


def app_volumes() -> list[dict[str, Any]]:
    return [
        {"name": "state", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "topology", "configMap": {"name": TOPOLOGY_CONFIGMAP}},
    ]


def scrape_annotations(port: int) -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": METRICS_PATH}


def disruption_budget(worker: Worker) -> dict[str, Any]:
    # One pod of a group down at a time during node drains: each leaving member moves its
    # partitions, and several at once would stall the whole group behind restores.
    return one_down_at_a_time(worker.name)


def one_down_at_a_time(name: str) -> dict[str, Any]:
    """A PodDisruptionBudget letting node drains take one pod of ``name`` at a time."""
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": component_labels(name)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": component_labels(name)}},
    }
