"""Side-effecting tools for the approval tests: each run appends its idempotency key, the
action and the invoice to the ledger file named by ``REFUND_LEDGER`` (a test app's own
setting), so a test counts how often a tool really ran, across worker processes and kills."""

from __future__ import annotations

import os

from agentstream.specialist.durable import idempotency_key
from agentstream.tools import tool

LEDGER_ENV = "REFUND_LEDGER"


def _write(action: str, invoice_id: str) -> str:
    with open(os.environ[LEDGER_ENV], "a", encoding="utf-8") as ledger:
        ledger.write(f"{idempotency_key()} {action} {invoice_id}\n")
    return f"{action} done for {invoice_id}"


@tool(side_effects=True)
def refund_payment(invoice_id: str) -> str:
    """Refund the payment of an invoice (writes one ledger line per run).

    Args:
        invoice_id: The invoice number, for example INV-1001.
    """
    return _write("refund", invoice_id)


@tool(side_effects=True)
def void_payment(invoice_id: str) -> str:
    """Void the pending payment of an invoice (writes one ledger line per run).

    Args:
        invoice_id: The invoice number, for example INV-1001.
    """
    return _write("void", invoice_id)


@tool
def hold_payment(invoice_id: str) -> str:
    """Put the payment of an invoice on hold (writes one ledger line per run).

    Args:
        invoice_id: The invoice number, for example INV-1001.
    """
    return _write("hold", invoice_id)
