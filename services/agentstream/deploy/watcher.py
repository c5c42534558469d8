"""``agentstream rollout watch`` as deployed: one process judging every canary's rollback
rules (rollout/watch.py says why one), rendered only when the topology declares a canary."""

from __future__ import annotations

from typing import Any

from agentstream.deploy.k8s import (
    CONTAINER_SECURITY,
    KAFKA_BOOTSTRAP,
    POD_SECURITY,
    app_mounts,
    app_volumes,
    deployment_of,
)
from agentstream.rollout.control import canary_types
from agentstream.settings import BOOTSTRAP_ENV
from agentstream.topology import Topology

WATCH_SERVICE = "rollout-watch"  # the compose service and Deployment
COMMAND = ["rollout", "watch"]
# Its window of results (the canaries' types, the last hour by default) is in memory.
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def needs_watcher(topology: Topology) -> bool:
    """A topology with a canary gets the watcher (a shadow sends no traffic to roll back)."""
    return bool(canary_types(topology))


def deployment(image: str, app_path: str) -> dict[str, Any]:
    # One watcher: it sees every result, so two would judge twice and both roll back.
    # Recreate keeps it one during a rollout too; it reads its window again on start.
    return deployment_of(WATCH_SERVICE, _pod(image, app_path), {"type": "Recreate"}, replicas=1)


def _pod(image: str, app_path: str) -> dict[str, Any]:
    # No probes: it serves no port. Should it exit, the Deployment starts it again.
    return {
        "securityContext": POD_SECURITY,
        "containers": [{
            "name": "watcher",
            "image": image,
            "args": COMMAND,
            "env": [{"name": BOOTSTRAP_ENV, "value": KAFKA_BOOTSTRAP}],
            "resources": RESOURCES,
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": app_mounts(app_path),
        }],
        "volumes": app_volumes(),
    }
