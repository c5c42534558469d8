"""An app folder outside the package runs on the broker: examples/document_review's
topology, its tools.py (imported by the specialist at start-up because the topology
names it) and its prompt file, with a model that calls the app's tools (an
OpenAI-compatible HTTP server, through the official SDK)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from agentstream.client import new_task
from agentstream.clients import admin_config
from agentstream.topology import load_topology
from agentstream.topology_admin import apply
from tests.unit.test_providers_openai import LoopbackServer, Reply, completion

from .cli import cli_env, run
from .gateway_harness import GatewayProcess, TenantsFile
from .harness import REPO
from .model_server import openai_env
from .test_durable import DurableStack

APP = REPO / "examples" / "document_review"
WORKERS = {"router": ["router"], "contracts": ["specialist", "--type", "contracts"], "supervisor": ["supervisor"]}


def _answer(request: dict[str, Any]) -> Reply:
    """Call find_clause first; once its result is in, answer by quoting it."""
    messages = request["json"]["messages"]
    if messages[-1]["role"] == "tool":
        return Reply(body=completion({"content": f"Quoted from the file: {messages[-1]['content']}"}))
    call = {"id": "call_1", "type": "function",
            "function": {"name": "find_clause", "arguments": json.dumps({"document_id": "MSA-2041", "clause": "termination"})}}
    return Reply(body=completion({"content": None, "tool_calls": [call]}, finish="tool_calls"))


def test_the_document_review_app_runs_from_its_folder_with_its_own_tools_and_prompt(bootstrap: str, tmp_path: Path) -> None:
    with LoopbackServer(_answer).running() as server:
        stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=APP / "topology.yaml", env=openai_env(server))
        task = new_task("How can either side end the Northwind agreement?", "review-1", "legal-ops", requested_agent="contracts")
        try:
            stack.start_all(WORKERS)
            stack.submit([task])
            got = stack.results({task["task_id"]}, timeout=90)[task["task_id"]]
        finally:
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    assert len(got) == 1 and got[0]["status"] == "COMPLETED", got
    assert got[0]["agents"] == ["contracts"]
    # The app's tool ran in the worker and read the app's data file.
    assert "90 days' written notice" in (got[0]["output"] or ""), got[0]["output"]
    first = server.requests[0]["json"]
    assert first["messages"][0] == {"role": "system", "content": (APP / "prompts" / "contracts.md").read_text(encoding="utf-8")}
    assert sorted(t["function"]["name"] for t in first["tools"]) == ["find_clause", "list_documents", "word_count"]


def test_the_document_review_demo_routes_its_tickets_by_the_apps_rules(bootstrap: str, tmp_path: Path) -> None:
    """``agentstream demo --app examples/document_review`` on the test broker: the app's sample
    tickets name no agent, so the router's rules from the app's topology route them, and its
    scripted model calls the app's tools. AGENTSTREAM_PREFIX renames the topics of the demo and
    of its workers alike (the demo once kept the file's prefix while its workers took the
    variable's, and no ticket got a result)."""
    env = cli_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, AGENTSTREAM_PREFIX=f"docs{uuid.uuid4().hex[:8]}")
    done = run("demo", "--app", str(APP), "--state-dir", str(tmp_path), env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3/3 tickets got a result; every route as expected" in done.stdout, done.stdout[-3000:]
    assert "contracts:list_documents" in done.stdout and "contracts:word_count" in done.stdout, done.stdout[-3000:]


def test_the_gateway_serves_an_app_without_approval_topics(bootstrap: str, tmp_path: Path) -> None:
    """document_review declares no approvals topics: its gateway starts (the deploy files
    render one for every app), and lists no approvals rather than failing on them."""
    prefix = f"docs{uuid.uuid4().hex[:8]}"
    apply(AdminClient(admin_config(bootstrap)), load_topology(APP, prefix=prefix))
    tenants = TenantsFile.write(tmp_path / "tenants.yaml", {"legal-ops": {}})
    env = cli_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, AGENTSTREAM_PREFIX=prefix, AGENTSTREAM_TOPOLOGY=str(APP),
                  AGENTSTREAM_STATE_DIR=str(tmp_path / "gateway"))
    gateway = GatewayProcess(env, tenants.path)  # ready: /readyz answered 200
    try:
        with gateway.client() as http:
            listed = http.get("/v1/approvals", headers=tenants.headers("legal-ops", "operator"))
            accepted = http.post("/v1/tasks", json={"input": "Quote the termination clause of MSA-2041"},
                                 headers=tenants.headers("legal-ops"))
    finally:
        code = gateway.stop()
    assert (listed.status_code, listed.json()) == (200, [])
    assert accepted.status_code == 202, accepted.text
    assert code == 0, gateway.process.tail()
