"""An app folder outside the package runs on the broker: examples/document_review's
topology, its tools.py (imported by the specialist at start-up because the topology
names it) and its prompt file, with a model that calls the app's tools (an
OpenAI-compatible HTTP server, through the official SDK)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentstream.client import new_task
from tests.unit.test_providers_openai import LoopbackServer, Reply, completion

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
