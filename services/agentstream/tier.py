"""A task's complexity tier: which class of model it deserves.

The one definition: the router gives every task a tier (router/tier.py), the topology
maps each tier to a model per agent type (models/config.py), the specialist picks the
model chain of the task's tier (specialist/model_chains.py).
"""

from __future__ import annotations

from typing import Literal, get_args

Tier = Literal["simple", "standard", "complex"]
TIERS: tuple[Tier, ...] = get_args(Tier)
# The tier of a task that has none (routed before tiers existed); every agent's model
# settings must name its model.
DEFAULT_TIER: Tier = "standard"


def as_tier(name: str | None) -> Tier | None:
    """``name`` if it is a tier, spelt exactly; None otherwise (the caller's default)."""
    return next((tier for tier in TIERS if tier == name), None)
