"""USD prices per model, so budgets and TaskResult.usage.cost_usd mean money.

Keys are model ids or ``fnmatch`` patterns over them (``anthropic:claude-sonnet-4*``);
overrides beat defaults, an exact id beats a pattern, a longer pattern a shorter one. The defaults
are list prices per 1M tokens as the providers published them in late 2025, for models we
know; prices change and new models appear, so deployments override and extend them
(``PriceTable({...})``). An unpriced model costs 0 with a warning.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from agentstream.models.base import Usage

log = logging.getLogger(__name__)

_PER = 1_000_000


class ModelPrice(BaseModel):
    """USD per 1M input (prompt) and output (completion) tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost_usd(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / _PER


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "scripted:*": ModelPrice(input=0, output=0),
    "openai:gpt-4o-mini*": ModelPrice(input=0.15, output=0.60),
    "openai:gpt-4o": ModelPrice(input=2.50, output=10.00),
    "openai:gpt-4o-2*": ModelPrice(input=2.50, output=10.00),  # dated snapshots
    "openai:gpt-4.1*": ModelPrice(input=2.00, output=8.00),
    "openai:gpt-4.1-mini*": ModelPrice(input=0.40, output=1.60),
    "openai:gpt-4.1-nano*": ModelPrice(input=0.10, output=0.40),
    "openai:o4-mini*": ModelPrice(input=1.10, output=4.40),
    "openai:gpt-5": ModelPrice(input=1.25, output=10.00),
    "openai:gpt-5-mini*": ModelPrice(input=0.25, output=2.00),
    "openai:gpt-5-nano*": ModelPrice(input=0.05, output=0.40),
    "anthropic:claude-haiku-4-5*": ModelPrice(input=1.00, output=5.00),
    "anthropic:claude-sonnet-4*": ModelPrice(input=3.00, output=15.00),
    "anthropic:claude-opus-4-0*": ModelPrice(input=15.00, output=75.00),
    "anthropic:claude-opus-4-1*": ModelPrice(input=15.00, output=75.00),
    "anthropic:claude-opus-4-5*": ModelPrice(input=5.00, output=25.00),
}


class PriceTable:
    """Prices by model id; ``overrides`` extend or replace the defaults key by key."""

    def __init__(
        self,
        overrides: Mapping[str, ModelPrice | Mapping[str, float]] | None = None,
        *,
        defaults: Mapping[str, ModelPrice] = DEFAULT_PRICES,
    ) -> None:
        mine = {
            key: price if isinstance(price, ModelPrice) else ModelPrice.model_validate(price)
            for key, price in (overrides or {}).items()
        }
        # An override beats every default; within each, the most specific key decides.
        self._prices = _by_specificity(mine) + _by_specificity(defaults)
        self._warned: set[str] = set()
        # The answer per model id: every model call is priced, and matching it against each
        # pattern cost more than the rest of the pricing. The table never changes after
        # construction, and model ids are few (a topology's models), so the cache is exact
        # and small.
        self._found: dict[str, ModelPrice | None] = {}

    def price_for(self, model_id: str) -> ModelPrice | None:
        try:
            return self._found[model_id]
        except KeyError:
            price = self._found[model_id] = self._match(model_id)
            return price

    def _match(self, model_id: str) -> ModelPrice | None:
        for pattern, price in self._prices:
            if fnmatch.fnmatchcase(model_id, pattern):
                return price
        return None

    def cost_usd(self, model_id: str, usage: Usage) -> float:
        """The cost of ``usage``; 0 for an unpriced model, with one warning per model id
        (a self-hosted model may really be free, but a typo must not pass unnoticed)."""
        price = self.price_for(model_id)
        if price is None:
            if model_id not in self._warned:
                self._warned.add(model_id)
                log.warning("no price for model %s; its calls count as 0 USD against budgets", model_id)
            return 0.0
        return price.cost_usd(usage)


def _by_specificity(prices: Mapping[str, ModelPrice]) -> list[tuple[str, ModelPrice]]:
    """Exact ids first, then patterns, longest first."""
    return sorted(prices.items(), key=lambda item: ("*" in item[0] or "?" in item[0], -len(item[0])))


DEFAULT_PRICE_TABLE = PriceTable()


def cost_usd(model_id: str, usage: Usage, prices: PriceTable = DEFAULT_PRICE_TABLE) -> float:
    """USD cost of one call's ``usage`` on ``model_id`` (a ``provider:model`` id)."""
    return prices.cost_usd(model_id, usage)
