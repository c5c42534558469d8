"""The demo says which model answers: ScriptedModel only when no real provider is configured."""

from __future__ import annotations

from agentstream.demo import SCRIPTED, describe_models
from agentstream.topology import load_topology


def test_the_bundled_topology_runs_on_scripted_model() -> None:
    assert describe_models(load_topology(), environ={}) == SCRIPTED


def test_a_real_model_from_the_environment_is_named_not_scripted() -> None:
    banner = describe_models(load_topology(), environ={"AGENTSTREAM_MODEL": "openai:gpt-4o-mini"})
    assert "ScriptedModel" not in banner
    assert banner.startswith("model: openai:gpt-4o-mini (from AGENTSTREAM_MODEL, for every agent type)")
    assert "a real LLM is called" in banner
