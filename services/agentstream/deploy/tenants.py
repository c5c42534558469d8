"""The tenants file in the deploy files: one file, read by the gateway and by every router.

The gateway authenticates callers and limits them with it; the router enforces the same
daily budgets and caps of running tasks on tasks produced straight to Kafka
(router/tenant_guard.py). A deployment renders tenancy when its topology declares the
``audit`` topic, the topic the router's refusals go to: without it the router cannot
enforce tenancy, and refuses to start when given a tenants file.

Where tenancy is rendered the file is required, as the gateway's already is: the k8s Secret
is not ``optional`` and the compose secret's file must exist. A platform team expects a
limit to fail closed: were the Secret optional, a deleted or misnamed Secret would start a
router without the file, so with no tenant limits at all, and nothing but a log line would
say so. Required, the pod waits (``secret "agentstream-tenants" not found``) until the Secret
exists, and a router given a missing file stops with the file's name and the fix.
"""

from __future__ import annotations

from typing import Any

from agentstream.settings import TENANTS_ENV
from agentstream.tenancy.audit import AUDIT_TOPIC
from agentstream.topology import Topology

TENANTS_FILE = "tenants.yaml"  # its name in the Secret, the compose secret and the container
VOLUME = "tenants"  # the pod's volume of the Secret

# Kubernetes: `kubectl -n agentstream create secret generic agentstream-tenants --from-file=tenants.yaml`
# (add the RS256 public key file the tenants file names to the same Secret: they share a folder).
K8S_SECRET = "agentstream-tenants"
K8S_DIR = "/etc/agentstream/tenants"

# Compose: a file you write (never committed: .gitignore), mounted read-only at /run/secrets/<target>.
COMPOSE_SECRET = "tenants"
COMPOSE_HOST_FILE = "./deploy/tenants.yaml"


def renders_tenancy(topology: Topology) -> bool:
    """Whether the deploy files give the router the tenants file: the topology has the
    audit topic the router's tenancy needs (router/tenant_guard.py)."""
    return AUDIT_TOPIC in topology.topics


def k8s_env() -> dict[str, str]:
    return {"name": TENANTS_ENV, "value": f"{K8S_DIR}/{TENANTS_FILE}"}


def k8s_mount() -> dict[str, Any]:
    return {"name": VOLUME, "mountPath": K8S_DIR, "readOnly": True}


def k8s_volume() -> dict[str, Any]:
    # Not optional (see the module's docstring): the pod does not start without the Secret.
    return {"name": VOLUME, "secret": {"secretName": K8S_SECRET}}


def compose_secrets() -> dict[str, Any]:
    """The project's top-level ``secrets``."""
    return {COMPOSE_SECRET: {"file": COMPOSE_HOST_FILE}}


def compose_service(service: dict[str, Any]) -> dict[str, Any]:
    """``service`` reading the tenants file: a secret, not a bind mount, so compose mounts it
    read-only; compose refuses to create the container while the file is missing."""
    return {**service,
            "environment": {**service["environment"], TENANTS_ENV: f"/run/secrets/{TENANTS_FILE}"},
            "secrets": [{"source": COMPOSE_SECRET, "target": TENANTS_FILE}]}
