"""``agentstream deploy render compose|k8s``: every deploy file, as text, from one topology.

Rendering is pure (``compose_files``/``k8s_files`` map a relative path to its text); reading
the topology and writing the files are the two functions at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstream.deploy import compose, gateway, grafana, image, k8s, keda, prometheus, strimzi, watcher
from agentstream.deploy.files import to_json, to_yaml
from agentstream.deploy.workers import workers
from agentstream.errors import ConfigurationError
from agentstream.topology import Topology, parse_topology

TARGETS = ("compose", "k8s")
K8S_DIR = "k8s"
# Directories whose every file is rendered: a file there that is no longer rendered (a
# specialist removed from the topology) is deleted when rendering again.
OWNED_DIRS = {"compose": ("deploy/grafana",), "k8s": (K8S_DIR,)}


@dataclass(frozen=True)
class RenderInput:
    topology: Topology
    topology_text: str  # the file as written, comments kept, for the ConfigMap
    app_path: str  # the topology file relative to the build context, e.g. topology/topology.yaml
    kafka_version: str


def render(target: str, source: RenderInput) -> dict[str, str]:
    if target == "compose":
        return compose_files(source)
    if target == "k8s":
        return k8s_files(source)
    raise ConfigurationError(f"Unknown deploy target {target!r}; render one of {', '.join(TARGETS)}.")


def compose_files(source: RenderInput) -> dict[str, str]:
    found = workers(source.topology)

    def as_yaml(document: dict[str, Any]) -> str:
        return to_yaml([document], "compose", source.app_path)

    return {
        "Dockerfile": image.dockerfile(source.app_path, source.app_path),
        ".dockerignore": image.dockerignore(source.app_path),
        "docker-compose.yml": as_yaml(compose.compose(found, source.kafka_version,
                                                      watch=watcher.needs_watcher(source.topology))),
        prometheus.PROMETHEUS_FILE: as_yaml(prometheus.prometheus_config(found)),
        grafana.DATASOURCE_FILE: as_yaml(grafana.datasource("http://prometheus:9090")),
        grafana.PROVIDER_FILE: as_yaml(grafana.dashboard_provider()),
        grafana.DASHBOARD_FILE: to_json(grafana.dashboard()),
    }


def k8s_files(source: RenderInput) -> dict[str, str]:
    def as_yaml(documents: list[dict[str, Any]]) -> str:
        return to_yaml(documents, "k8s", source.app_path)

    files = {
        f"{K8S_DIR}/namespace.yaml": as_yaml([k8s.namespace()]),
        f"{K8S_DIR}/topology-configmap.yaml": as_yaml([k8s.topology_configmap(source.topology_text)]),
        f"{K8S_DIR}/strimzi/topics.yaml": as_yaml([strimzi.kafka_topic(t) for t in source.topology.all_topics()]),
    }
    for worker in workers(source.topology):
        files[f"{K8S_DIR}/workers/{worker.name}.yaml"] = as_yaml(
            [k8s.deployment(worker, image.IMAGE, source.app_path), k8s.disruption_budget(worker)])
        files[f"{K8S_DIR}/keda/{worker.name}.yaml"] = as_yaml([keda.scaled_object(worker)])
    files[f"{K8S_DIR}/gateway.yaml"] = as_yaml(gateway.gateway_objects(image.IMAGE, source.app_path))
    if watcher.needs_watcher(source.topology):
        files[f"{K8S_DIR}/rollout-watch.yaml"] = as_yaml([watcher.deployment(image.IMAGE, source.app_path)])
    return files


def read_input(topology_file: Path, context: Path, kafka_version: str) -> RenderInput:
    """The topology at ``topology_file``, which the image copies from the build ``context``."""
    text = topology_file.read_text(encoding="utf-8")
    try:
        app_path = topology_file.resolve().relative_to(context.resolve()).as_posix()
    except ValueError:
        raise ConfigurationError(
            f"The topology file {topology_file} is outside {context}, the Docker build context the Dockerfile "
            "copies it from; render into a folder that holds it (--out) or move the app there."
        ) from None
    return RenderInput(parse_topology(text, topology_file), text, app_path, kafka_version)


def write(target: str, files: dict[str, str], out: Path) -> list[Path]:
    """Write ``files`` under ``out`` and delete files of the owned directories no longer rendered."""
    for owned in OWNED_DIRS[target]:
        for stale in (out / owned).rglob("*") if (out / owned).is_dir() else ():
            if stale.is_file() and stale.relative_to(out).as_posix() not in files:
                stale.unlink()
    written = []
    for relative, text in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def drift(target: str, files: dict[str, str], out: Path) -> list[str]:
    """Paths under ``out`` that differ from the rendering, are missing, or are no longer rendered."""
    found = [rel for rel, text in files.items()
             if not (out / rel).is_file() or (out / rel).read_text(encoding="utf-8") != text]
    for owned in OWNED_DIRS[target]:
        if (out / owned).is_dir():
            found += [p.relative_to(out).as_posix() for p in sorted((out / owned).rglob("*"))
                      if p.is_file() and p.relative_to(out).as_posix() not in files]
    return sorted(found)
