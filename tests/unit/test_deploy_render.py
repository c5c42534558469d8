"""Rendering the deploy files from a topology: pure functions, checked on their output."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agentstream import metrics
from agentstream.gateway import metrics as gateway_metrics
from agentstream.deploy import RenderInput, compose_files, k8s_files
from agentstream.deploy.grafana import DASHBOARD_FILE, PANELS
from agentstream.deploy.image import CHECKOUT_PATHS, dockerfile
from agentstream.deploy.workers import drain_seconds
from agentstream.errors import ConfigurationError
from agentstream.settings import DEFAULT_GATEWAY_PORT, DEPLOY_METRICS_PORT, TENANTS_ENV, WorkerSettings
from agentstream.telemetry.lag_collector import LAG_METRIC
from agentstream.topology import DEFAULT_PATH, parse_topology

APP_PATH = "apps/desk/topology.yaml"


def _source(edit: Any = None) -> RenderInput:
    raw = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    if edit is not None:
        edit(raw)
    text = yaml.safe_dump(raw, sort_keys=False)
    return RenderInput(parse_topology(text, DEFAULT_PATH), text, APP_PATH, "4.1.1")


def _with_refunds(raw: dict[str, Any]) -> None:
    billing = dict(raw["agents"]["billing"])
    raw["agents"]["refunds"] = {**billing, "group": "specialist.refunds", "input": "specialist.refunds",
                                "scaling": {"lag_threshold": 7, "max_replicas": 3}}


def _docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_a_specialist_added_in_yaml_gets_a_service_a_deployment_a_scaler_and_topics() -> None:
    before_compose, before_k8s = compose_files(_source()), k8s_files(_source())
    compose, k8s = compose_files(_source(_with_refunds)), k8s_files(_source(_with_refunds))

    services = _docs(compose["docker-compose.yml"])[0]["services"]
    assert services["specialist-refunds"]["command"] == ["worker", "specialist", "--type", "refunds"]
    assert "specialist-refunds" not in _docs(before_compose["docker-compose.yml"])[0]["services"]
    assert set(k8s) - set(before_k8s) == {"k8s/workers/specialist-refunds.yaml", "k8s/keda/specialist-refunds.yaml"}
    topics = {d["metadata"]["name"] for d in _docs(k8s["k8s/strimzi/topics.yaml"])}
    assert {"agents.specialist.refunds.v1", "agents.specialist.refunds.v1.retry-1",
            "agents.specialist.refunds.checkpoints.changelog"} <= topics
    scaler = _docs(k8s["k8s/keda/specialist-refunds.yaml"])[0]
    assert scaler["spec"]["maxReplicaCount"] == 3
    trigger = scaler["spec"]["triggers"][0]["metadata"]
    assert trigger == {**trigger, "lagThreshold": "7", "topic": "agents.specialist.refunds.v1",
                       "consumerGroup": "agents.specialist.refunds"}


def test_every_topic_of_the_topology_is_a_kafka_topic_with_its_config() -> None:
    source = _source()
    rendered = {d["metadata"]["name"]: d["spec"] for d in _docs(k8s_files(source)["k8s/strimzi/topics.yaml"])}
    for spec in source.topology.all_topics():
        assert rendered[spec.name] == {"partitions": spec.partitions, "replicas": spec.replication,
                                       "config": dict(spec.config)}
    assert len(rendered) == len(source.topology.all_topics())


def test_scalers_default_to_the_partition_count_and_the_default_lag_threshold() -> None:
    source = _source()
    for agent in source.topology.agents:
        name = agent if agent in ("router", "supervisor") else f"specialist-{agent}"
        spec = _docs(k8s_files(source)[f"k8s/keda/{name}.yaml"])[0]["spec"]
        assert spec["maxReplicaCount"] == source.topology.topic_spec(source.topology.agent(agent).input).partitions
        assert spec["triggers"][0]["metadata"]["lagThreshold"] == "100"


def test_max_replicas_above_the_partitions_is_refused_naming_the_limit() -> None:
    def too_many(raw: dict[str, Any]) -> None:
        raw["agents"]["billing"]["scaling"] = {"max_replicas": 12}

    with pytest.raises(ConfigurationError, match=r"scaling.max_replicas 12 is above the 6 partitions .* at most 6"):
        _source(too_many)


def test_grace_periods_cover_the_drain() -> None:
    grace = WorkerSettings.model_fields["shutdown_grace_s"].default
    assert drain_seconds() > 2 * grace
    source = _source()
    for doc in _docs(k8s_files(source)["k8s/workers/router.yaml"]):
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            assert pod["terminationGracePeriodSeconds"] == drain_seconds()
            container = pod["containers"][0]
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert {"name": "metrics", "containerPort": DEPLOY_METRICS_PORT} in container["ports"]
    assert _docs(compose_files(source)["docker-compose.yml"])[0]["services"]["router"]["stop_grace_period"] == \
        f"{drain_seconds()}s"


def test_the_dockerfile_is_multi_stage_non_root_with_a_healthcheck_and_copies_the_app() -> None:
    text = compose_files(_source())["Dockerfile"]
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert re.search(r"^USER 10001$", text, re.M)
    assert 'HEALTHCHECK' in text and '"agentstream", "worker", "--check"' in text
    assert "PYTHONUNBUFFERED=1" in text
    assert "COPY apps/desk/ apps/desk/" in text and "AGENTSTREAM_TOPOLOGY=/app/apps/desk/topology.yaml" in text


def test_prometheus_scrapes_every_worker_service_on_the_metrics_port() -> None:
    files = compose_files(_source())
    services = _docs(files["docker-compose.yml"])[0]["services"]
    workers = [name for name, s in services.items() if s.get("command", [None])[0] == "worker"]
    assert workers == ["router", "specialist-billing", "specialist-technical", "specialist-account", "supervisor"]
    jobs = _docs(files["deploy/prometheus.yml"])[0]["scrape_configs"]
    assert [job["dns_sd_configs"] for job in jobs] == [[{"names": workers, "type": "A", "port": DEPLOY_METRICS_PORT}],
                                                      [{"names": ["gateway"], "type": "A", "port": DEFAULT_GATEWAY_PORT}]]


def test_the_dashboard_queries_only_metrics_a_worker_or_the_gateway_serves() -> None:
    registry = CollectorRegistry()
    served = {LAG_METRIC, "up"}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for make in (*metrics.FAMILIES, *gateway_metrics.FAMILIES):
        metric = make()
        registry.register(metric)
        served |= {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}
        registry.unregister(metric)
    dashboard = json.loads(compose_files(_source())[DASHBOARD_FILE])
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b(agentstream_\w+|up)\b", target["expr"])}
    assert queried and queried <= served, f"not served: {queried - served}"
    assert len(dashboard["panels"]) == len(PANELS)


def test_the_topology_configmap_holds_the_file_as_written() -> None:
    source = _source()
    configmap = _docs(k8s_files(source)["k8s/topology-configmap.yaml"])[0]
    assert configmap["data"]["topology.yaml"] == source.topology_text


def _with_candidate(mode: str) -> Any:
    def edit(raw: dict[str, Any]) -> None:
        raw["agents"]["billing"]["candidate"] = {"mode": mode, "weight": 0.1}

    return edit


def _k8s_docs(files: dict[str, str], path: str) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in _docs(files[path])}


def test_the_gateway_gets_probes_a_service_a_budget_an_autoscaler_and_its_tenants_from_a_secret() -> None:
    docs = _k8s_docs(k8s_files(_source()), "k8s/gateway.yaml")
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["gateway"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "http", "containerPort": DEFAULT_GATEWAY_PORT} in container["ports"]
    tenants_env = {e["name"]: e["value"] for e in container["env"]}[TENANTS_ENV]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert tenants_env == f"{mounts['tenants']}/tenants.yaml"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tenants"]["secret"] == {"secretName": "agentstream-tenants"}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}  # the view is rebuilt on start
    assert "replicas" not in docs["Deployment"]["spec"]  # the autoscaler owns the count
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == docs["Service"]["spec"]["selector"]
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(DEFAULT_GATEWAY_PORT)


def test_the_gateway_grace_period_covers_its_sse_shutdown() -> None:
    from agentstream.gateway.server import GRACEFUL_SHUTDOWN_S

    pod = _k8s_docs(k8s_files(_source()), "k8s/gateway.yaml")["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > GRACEFUL_SHUTDOWN_S
    gateway = _docs(compose_files(_source())["docker-compose.yml"])[0]["services"]["gateway"]
    assert gateway["stop_grace_period"] == f"{pod['terminationGracePeriodSeconds']}s"


def test_compose_runs_the_gateway_in_its_profile_with_the_tenants_secret_and_a_port() -> None:
    document = _docs(compose_files(_source())["docker-compose.yml"])[0]
    gateway = document["services"]["gateway"]
    assert gateway["command"] == ["gateway"] and gateway["profiles"] == ["gateway"]
    assert gateway["ports"] == [f"{DEFAULT_GATEWAY_PORT}:{DEFAULT_GATEWAY_PORT}"]
    assert gateway["secrets"] == [{"source": "tenants", "target": "tenants.yaml"}]
    assert gateway["environment"][TENANTS_ENV] == "/run/secrets/tenants.yaml"
    assert document["secrets"] == {"tenants": {"file": "./deploy/tenants.yaml"}}
    assert "/healthz" in gateway["healthcheck"]["test"][-1]
    # Prometheus must not wait for a service a plain `docker compose up` does not start.
    assert "gateway" not in document["services"]["prometheus"]["depends_on"]
    assert "rollout-watch" not in document["services"]  # no canary in the default app


def _tenants_of_pod(pod: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, dict[str, Any] | None]:
    """A pod's AGENTSTREAM_TENANTS value, the mount of its volume and the volume."""
    container = pod["containers"][0]
    value = {e["name"]: e["value"] for e in container["env"]}.get(TENANTS_ENV)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next((m for m in container["volumeMounts"] if m["name"] in volumes and "secret" in volumes[m["name"]]), None)
    return value, mount, None if mount is None else volumes[mount["name"]]


def _pod_of(files: dict[str, str], path: str) -> dict[str, Any]:
    return _k8s_docs(files, path)["Deployment"]["spec"]["template"]["spec"]


def test_the_router_reads_the_gateways_tenants_secret_required_and_read_only() -> None:
    files = k8s_files(_source())
    router = _tenants_of_pod(_pod_of(files, "k8s/workers/router.yaml"))
    assert router == _tenants_of_pod(_pod_of(files, "k8s/gateway.yaml"))
    value, mount, volume = router
    assert mount is not None and volume is not None
    assert mount["readOnly"] is True
    assert value == f"{mount['mountPath']}/tenants.yaml"
    # Required, not optional: a missing Secret holds the pod back instead of starting a router without limits.
    assert volume["secret"] == {"secretName": "agentstream-tenants"}
    for path in files:
        if path.startswith("k8s/workers/") and path != "k8s/workers/router.yaml":
            assert _tenants_of_pod(_pod_of(files, path)) == (None, None, None), path


def test_compose_gives_the_router_the_gateways_tenants_secret() -> None:
    document = _docs(compose_files(_source())["docker-compose.yml"])[0]
    services = document["services"]
    router, gateway = services["router"], services["gateway"]
    assert router["secrets"] == gateway["secrets"] == [{"source": "tenants", "target": "tenants.yaml"}]
    assert router["environment"][TENANTS_ENV] == gateway["environment"][TENANTS_ENV] == "/run/secrets/tenants.yaml"
    assert "profiles" not in router  # always on: a plain `up` needs ./deploy/tenants.yaml (README)
    assert document["secrets"] == {"tenants": {"file": "./deploy/tenants.yaml"}}
    others = [name for name in services if name.startswith(("specialist-", "supervisor"))]
    assert others and all("secrets" not in services[name] and TENANTS_ENV not in services[name]["environment"]
                          for name in others)


def _without_audit(raw: dict[str, Any]) -> None:
    del raw["topics"]["audit"]


def test_without_an_audit_topic_the_router_gets_no_tenants_file() -> None:
    # The router refuses a tenants file when the topology cannot take its audit records
    # (router/tenant_guard.py), so such a topology renders a router without tenancy.
    pod = _pod_of(k8s_files(_source(_without_audit)), "k8s/workers/router.yaml")
    assert _tenants_of_pod(pod) == (None, None, None)
    router = _docs(compose_files(_source(_without_audit))["docker-compose.yml"])[0]["services"]["router"]
    assert "secrets" not in router and TENANTS_ENV not in router["environment"]


def test_the_image_has_the_gateway_extra_and_exposes_its_port() -> None:
    text = compose_files(_source())["Dockerfile"]
    assert re.search(r'pip wheel .*"\.\[[a-z,]*\bgateway\b[a-z,]*\]"', text)
    assert re.search(rf"^EXPOSE {DEPLOY_METRICS_PORT} {DEFAULT_GATEWAY_PORT}$", text, re.M)


def test_a_canary_brings_its_worker_its_scaler_and_the_rollout_watcher() -> None:
    plain = k8s_files(_source())
    canary = k8s_files(_source(_with_candidate("canary")))
    assert set(canary) - set(plain) == {"k8s/workers/specialist-billing-candidate.yaml",
                                        "k8s/keda/specialist-billing-candidate.yaml", "k8s/rollout-watch.yaml"}
    trigger = _docs(canary["k8s/keda/specialist-billing-candidate.yaml"])[0]["spec"]["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == "agents.specialist.billing.candidate"
    assert trigger["topic"] == "agents.specialist.billing.v1.candidate"
    worker = _k8s_docs(canary, "k8s/workers/specialist-billing-candidate.yaml")["Deployment"]
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == \
        ["worker", "specialist", "--type", "billing.candidate"]
    watch = _docs(canary["k8s/rollout-watch.yaml"])[0]
    assert watch["spec"]["replicas"] == 1 and watch["spec"]["strategy"] == {"type": "Recreate"}
    assert watch["spec"]["template"]["spec"]["containers"][0]["args"] == ["rollout", "watch"]
    services = _docs(compose_files(_source(_with_candidate("canary")))["docker-compose.yml"])[0]["services"]
    assert services["rollout-watch"]["command"] == ["rollout", "watch"]
    assert services["specialist-billing-candidate"]["command"] == ["worker", "specialist", "--type", "billing.candidate"]


def test_a_shadow_brings_its_worker_but_no_watcher() -> None:
    shadow = k8s_files(_source(_with_candidate("shadow")))
    assert "k8s/rollout-watch.yaml" not in shadow
    trigger = _docs(shadow["k8s/keda/specialist-billing-shadow.yaml"])[0]["spec"]["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == "agents.specialist.billing.shadow"
    assert trigger["topic"] == "agents.transcripts.v1"  # a shadow runs a task after the live run's transcript
    assert "rollout-watch" not in _docs(compose_files(_source(_with_candidate("shadow")))["docker-compose.yml"])[0][
        "services"]


def test_the_dockerfile_copies_every_checkout_path_the_render_checks_for() -> None:
    # missing_from_context (what `deploy render compose` points out) and the COPY lines agree.
    copied = " ".join(line for line in dockerfile("app/topology.yaml", "test").splitlines() if line.startswith("COPY "))
    assert all(re.search(rf"\b{re.escape(path)}\b", copied) for path in CHECKOUT_PATHS), copied
