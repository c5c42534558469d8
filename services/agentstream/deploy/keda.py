"""A KEDA ScaledObject per consumer group: scale on the lag of the group's input topic."""

from __future__ import annotations

from typing import Any

from agentstream.deploy.k8s import KAFKA_BOOTSTRAP, NAMESPACE, labels
from agentstream.deploy.workers import Worker


def scaled_object(worker: Worker) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": worker.name, "namespace": NAMESPACE, "labels": labels(worker)},
        "spec": {
            "scaleTargetRef": {"name": worker.name},
            "minReplicaCount": worker.min_replicas,
            # At most one replica per partition: a member beyond that is given none.
            "maxReplicaCount": min(worker.max_replicas, worker.partitions),
            "pollingInterval": 15,
            # Scaling in moves partitions and restores state: wait for lag to stay low a while.
            "cooldownPeriod": 300,
            "triggers": [{
                "type": "kafka",
                "metadata": {
                    "bootstrapServers": KAFKA_BOOTSTRAP,
                    "consumerGroup": worker.group,
                    "topic": worker.input_topic,
                    "lagThreshold": str(worker.lag_threshold),
                    "offsetResetPolicy": "earliest",  # what the workers' consumers do
                },
            }],
        },
    }
