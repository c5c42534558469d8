"""The rules that give a task its complexity tier (agentstream/tier.py).

Pure and deterministic, like the routing rules, so the router can run it in its commit
path and a replayed task always gets the same tier. It scores signals: length, several
questions, and the words of the topology's ``routing.tiers`` (work where a cheap model's
mistake costs more, urgency, several problems in one task). An explicit
``metadata["tier"]`` from the client wins; an unknown value is ignored (client data must
not fail the task, and the rules still give a sensible tier).

Each tier maps to a model per agent type in the topology (``ModelSettings.model_for``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from agentstream.tier import Tier, as_tier
from agentstream.topology import TierSignals

TIER_HINT_KEY = "tier"
PRIORITY_KEY = "priority"

# Word counts: up to SHORT reads as a one-liner; past LONG it is a case file.
_SHORT_WORDS = 25
_MEDIUM_WORDS = 80
_LONG_WORDS = 250
_MANY_QUESTIONS = 3
_HIGH_PRIORITIES = frozenset({"high", "urgent", "critical"})


@dataclass(frozen=True)
class TierRules:
    """The compiled ``routing.tiers`` signals; a kind without patterns never matches."""

    complex: re.Pattern[str] | None
    urgent: re.Pattern[str] | None
    several: re.Pattern[str] | None

    @classmethod
    def from_settings(cls, signals: TierSignals) -> TierRules:
        compiled = signals.compiled()
        return cls(compiled["complex"], compiled["urgent"], compiled["several"])

    def tier(self, text: str, metadata: Mapping[str, str]) -> Tier:
        """``simple``, ``standard`` or ``complex`` for a task's input text and metadata."""
        hinted = tier_hint(metadata)
        if hinted is not None:
            return hinted
        score = self.score(text, metadata)
        if score >= 2:
            return "complex"
        if score == 1 or len(text.split()) > _SHORT_WORDS:
            return "standard"
        return "simple"

    def score(self, text: str, metadata: Mapping[str, str]) -> int:
        """The rule score behind the tier: 2+ is complex, 1 standard (explains a tier)."""
        words = len(text.split())
        score = 2 if words > _LONG_WORDS else 1 if words > _MEDIUM_WORDS else 0
        if _found(self.complex, text):
            score += 2
        if _found(self.urgent, text) or metadata.get(PRIORITY_KEY, "").strip().lower() in _HIGH_PRIORITIES:
            score += 1
        if _found(self.several, text):
            score += 1
        if text.count("?") >= _MANY_QUESTIONS:
            score += 1
        return score


def tier_hint(metadata: Mapping[str, str]) -> Tier | None:
    """The client's ``metadata["tier"]`` when it names a tier: it wins over the rules and
    over the LLM classifier alike."""
    return as_tier(metadata.get(TIER_HINT_KEY, "").strip().lower())


def _found(pattern: re.Pattern[str] | None, text: str) -> bool:
    return pattern is not None and pattern.search(text) is not None
