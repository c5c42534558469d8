"""Strimzi KafkaTopic resources: every topic of the topology (inputs, retry tiers, changelogs)
with its partitions, replication and config, owned by the Strimzi topic operator."""

from __future__ import annotations

from typing import Any

from agentstream.deploy.k8s import KAFKA_CLUSTER, NAMESPACE
from agentstream.topology import TopicSpec

_K8S_NAME_LIMIT = 253


def kafka_topic(spec: TopicSpec) -> dict[str, Any]:
    name = resource_name(spec.name)
    body: dict[str, Any] = {"partitions": spec.partitions, "replicas": spec.replication, "config": dict(spec.config)}
    if name != spec.name:  # the resource name had to change: tell Strimzi the real one
        body = {"topicName": spec.name, **body}
    return {
        "apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"strimzi.io/cluster": KAFKA_CLUSTER}},
        "spec": body,
    }


def resource_name(topic: str) -> str:
    """A Kubernetes resource name for ``topic``: lower case, ``_`` as ``-`` (Kafka allows both,
    a DNS subdomain neither)."""
    return topic.lower().replace("_", "-")[:_K8S_NAME_LIMIT]
