"""The workers a topology runs, as every deploy file sees them: one per agent type."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from agentstream.deploy.tenants import renders_tenancy
from agentstream.settings import WorkerSettings
from agentstream.topology import Topology

_MARGIN_S = 5.0


def drain_seconds() -> int:
    """How long a worker may take to stop cleanly after SIGTERM, so an orchestrator's grace
    period covers it: running loops get shutdown_grace_s to reach a checkpoint, those of a
    revoked partition as long again while the consumer closes, then the final flush."""
    grace = WorkerSettings.model_fields["shutdown_grace_s"].default
    final_flush = WorkerSettings.model_fields["flush_timeout_s"].default  # the final checkpoint may wait this long
    return math.ceil(2 * grace + final_flush + _MARGIN_S)


@dataclass(frozen=True, slots=True)
class Worker:
    agent: str  # the agent type's name in the topology
    kind: str  # router, specialist or supervisor
    group: str  # the consumer group
    input_topic: str
    partitions: int
    lag_threshold: int
    min_replicas: int
    max_replicas: int
    # Reads the tenants file (deploy/tenants.py): the router, where the topology has tenancy.
    tenants: bool = False

    @property
    def command(self) -> list[str]:
        """Arguments of the image's ``agentstream`` entrypoint."""
        if self.kind == "specialist":
            return ["worker", "specialist", "--type", self.agent]
        return ["worker", self.kind]

    @property
    def name(self) -> str:
        """A DNS-1123 label: the compose service, Deployment and Service name."""
        base = self.kind if self.kind == self.agent else f"{self.kind}-{self.agent}"
        return dns_label(base)


def workers(topology: Topology) -> list[Worker]:
    """Router first, then specialists, then supervisors: the order of the topology's pipeline."""
    order = {"router": 0, "specialist": 1, "supervisor": 2}
    found = []
    # topology.workers: a candidate's worker is a Deployment with its own group and KEDA scaler.
    for name, agent in sorted(topology.workers.items(), key=lambda item: order[item[1].kind]):
        found.append(Worker(
            agent=name, kind=agent.kind, group=topology.group(name), input_topic=topology.topic(agent.input),
            partitions=topology.topic_spec(agent.input).partitions, lag_threshold=agent.scaling.lag_threshold,
            min_replicas=agent.scaling.min_replicas, max_replicas=topology.max_replicas(name),
            tenants=agent.kind == "router" and renders_tenancy(topology),
        ))
    return found


def dns_label(name: str) -> str:
    """``name`` as Kubernetes and compose accept it: lower case, a-z 0-9 and -."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return label[:63].rstrip("-")
