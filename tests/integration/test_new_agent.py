"""`agentstream new agent NAME` adds a specialist to an app folder (topology entry with a
routing rule, tools module, prompt), keeps the topology's comments, and the new agent
answers at once under `agentstream dev`."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

from .cli import cli_env, run
from .harness import REPO
from .test_cli_dev import Dev


def test_a_new_agent_is_written_into_the_app_and_runs_in_dev(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(REPO / "examples" / "document_review", app)
    before = (app / "topology.yaml").read_text(encoding="utf-8")
    env = cli_env(AGENTSTREAM_STATE_DIR=str(tmp_path / "state"), AGENTSTREAM_TOPOLOGY=str(app / "topology.yaml"))

    added = run("new", "agent", "refunds", env=env)
    assert added.returncode == 0, added.stderr
    after = (app / "topology.yaml").read_text(encoding="utf-8")
    removed = [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line.startswith("- ")]
    assert removed == [], "a line of the topology was changed or lost"
    assert (app / "tools_refunds.py").is_file() and (app / "prompts" / "refunds.md").is_file()
    again = run("new", "agent", "refunds", env=env)
    assert again.returncode == 2 and "exists already" in again.stderr

    dev = Dev(env)
    try:
        dev.started()
        assert any("refunds (pid" in line for line in dev.lines), dev.lines[-10:]
        asked = run("submit", "Please look at the refunds of last week", "--session", "n-1", "--wait", env=env)
    finally:
        dev.close()
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert "COMPLETED via refunds" in asked.stdout, asked.stdout  # routed by the rule it added
    # The scripted model called the new example tool (the rule `new agent` wrote), which ran in the worker.
    assert "No refunds records match" in asked.stdout, asked.stdout


def test_a_new_agent_whose_name_another_rule_matches_is_pointed_out(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(REPO / "examples" / "support_desk", app)
    before = (app / "topology.yaml").read_text(encoding="utf-8")
    added = run("new", "agent", "refunds", "--app", str(app), env=cli_env())
    assert added.returncode == 0, added.stderr
    assert "a task naming refunds also matches the routing rules of billing, so it goes to billing+refunds" in added.stdout
    after = (app / "topology.yaml").read_text(encoding="utf-8")
    assert [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line.startswith("- ")] == []
    assert "    model: &billing_model      # model ids are provider:model; AGENTSTREAM_MODEL overrides them all" in after
