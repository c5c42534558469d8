"""The complexity tier of a task: which class of model it deserves.

Pure and deterministic, like the routing decision, so the router can run it in its
commit path and a replayed task always gets the same tier. The rules score signals a
support desk would use to escalate: length, legal/contractual or integration work,
urgency, several problems in one ticket. An explicit ``metadata["tier"]`` from the
client wins; an unknown value is ignored (client data must not fail the task, and the
rules still give a sensible tier).

Each tier maps to a model per agent type in the topology (``ModelSettings.model_for``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, get_args


Tier = Literal["simple", "standard", "complex"]
TIERS: tuple[Tier, ...] = get_args(Tier)
_BY_NAME: dict[str, Tier] = {tier: tier for tier in TIERS}

TIER_HINT_KEY = "tier"
PRIORITY_KEY = "priority"

# Words a text reaches complex on alone: they mean liability or multi-system work, where
# a cheap model's mistake costs more than the bigger model.
_COMPLEX = re.compile(
    r"\b(?:legal(?:ly)?|lawyers?|attorneys?|lawsuits?|litigation|contracts?|contractual|liabilit(?:y|ies)|"
    r"complian(?:ce|t)|gdpr|regulat(?:or|ory|ion)s?|integrations?|integrat(?:e|ing)|migrat(?:e|ion|ing)|"
    r"security (?:breach|incident)|data breach|audit)\b",
    re.IGNORECASE,
)
_URGENT = re.compile(
    r"\b(?:urgent(?:ly)?|asap|immediately|emergency|critical|outage|production (?:is )?down)\b", re.IGNORECASE
)
_MULTIPLE = re.compile(r"\b(?:multiple|several|various|a number of|also|as well as)\b", re.IGNORECASE)

# Word counts: up to SHORT reads as a one-liner; past LONG it is a case file.
_SHORT_WORDS = 25
_MEDIUM_WORDS = 80
_LONG_WORDS = 250
_MANY_QUESTIONS = 3
_HIGH_PRIORITIES = frozenset({"high", "urgent", "critical"})


def complexity_tier(text: str, metadata: Mapping[str, str]) -> Tier:
    """``simple``, ``standard`` or ``complex`` for a task's input text and metadata."""
    hinted = tier_hint(metadata)
    if hinted is not None:
        return hinted
    score = complexity_score(text, metadata)
    if score >= 2:
        return "complex"
    if score == 1 or len(text.split()) > _SHORT_WORDS:
        return "standard"
    return "simple"


def tier_hint(metadata: Mapping[str, str]) -> Tier | None:
    """The client's ``metadata["tier"]`` when it names a tier: it wins over the rules and
    over the LLM classifier alike."""
    return _BY_NAME.get(metadata.get(TIER_HINT_KEY, "").strip().lower())


def complexity_score(text: str, metadata: Mapping[str, str]) -> int:
    """The rule score behind the tier: 2+ is complex, 1 standard (explains a tier)."""
    words = len(text.split())
    score = 2 if words > _LONG_WORDS else 1 if words > _MEDIUM_WORDS else 0
    if _COMPLEX.search(text):
        score += 2
    if _URGENT.search(text) or metadata.get(PRIORITY_KEY, "").strip().lower() in _HIGH_PRIORITIES:
        score += 1
    if _MULTIPLE.search(text):
        score += 1
    if text.count("?") >= _MANY_QUESTIONS:
        score += 1
    return score
