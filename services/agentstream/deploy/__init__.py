"""Deploy files generated from the topology: Dockerfile, docker-compose.yml with Prometheus
and Grafana, and Kubernetes manifests (Deployments, KEDA ScaledObjects, Strimzi KafkaTopics)."""

from agentstream.deploy.render import TARGETS, RenderInput, compose_files, drift, k8s_files, read_input, render, write

__all__ = ["TARGETS", "RenderInput", "compose_files", "drift", "k8s_files", "read_input", "render", "write"]
