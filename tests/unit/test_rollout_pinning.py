"""A routed task's version is pinned in its session's open entry when it is let go, and a
re-send after a rebalance reads the pin, not the weights of the moment."""

from __future__ import annotations

from typing import Any

from agentstream.rollout.pinning import VERSIONS, pin, pinned_variant
from agentstream.rollout.split import takes_candidate

CANARIES = ("billing",)


def _session(on_candidate_at_half: bool) -> str:
    """A session id whose billing bucket is below 0.5 (or not)."""
    return next(s for n in range(1000) if takes_candidate("billing", s := f"s-{n}", 0.5) == on_candidate_at_half)


def _decided(session_id: str, route: list[str] | None = None) -> dict[str, Any]:
    return {"task": {"task_id": "t1", "session_id": session_id, "input": "hi"}, "route": route, "tier": "standard", "by": "rules"}


def test_a_task_let_go_at_weight_1_stays_on_the_candidate_after_the_weight_drops_to_0() -> None:
    entry = _decided(_session(True), ["billing"])
    pin(entry, CANARIES, {"billing": 1.0}.__getitem__)
    assert pinned_variant(entry, "billing") == "candidate"
    pin(entry, CANARIES, {"billing": 0.0}.__getitem__)  # a re-send after the weight changed: the pin stands
    assert pinned_variant(entry, "billing") == "candidate"


def test_a_task_let_go_on_live_stays_there_when_the_weight_rises() -> None:
    entry = _decided(_session(False), ["billing"])
    pin(entry, CANARIES, {"billing": 0.5}.__getitem__)
    assert entry[VERSIONS] == {"billing": "live"} and pinned_variant(entry, "billing") is None
    pin(entry, CANARIES, {"billing": 1.0}.__getitem__)
    assert pinned_variant(entry, "billing") is None


def test_only_canary_types_of_the_route_are_pinned_and_each_by_its_own_draw() -> None:
    entry = _decided(_session(True), ["billing", "technical"])
    pin(entry, CANARIES, {"billing": 1.0}.__getitem__)  # technical has no canary: its weight is never asked
    assert entry[VERSIONS] == {"billing": "candidate"}
    assert (pinned_variant(entry, "billing"), pinned_variant(entry, "technical")) == ("candidate", None)


def test_an_undecided_route_is_pinned_once_a_router_model_decides_it() -> None:
    entry = _decided(_session(True))
    pin(entry, CANARIES, {"billing": 1.0}.__getitem__)
    assert VERSIONS not in entry
    entry["route"] = ["billing"]
    pin(entry, CANARIES, {"billing": 1.0}.__getitem__)
    assert pinned_variant(entry, "billing") == "candidate"


def test_an_entry_without_pins_goes_to_live() -> None:
    """Let go while the router had no canary: it went to live, and a re-send must too."""
    assert pinned_variant(_decided(_session(True), ["billing"]), "billing") is None
