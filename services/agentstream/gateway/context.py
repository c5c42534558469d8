"""The parts one gateway process shares between its requests, and their lifecycle: the
view (store and reader), the tenancy ledger (the router's, for the same admission
decision), the producer, the tenants, the rate limiter and the tasks this process
submitted lately."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from agentstream.approvals.ops import ApprovalTopics
from agentstream.gateway.changes import Changes
from agentstream.gateway.limits import RateLimiter
from agentstream.gateway.producer import AsyncProducer
from agentstream.gateway.settings import GatewaySettings
from agentstream.gateway.view_reader import ViewReader
from agentstream.gateway.view_store import ViewStore
from agentstream.serde import SchemaSet
from agentstream.tenancy import AuditLog, Tenants
from agentstream.tenancy.ledger_reader import LedgerReader
from agentstream.topology import Topology

# Tasks this process submitted, by id, until the view has read them back (a GET right after
# the POST, a repeated Idempotency-Key within the view's lag); oldest dropped first.
RECENT_TASKS = 10_000
log = logging.getLogger(__name__)
AUDIT_SOURCE = "gateway"
LEDGER_WAIT_S = 30.0


@dataclass(frozen=True)
class GatewayConfig:
    """What ``create_app`` needs: all of it checked before the server binds its port."""

    settings: GatewaySettings
    bootstrap: str
    topology: Topology
    schemas: SchemaSet
    tenants: Tenants


@dataclass
class Gateway:
    config: GatewayConfig
    store: ViewStore
    reader: ViewReader
    producer: AsyncProducer
    changes: Changes
    approvals: ApprovalTopics
    audit: AuditLog
    ledger: LedgerReader
    ledger_ready: threading.Event  # set once the ledger has read the topics to their ends
    home: Path
    limiter: RateLimiter = field(default_factory=RateLimiter)
    recent: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)

    @classmethod
    def start(cls, config: GatewayConfig) -> Gateway:
        """Open a fresh view store, start reading the topics into it, and the producer."""
        base = config.settings.state_dir / "gateway"
        base.mkdir(parents=True, exist_ok=True)
        home = Path(tempfile.mkdtemp(prefix="view-", dir=base))  # one per process
        store = ViewStore.fresh(home / "tasks")
        changes = Changes(asyncio.get_running_loop())
        reader = ViewReader(config.bootstrap, config.topology, config.schemas, store, changes.notify).start()
        topology = config.topology
        ledger = LedgerReader.for_topology(config.bootstrap, topology, config.schemas, home / "ledger")
        ledger.start()
        ledger_ready = threading.Event()
        threading.Thread(target=_wait_for_ledger, args=(ledger, ledger_ready), name="gateway-ledger-ready",
                         daemon=True).start()
        producer = AsyncProducer(config.bootstrap)
        return cls(config, store, reader, producer, changes, ApprovalTopics(config.bootstrap, topology, config.schemas),
                   AuditLog(producer.raw, topology, config.schemas, AUDIT_SOURCE), ledger, ledger_ready, home)

    @property
    def ready(self) -> bool:
        return self.reader.ready and self.ledger_ready.is_set()

    def stop(self) -> None:
        self.reader.stop()
        self.ledger.stop()
        self.producer.close()
        self.store.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def remember(self, view: dict[str, Any]) -> None:
        self.recent[view["task_id"]] = view
        while len(self.recent) > RECENT_TASKS:
            self.recent.popitem(last=False)

    def forget(self, task_id: str) -> None:
        self.recent.pop(task_id, None)

    def task(self, task_id: str) -> dict[str, Any] | None:
        """The task's view: from the store, else as submitted here moments ago."""
        return self.store.task(task_id) or self.recent.get(task_id)


def _wait_for_ledger(ledger: LedgerReader, ready: threading.Event) -> None:
    """Until the ledger has caught up (its reader thread ends with the process)."""
    while not ledger.wait_caught_up(LEDGER_WAIT_S):
        log.info("the tenant ledger is still catching up with the tasks and results topics")
    ready.set()


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway
