"""The router's ``routing`` section of the topology: rules compiled and checked at load,
with errors that name the agent, the bad value and the fix (no broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentstream.errors import ConfigurationError
from agentstream.router.decide import Rules
from agentstream.topology import RoutingSettings, load_topology

from .test_topology import SPECIALISTS, write_variant

Change = Callable[[dict[str, Any]], None]


def _routing(raw: dict[str, Any]) -> dict[str, Any]:
    section: dict[str, Any] = raw["agents"]["router"]["routing"]
    return section


def _refused(tmp_path: Path, change: Change) -> str:
    with pytest.raises(ConfigurationError, match="Invalid topology") as caught:
        load_topology(write_variant(tmp_path, change))
    return str(caught.value)


def test_the_real_file_routes_by_its_rules_with_no_model() -> None:
    routing = load_topology().agent("router").routing
    assert routing is not None and routing.model is None
    assert routing.default == "technical"
    assert sorted(routing.rules) == sorted(SPECIALISTS)
    rules = Rules.from_settings(routing)
    assert rules.route("Refund invoice INV-1001 please", None, SPECIALISTS) == ["billing"]


def test_a_bad_pattern_is_named_with_its_agent_and_the_fix(tmp_path: Path) -> None:
    message = _refused(tmp_path, lambda raw: _routing(raw)["rules"]["billing"].append(r"inv-(\d+"))
    assert "agent 'router'" in message
    assert r"pattern 'inv-(\\d+' in routing.rules.billing is not a regular expression (missing ), unterminated" in message
    assert "escape the characters meant literally with a backslash" in message


def test_patterns_that_cannot_be_combined_are_refused(tmp_path: Path) -> None:
    # Each compiles alone; one expression of both has the group name twice.
    message = _refused(tmp_path, lambda raw: _routing(raw)["rules"].update(account=["(?P<w>pin)", "(?P<w>pass)"]))
    assert "the patterns in routing.rules.account cannot be combined" in message
    assert "non-capturing groups" in message


def test_an_empty_pattern_would_match_everything_and_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, lambda raw: _routing(raw)["rules"]["account"].append("  "))
    assert "an empty pattern in routing.rules.account would match every task" in message


def test_tier_signals_are_checked_like_rules(tmp_path: Path) -> None:
    message = _refused(tmp_path, lambda raw: _routing(raw)["tiers"]["urgent"].append("asap["))
    assert "agent 'router': pattern 'asap[' in routing.tiers.urgent is not a regular expression" in message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda raw: _routing(raw)["rules"].update(shipping=["parcel"]), "['shipping']"),
        (lambda raw: _routing(raw).update(default="sales"), "['sales']"),
        (lambda raw: _routing(raw)["descriptions"].update(legal="contracts"), "['legal']"),
    ],
)
def test_routing_may_name_only_specialists(tmp_path: Path, change: Change, named: str) -> None:
    message = _refused(tmp_path, change)
    assert f"agent 'router': routing names {named}, which are not specialists here" in message
    assert "use one of ['billing', 'technical', 'account']" in message


def test_a_router_needs_a_routing_section(tmp_path: Path) -> None:
    message = _refused(tmp_path, lambda raw: raw["agents"]["router"].pop("routing"))
    assert "agent 'router' needs a routing section" in message
    assert "routing: {default: billing}" in message


def test_routing_belongs_to_the_router_only(tmp_path: Path) -> None:
    message = _refused(tmp_path, lambda raw: raw["agents"]["supervisor"].update(routing={"default": "billing"}))
    assert "routing applies to the router only, not to a supervisor" in message


def test_a_misspelt_routing_key_lists_the_valid_ones(tmp_path: Path) -> None:
    message = _refused(tmp_path, lambda raw: _routing(raw).update(min_confidance=0.7))
    assert "unknown key 'min_confidance' in agents.router.routing; valid keys are ['controls', 'default', " in message


def test_a_router_model_is_read_with_the_specialists_model_settings(tmp_path: Path) -> None:
    def configure(raw: dict[str, Any]) -> None:
        _routing(raw).update(model={"models": {"standard": "openai:gpt-4o-mini"}, "timeout_s": 10, "call_timeout_s": 5},
                             controls={"retry": {"max_attempts": 2}}, min_confidence=0.7)

    routing = load_topology(write_variant(tmp_path, configure)).agent("router").routing
    assert isinstance(routing, RoutingSettings) and routing.model is not None and routing.controls is not None
    assert routing.model.model_for(environ={}) == "openai:gpt-4o-mini"
    assert routing.model.model_for(environ={"AGENTSTREAM_MODEL": "anthropic:claude-x"}) == "anthropic:claude-x"
    assert routing.controls.retry.max_attempts == 2 and routing.min_confidence == 0.7


def test_min_confidence_is_a_probability(tmp_path: Path) -> None:
    message = _refused(tmp_path, lambda raw: _routing(raw).update(min_confidence=1.5))
    assert "agents.router.routing.min_confidence" in message


def test_loop_settings_are_refused_on_the_router_model(tmp_path: Path) -> None:
    message = _refused(tmp_path, lambda raw: _routing(raw).update(
        model={"models": {"standard": "openai:gpt-4o-mini"}, "budget_usd": 1.0, "max_steps": 3}))
    assert "routing.model sets ['budget_usd', 'max_steps'], which shape a specialist's loop" in message
