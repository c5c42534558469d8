"""The support desk's tools: plain typed functions over a small, fictional data set.

The specialists import this file at start-up because the topology names it in
`tools_modules`; each agent's `tools` list says which of these its model may call. The
data (support.json, next to this file) is read on first use, not at import, and every
tool returns a copy so a caller can never alter what the next call sees.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

from agentstream.tools import tool

_DATA = Path(__file__).with_name("support.json")
_WORD = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")
_STOPWORDS = frozenset(
    """a about after all am an and any are as at be been but by can could did do does for from get got
    has have how if in is it its just last me my no not now of on or our please right since so
    some that the their then there this to too up us was we were what when where which who why will
    with would you your""".split()
)


@functools.cache
def load_support_data() -> dict[str, Any]:
    """The data set, parsed once per process."""
    text = _DATA.read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _find(collection: str, key: str, value: str) -> dict[str, Any] | None:
    record = next((r for r in load_support_data()[collection] if str(r[key]).lower() == value.lower()), None)
    return copy.deepcopy(record)


@tool(inline=True)  # a lookup in memory: no thread needed
def lookup_invoice(invoice_id: str) -> dict[str, Any] | str:
    """Look up an invoice: amounts due and paid, status, and every card charge.

    Args:
        invoice_id: The invoice number, for example INV-1001.
    """
    return _find("invoices", "invoice_id", invoice_id.strip()) or f"No invoice with id {invoice_id!r} was found."


@tool(side_effects=True)
def refund_invoice(invoice_id: str) -> dict[str, Any] | str:
    """Refund what was paid on an invoice to the card it was charged to. Moves money: the
    topology holds every call for a human's approval first.

    Args:
        invoice_id: The invoice number, for example INV-1001.
    """
    invoice = _find("invoices", "invoice_id", invoice_id.strip())
    if invoice is None:
        return f"No invoice with id {invoice_id!r} was found; nothing was refunded."
    # A demo: no payment provider is called. A real one would pass idempotency_key()
    # (agentstream.specialist.durable) so a repeated call refunds once.
    return {"invoice_id": invoice["invoice_id"], "refunded": invoice["amount_paid"], "currency": invoice["currency"],
            "status": "refund issued"}


@tool(inline=True)  # a lookup in memory: no thread needed
def lookup_order(order_id: str) -> dict[str, Any] | str:
    """Look up an order: item, total, status and the invoice it was billed on.

    Args:
        order_id: The order number, digits only, for example 5001.
    """
    digits = order_id.strip().lstrip("#")
    return _find("orders", "order_id", digits) or f"No order with id {order_id!r} was found."


@tool(inline=True)  # a lookup in memory: no thread needed
def lookup_account(email: str) -> dict[str, Any] | str:
    """Look up a customer account by e-mail: plan, status, two-factor set-up and last login.

    Args:
        email: The e-mail address the account is registered with.
    """
    return _find("accounts", "email", email.strip()) or f"No account is registered with {email!r}."


@tool(inline=True)  # a lookup in memory: no thread needed
def search_kb(query: str, category: str | None = None, limit: int = 3) -> list[dict[str, str]]:
    """Search the help-centre knowledge base; returns the best matching articles.

    Args:
        query: What the customer asks about, in plain words.
        category: Only articles of this category (billing, technical or account); any other value searches all.
        limit: How many articles to return at most.
    """
    articles = load_support_data()["kb_articles"]
    if category in {article["category"] for article in articles}:
        articles = [article for article in articles if article["category"] == category]
    terms = _terms(query)
    scored = [(_score(terms, article), article) for article in articles]
    # A single shared word in the summary is noise: an article needs a title or tag hit,
    # or two words, and must be within half of the best match's score.
    ranked = sorted((pair for pair in scored if pair[0] >= 2), key=lambda pair: (-pair[0], pair[1]["id"]))
    ranked = [pair for pair in ranked if pair[0] * 2 >= ranked[0][0]]
    return [{"id": a["id"], "title": a["title"], "summary": a["summary"]} for _, a in ranked[: max(limit, 0)]]


def _stem(word: str) -> str:
    # Crude on purpose: "crashes", "crashed", "crash" must meet; linguistics need not.
    for suffix in ("ing", "es", "ed", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _terms(text: str) -> set[str]:
    return {_stem(word) for word in _WORD.findall(text.lower()) if len(word) > 1 and word not in _STOPWORDS}


def _score(terms: set[str], article: dict[str, Any]) -> int:
    # Title and tags are written to be searched, so a hit there counts double.
    strong, weak = _article_terms(article["title"] + " " + " ".join(article["tags"]), article["summary"])
    return sum(2 if term in strong else 1 if term in weak else 0 for term in terms)


@functools.cache
def _article_terms(searched: str, summary: str) -> tuple[frozenset[str], frozenset[str]]:
    """An article's terms, found once per process (the data never changes): every query
    took them apart again, the largest cost of a search."""
    return frozenset(_terms(searched)), frozenset(_terms(summary))
