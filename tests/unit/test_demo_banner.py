"""The demo says which model answers (ScriptedModel only when no real provider is configured)
and who calls it, and waits long enough for a real one."""

from __future__ import annotations

from pathlib import Path

import yaml

from agentstream.demo import REAL_WAIT_S, SCRIPTED, SCRIPTED_WAIT_S, default_wait, describe_models
from agentstream.topology import load_topology, parse_topology

APP = Path(__file__).resolve().parents[2] / "examples" / "document_review"


def test_the_bundled_topology_runs_on_scripted_model() -> None:
    assert describe_models(load_topology(), environ={}) == SCRIPTED


def test_a_real_model_from_the_environment_is_named_not_scripted() -> None:
    banner = describe_models(load_topology(), environ={"AGENTSTREAM_MODEL": "openai:gpt-4o-mini"})
    assert "ScriptedModel" not in banner
    assert banner.startswith("model: openai:gpt-4o-mini (from AGENTSTREAM_MODEL, for every agent type)")
    assert "a real LLM is called" in banner


def test_the_router_and_supervisor_models_are_named_with_their_callers() -> None:
    """An app that pins every model, the router's classifier and the supervisor's review
    included, to the scripted model runs all of them on the provider AGENTSTREAM_MODEL names."""
    topology = yaml.safe_load((APP / "topology.yaml").read_text())
    topology["agents"]["router"]["routing"]["model"] = {"models": {"standard": "scripted:default"}}
    topology["agents"]["supervisor"]["supervision"] = {"model": {"models": {"standard": "scripted:default"}}}
    pinned = parse_topology(yaml.safe_dump(topology), APP / "topology.yaml")
    assert describe_models(pinned, environ={}) == SCRIPTED
    banner = describe_models(pinned, environ={"AGENTSTREAM_MODEL": "openai:llama3.1:8b"})
    assert banner.splitlines()[-1] == "  called by openai:llama3.1:8b: contracts, router (classifier), supervisor (review)"


def test_the_demo_waits_longer_for_a_real_model() -> None:
    assert default_wait(load_topology(), environ={}) == SCRIPTED_WAIT_S
    assert default_wait(load_topology(), environ={"AGENTSTREAM_MODEL": "openai:gpt-4o-mini"}) == REAL_WAIT_S > SCRIPTED_WAIT_S
