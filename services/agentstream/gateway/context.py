"""The parts one gateway process shares between its requests, and their lifecycle: the
view (store and reader), the producer, the tenants, the rate limiter and the record of
tasks this process submitted lately."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
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
from agentstream.topology import Topology

# Tasks this process submitted, by id, until the view has read them back (a GET right after
# the POST, a repeated Idempotency-Key within the view's lag); oldest dropped first.
RECENT_TASKS = 10_000
AUDIT_SOURCE = "gateway"


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
    limiter: RateLimiter = field(default_factory=RateLimiter)
    recent: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)

    @classmethod
    def start(cls, config: GatewayConfig) -> Gateway:
        """Open a fresh view store, start reading the topics into it, and the producer."""
        base = config.settings.state_dir / "gateway"
        base.mkdir(parents=True, exist_ok=True)
        store = ViewStore.fresh(Path(tempfile.mkdtemp(prefix="view-", dir=base)))  # one per process
        changes = Changes(asyncio.get_running_loop())
        reader = ViewReader(config.bootstrap, config.topology, config.schemas, store, changes.notify).start()
        producer = AsyncProducer(config.bootstrap)
        return cls(config, store, reader, producer, changes,
                   ApprovalTopics(config.bootstrap, config.topology, config.schemas),
                   AuditLog(producer.raw, config.topology, config.schemas, AUDIT_SOURCE))

    def stop(self) -> None:
        self.reader.stop()
        self.producer.close()
        self.store.close()
        shutil.rmtree(self.store.path, ignore_errors=True)

    def remember(self, view: dict[str, Any]) -> None:
        self.recent[view["task_id"]] = view
        while len(self.recent) > RECENT_TASKS:
            self.recent.popitem(last=False)

    def task(self, task_id: str) -> dict[str, Any] | None:
        """The task's view: from the store, else as submitted here moments ago."""
        return self.store.task(task_id) or self.recent.get(task_id)


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway
