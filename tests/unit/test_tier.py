"""The complexity tier rules, with the topology's tier signals."""

from __future__ import annotations

import pytest

from agentstream.router.tier import TierRules
from agentstream.tier import TIERS
from agentstream.topology import TierSignals, load_topology

ROUTING = load_topology().agent("router").routing
assert ROUTING is not None
RULES = TierRules.from_settings(ROUTING.tiers)
complexity_tier, complexity_score = RULES.tier, RULES.score

LONG = " ".join(["The export to our warehouse stopped working after the last update."] * 30)


@pytest.mark.parametrize(
    ("text", "tier"),
    [
        ("How do I reset my password?", "simple"),
        ("Where is my order 12345?", "simple"),
        ("Please send me a copy of invoice INV-1002.", "simple"),
        ("URGENT: I cannot log in", "standard"),  # urgency alone raises the tier one step
        ("I have multiple questions about my account", "standard"),
        ("Our legal team needs the data processing addendum to the contract", "complex"),
        ("We need help with the Salesforce integration", "complex"),
        ("Urgent: multiple invoices are wrong", "complex"),  # urgent + several problems
        ("Can I pay by card? Is VAT included? Do you invoice monthly?", "standard"),
        (LONG, "complex"),
    ],
)
def test_rules(text: str, tier: str) -> None:
    assert complexity_tier(text, {}) == tier


def test_a_plain_message_of_some_length_is_standard() -> None:
    text = (
        "I changed my delivery address last week in the profile page, and the confirmation e-mail "
        "arrived, but the parcel still went to the old address and the courier says it is delivered."
    )
    assert complexity_score(text, {}) == 0 and complexity_tier(text, {}) == "standard"


def test_an_explicit_hint_wins_and_an_unknown_one_is_ignored() -> None:
    assert complexity_tier("Review this contract", {"tier": "simple"}) == "simple"
    assert complexity_tier("hi", {"tier": " Complex "}) == "complex"
    assert complexity_tier("hi", {"tier": "enterprise"}) == "simple"


def test_priority_metadata_counts_as_urgency() -> None:
    assert complexity_tier("Where is my parcel?", {"priority": "high"}) == "standard"


def test_keywords_match_whole_words_only() -> None:
    assert complexity_tier("The contractor left", {}) == "simple"  # not "contract"
    assert complexity_tier("Many thanks!", {}) == "simple"


def test_the_rules_are_deterministic() -> None:
    assert len({complexity_tier(LONG, {"x": "y"}) for _ in range(5)}) == 1
    assert TIERS == ("simple", "standard", "complex")


def test_without_signals_only_length_questions_and_priority_count() -> None:
    bare = TierRules.from_settings(TierSignals())
    assert bare.tier("Our legal team needs the contract, urgently", {}) == "simple"
    assert bare.tier("Where is my parcel?", {"priority": "urgent"}) == "standard"
    assert bare.tier(LONG, {}) == "complex"
