"""The committed deploy files: equal to a fresh rendering of the default app, and valid for
the tools that consume them, checked offline (kubernetes-validate's bundled schemas, the
compose spec bundled with check-jsonschema, and our schemas for KEDA and Strimzi)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from agentstream.apache_kafka import kafka_version
from agentstream.deploy import RenderInput, drift, read_input, render, write
from agentstream.settings import TENANTS_ENV
from agentstream.topology import DEFAULT_PATH, parse_topology

from .cli import cli_env, run
from .harness import REPO

BIN = Path(sys.executable).parent
RENDER = "agentstream deploy render compose k8s"
SCHEMAS = REPO / "deploy" / "schemas"


def test_committed_deploy_files_equal_the_rendering_of_the_default_app() -> None:
    source = read_input(DEFAULT_PATH, REPO, kafka_version())
    differing = [path for target in ("compose", "k8s") for path in drift(target, render(target, source), REPO)]
    assert differing == [], (
        f"{differing} differ from the rendering of {source.app_path}: run `{RENDER}` at the repository root "
        "and commit the result"
    )


def _kubernetes_validate(files: list[Path]) -> None:
    done = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", *map(str, files)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_core_kinds_pass_kubernetes_validate_strictly() -> None:
    files = [REPO / "k8s" / "namespace.yaml", REPO / "k8s" / "topology-configmap.yaml", REPO / "k8s" / "gateway.yaml",
             *sorted((REPO / "k8s" / "workers").glob("*.yaml"))]
    assert len(files) >= 6
    _kubernetes_validate(files)


def test_a_canary_rendering_passes_the_same_checks(tmp_path: Path) -> None:
    """The rollout watcher and a candidate's worker and scaler, rendered only with a canary
    (the default app has none), pass kubernetes-validate and our KEDA schema too."""
    source = read_input(DEFAULT_PATH, REPO, kafka_version())
    raw = yaml.safe_load(source.topology_text)
    raw["agents"]["billing"]["candidate"] = {"mode": "canary", "weight": 0.2}
    text = yaml.safe_dump(raw, sort_keys=False)
    canary = RenderInput(parse_topology(text, DEFAULT_PATH), text, source.app_path, source.kafka_version)
    write("k8s", render("k8s", canary), tmp_path)
    _kubernetes_validate([tmp_path / "k8s" / "rollout-watch.yaml",
                          tmp_path / "k8s" / "workers" / "specialist-billing-candidate.yaml"])
    assert _validate("keda-scaledobject.schema.json", "keda/specialist-billing-candidate.yaml", tmp_path / "k8s") == 1


def _validate(schema_file: str, pattern: str, root: Path = REPO / "k8s") -> int:
    schema = json.loads((SCHEMAS / schema_file).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    count = 0
    for path in sorted(root.glob(pattern)):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
            assert errors == [], f"{path.relative_to(root)}: {errors}"
            count += 1
    return count


def test_keda_and_strimzi_resources_match_our_schemas() -> None:
    assert _validate("keda-scaledobject.schema.json", "keda/*.yaml") == 5
    assert _validate("strimzi-kafkatopic.schema.json", "strimzi/*.yaml") > 30


def test_our_schemas_refuse_a_misspelt_field() -> None:
    """The schemas are no rubber stamp: an unknown key and a lag threshold as a number fail."""
    schema = json.loads((SCHEMAS / "keda-scaledobject.schema.json").read_text(encoding="utf-8"))
    doc = yaml.safe_load((REPO / "k8s" / "keda" / "router.yaml").read_text(encoding="utf-8"))
    doc["spec"]["maxReplicas"] = 3
    doc["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 100
    messages = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    assert any("maxReplicas" in m for m in messages) and any("100 is not of type 'string'" in m for m in messages)


def test_docker_compose_matches_the_compose_spec() -> None:
    done = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                           str(REPO / "docker-compose.yml")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _deployment_pod(path: Path) -> dict[str, Any]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return next(doc for doc in docs if doc["kind"] == "Deployment")["spec"]["template"]["spec"]


def _tenants(pod: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The pod's AGENTSTREAM_TENANTS, the mount holding that file and the mount's volume."""
    container = pod["containers"][0]
    value = {e["name"]: e.get("value") for e in container["env"]}[TENANTS_ENV]
    mount = next(m for m in container["volumeMounts"] if value.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return value, mount, volume


def test_the_committed_router_reads_the_gateways_tenants_file() -> None:
    """In a deployed system the router enforces the tenant limits of the gateway's own file:
    the same Secret, read-only and required, and the same compose secret."""
    router = _tenants(_deployment_pod(REPO / "k8s" / "workers" / "router.yaml"))
    assert router == _tenants(_deployment_pod(REPO / "k8s" / "gateway.yaml"))
    _, mount, volume = router
    assert mount["readOnly"] is True and "optional" not in volume["secret"] and volume["secret"]["secretName"]
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    for name in ("router", "gateway"):
        assert services[name]["secrets"] == [{"source": "tenants", "target": "tenants.yaml"}], name
        assert services[name]["environment"][TENANTS_ENV] == "/run/secrets/tenants.yaml", name


def test_render_writes_an_app_folder_and_check_reports_drift(tmp_path: Path) -> None:
    app = tmp_path / "myapp"
    shutil.copytree(DEFAULT_PATH.parent, app)
    env = cli_env(AGENTSTREAM_TOPOLOGY=str(app / "topology.yaml"))
    done = run("deploy", "render", "compose", "k8s", "--out", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    assert "COPY myapp/ myapp/" in (tmp_path / "Dockerfile").read_text(encoding="utf-8")
    # Not a checkout: the image cannot be built here, which the command says (and still renders).
    assert f"build context {tmp_path}, which lacks pyproject.toml, README.md, services, schemas" in done.stderr
    assert run("deploy", "render", "k8s", "--check", "--out", str(tmp_path), env=env).returncode == 0

    topology = yaml.safe_load((app / "topology.yaml").read_text(encoding="utf-8"))
    del topology["agents"]["account"]
    topology["agents"]["router"]["routing"]["rules"].pop("account")
    topology["agents"]["router"]["routing"]["descriptions"].pop("account")
    (app / "topology.yaml").write_text(yaml.safe_dump(topology), encoding="utf-8")
    stale = run("deploy", "render", "k8s", "--check", "--out", str(tmp_path), env=env)
    assert stale.returncode == 1
    assert "k8s/workers/specialist-account.yaml" in stale.stderr and "deploy render k8s" in stale.stderr
    assert run("deploy", "render", "k8s", "--out", str(tmp_path), env=env).returncode == 0
    assert not (tmp_path / "k8s" / "workers" / "specialist-account.yaml").exists()


def test_render_refuses_a_topology_outside_the_build_context(tmp_path: Path) -> None:
    done = run("deploy", "render", "compose", "--out", str(tmp_path), env=cli_env())
    assert done.returncode == 2
    assert "outside" in done.stderr and "build context" in done.stderr
