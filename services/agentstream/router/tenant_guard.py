"""The router's tenancy, when a tenants file is configured: a task of an unknown tenant, of
a tenant over its daily budget or over its cap of tasks in flight is refused (a REJECTED
result with the reason, and an audit record). Without a tenants file the router builds
none of it and behaves as before.

The figures come from a global copy of the tenant ledger (tenancy/ledger_reader.py), kept
in the router's state directory beside its tables.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentstream.errors import ConfigurationError
from agentstream.serde import SchemaSet
from agentstream.settings import TENANTS_ENV, WorkerSettings
from agentstream.tenancy.admission import Refusal
from agentstream.tenancy.audit import AUDIT_TOPIC, REFUSED, TASK_REJECT, audit_record, encode_audit
from agentstream.tenancy.identity import Tenant
from agentstream.tenancy.ledger_reader import LedgerReader
from agentstream.tenancy.tenants import load_tenant_limits
from agentstream.topology import Topology

log = logging.getLogger(__name__)

LEDGER_STORE = "tenant-ledger"
# How long a newly assigned router waits for its ledger copy to reach the topics' end before
# it decides tasks anyway (with a warning): a first start reads the topics' whole retention.
CATCH_UP_S = 120.0


class TenantGuard:
    def __init__(self, tenants: Mapping[str, Tenant], reader: LedgerReader, audit_topic: str, schemas: SchemaSet) -> None:
        self._tenants = dict(tenants)
        self._reader = reader
        self.audit_topic = audit_topic
        self._schemas = schemas

    @classmethod
    def build(cls, agent: str, settings: WorkerSettings, topology: Topology, schemas: SchemaSet) -> TenantGuard | None:
        """The guard of ``settings.tenants_path``, or None without a tenants file."""
        if settings.tenants_path is None:
            return None
        _require_file(settings.tenants_path)
        tenants = load_tenant_limits(settings.tenants_path)
        if AUDIT_TOPIC not in topology.topics:
            raise ConfigurationError(f"{TENANTS_ENV} is set, so the router writes audit records, but the topology declares "
                                     f"no {AUDIT_TOPIC!r} topic; add it under topics (README 'Tenants').")
        path = Path(settings.state_dir) / agent / topology.group(agent) / LEDGER_STORE
        reader = LedgerReader.for_topology(settings.bootstrap, topology, schemas, path, observed=sorted(tenants))
        return cls(tenants, reader, topology.topic(AUDIT_TOPIC), schemas)

    async def on_assign(self, partitions: list[int]) -> None:
        """Before the router decides a newly assigned partition's tasks, its ledger copy holds
        everything written so far."""
        self._reader.start()
        if not await asyncio.to_thread(self._reader.wait_caught_up, CATCH_UP_S):
            log.warning("tenant ledger: not at the topics' end after %.0f s; deciding tasks of partitions %s on it as it "
                        "stands (tenant limits may be passed until it is)", CATCH_UP_S, partitions)

    def stop(self) -> None:
        self._reader.stop()

    def refusal(self, task: Mapping[str, Any]) -> Refusal | None:
        return self._reader.refusal(self._tenants, task)

    def audit(self, task: Mapping[str, Any], refused: Refusal, subject: str) -> tuple[bytes, bytes]:
        """The key and value of the audit record of refusing ``task``."""
        record = audit_record(tenant_id=task["tenant_id"], subject=subject, action=TASK_REJECT, target_id=task["task_id"],
                              outcome=REFUSED, source=subject, detail=f"{refused.code}: {refused.reason}")
        return encode_audit(self._schemas, record)


def _require_file(path: Path) -> None:
    """Named but missing, the tenants file stops the router rather than switching tenancy
    off: a deleted or misnamed Secret must not lift every tenant's limits unnoticed."""
    if not path.is_file():
        raise ConfigurationError(
            f"{TENANTS_ENV} (or --tenants) names the tenants file {path}, and there is no file there; the router "
            "enforces the tenants' limits from it and does not start without it. Write the file (README 'Tenants'; "
            "where the rendered deploy files expect it: README 'Generated deploy files'), or unset "
            f"{TENANTS_ENV} to run without tenant limits.")
