"""The behaviour version covers every setting that changes what an agent does: two agents
that differ only in scripted rules, tiers, budgets, limits, approvals or allowlist get two
versions; two built from the same settings, in any process, get the same one."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from agentstream.specialist.app import build_agent
from agentstream.topology import DEFAULT_PATH, Topology, parse_topology

# The support desk's billing specialist, each entry changing one setting of it.
CHANGES: dict[str, dict[str, Any]] = {
    "scripted rules": {"model": {"scripted": [{"call": "search_kb", "argument": "query"}]}},
    "model tiers": {"model": {"models": {"standard": "scripted:default"}}},
    "budget": {"model": {"budget_usd": 2.0}},
    "max_steps": {"max_steps": 5},
    "approval policy": {"approvals": {"refund_invoice": {"require": "never"}}},
    "tools allowlist": {"tools": ["lookup_invoice", "lookup_order", "search_kb", "refund_invoice", "lookup_account"]},
}


def _billing(change: dict[str, Any] | None = None) -> Topology:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    billing = raw["agents"]["billing"]
    for key, value in (change or {}).items():
        billing[key] = {**billing[key], **value} if isinstance(value, dict) and key == "model" else value
    return parse_topology(yaml.safe_dump(raw), DEFAULT_PATH)


def _version(topology: Topology, agent_type: str = "billing") -> str:
    return build_agent(agent_type, topology).version


def test_the_same_settings_give_the_same_version() -> None:
    assert _version(_billing()) == _version(_billing())


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_a_change_of_one_behavioural_setting_gives_another_version(what: str) -> None:
    assert _version(_billing(CHANGES[what])) != _version(_billing()), f"{what} is not in the behaviour version"


def test_a_candidate_that_differs_only_in_its_scripted_rules_is_another_version() -> None:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    live_model = raw["agents"]["billing"]["model"]
    rules = [{"call": "search_kb", "argument": "query", "args": {"category": "billing"}}]
    raw["agents"]["billing"]["candidate"] = {"mode": "canary", "weight": 0.1, "model": {**live_model, "scripted": rules}}
    topology = parse_topology(yaml.safe_dump(raw), DEFAULT_PATH)
    assert _version(topology, "billing.candidate") != _version(topology, "billing")
