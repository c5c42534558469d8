"""Side-effecting tools for the approval tests: each run appends its idempotency key, the
action and the invoice to the ledger file named by ``REFUND_LEDGER`` (a test app's own
setting), so a test counts how often a tool really ran, across worker processes and kills.

``gated_refund`` also stops on its way: it notes its entry (idempotency key and pid) in the
directory named by ``REFUND_GATE`` and writes its ledger line only once the test has
created the file ``open`` there, so a test can SIGKILL a worker while the call is in
flight, after its decision and before its side effect."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agentstream.specialist.durable import idempotency_key
from agentstream.tools import tool

LEDGER_ENV = "REFUND_LEDGER"
GATE_ENV = "REFUND_GATE"
GATE_ENTERED = "entered"  # in the gate directory: one line "<idempotency key> <pid>" per call that reached the gate
GATE_OPEN = "open"  # the file the test creates to let the calls through
GATE_POLL_S = 0.05
GATE_HOLD_S = 300.0  # how long a call may wait at the gate


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


# Held at the gate until the test opens it, past the tools' default 10 s limit when the
# machine is slow: its own limit must not end the held calls before the test's kill does.
@tool(timeout_s=GATE_HOLD_S)
async def gated_refund(invoice_id: str) -> str:
    """Refund the payment of an invoice once the gate is open (writes one ledger line per run).

    Args:
        invoice_id: The invoice number, for example INV-1001.
    """
    gate = Path(os.environ[GATE_ENV])
    with (gate / GATE_ENTERED).open("a", encoding="utf-8") as entered:
        entered.write(f"{idempotency_key()} {os.getpid()}\n")
    while not (gate / GATE_OPEN).exists():
        # Polls the condition the test controls (async: a blocked thread would hold a slot
        # of the worker's small thread pool, which other calls then queue behind).
        await asyncio.sleep(GATE_POLL_S)
    return _write("refund", invoice_id)
