"""The HTTP gateway (``agentstream gateway``) on Kubernetes: a Deployment, its Service, a
PodDisruptionBudget and a HorizontalPodAutoscaler; the names compose shares.

The gateway is stateless apart from its view, a RocksDB copy of the task topics that each
replica rebuilds from the topics on start (gateway/view_reader.py): an emptyDir and no
volume claim, any number of replicas behind the Service, so CPU decides their count.
Its tenants file (API key hashes, JWT settings) comes from a Secret the operator creates,
the one the routers read (deploy/tenants.py); nothing secret is rendered.
"""

from __future__ import annotations

from typing import Any

from agentstream.deploy import tenants
from agentstream.deploy.k8s import (
    CONTAINER_SECURITY,
    KAFKA_BOOTSTRAP,
    NAMESPACE,
    ONE_POD_AT_A_TIME,
    POD_SECURITY,
    RESOURCES,
    app_mounts,
    app_volumes,
    component_labels,
    deployment_of,
    one_down_at_a_time,
    probes,
    scrape_annotations,
)
from agentstream.settings import BOOTSTRAP_ENV, DEFAULT_GATEWAY_PORT

GATEWAY = "gateway"  # the compose service, Deployment, Service and scrape target
# Optional: the variables the tenants file names (hs256_secret_env), e.g. AGENTSTREAM_JWT_SECRET.
ENV_SECRET = "agentstream-gateway-env"
# After SIGTERM uvicorn stops accepting and gives open SSE streams gateway/server.py's
# GRACEFUL_SHUTDOWN_S (10 s; a test keeps it below this), then the producer flushes (≤ 10 s).
GRACE_S = 30
MIN_REPLICAS = 2  # one replica down (a drain, a rollout) still leaves one answering
MAX_REPLICAS = 6
CPU_TARGET_PERCENT = 70


def gateway_objects(image: str, app_path: str) -> list[dict[str, Any]]:
    # Node drains take one pod at a time: with MIN_REPLICAS the Service always has one answering.
    return [deployment(image, app_path), service(), one_down_at_a_time(GATEWAY), autoscaler()]


def deployment(image: str, app_path: str) -> dict[str, Any]:
    # No `replicas`: the HorizontalPodAutoscaler owns the count (as KEDA does the workers').
    # A new pod takes traffic once its view has caught up (/readyz): the old one serves until then.
    return deployment_of(GATEWAY, _pod(image, app_path), ONE_POD_AT_A_TIME,
                         annotations=scrape_annotations(DEFAULT_GATEWAY_PORT))


def _pod(image: str, app_path: str) -> dict[str, Any]:
    return {
        "terminationGracePeriodSeconds": GRACE_S,
        "securityContext": POD_SECURITY,
        "containers": [{
            "name": GATEWAY,
            "image": image,
            "args": [GATEWAY],
            "env": [{"name": BOOTSTRAP_ENV, "value": KAFKA_BOOTSTRAP}, tenants.k8s_env()],
            "envFrom": [{"secretRef": {"name": ENV_SECRET, "optional": True}}],
            "ports": [{"name": "http", "containerPort": DEFAULT_GATEWAY_PORT}],
            # /healthz: the view reader runs (also while catching up); /readyz: the view is current.
            **probes("http"),
            "resources": RESOURCES,
            "securityContext": CONTAINER_SECURITY,
            # The view's RocksDB goes to the state emptyDir: rebuilt by every new pod.
            "volumeMounts": [*app_mounts(app_path), tenants.k8s_mount()],
        }],
        "volumes": [*app_volumes(), tenants.k8s_volume()],
    }


def service() -> dict[str, Any]:
    labels = component_labels(GATEWAY)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": GATEWAY, "namespace": NAMESPACE, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": DEFAULT_GATEWAY_PORT, "targetPort": "http"}]},
    }


def autoscaler() -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": GATEWAY, "namespace": NAMESPACE, "labels": component_labels(GATEWAY)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": GATEWAY},
            "minReplicas": MIN_REPLICAS,
            "maxReplicas": MAX_REPLICAS,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT}}}],
            # Scaling in cuts the leaving pod's SSE streams (their clients resume on another) and
            # a pod added back first rebuilds its view: wait for the load to stay low a while.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }
