"""The audit trail: an AuditRecord (who, tenant, action, target, when, outcome) for every
submission, approval decision and cancellation the gateway takes, and every task the
router refuses for its tenant, on the ``audit`` topic (keyed by tenant, kept 90 days).

The gateway produces through ``AuditLog``; the router builds the same records with
``audit_record`` and sends them with its processor (so they go out with its commit order).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from agentstream.events import AUDIT_RECORD, now_ms
from agentstream.serde import SchemaSet
from agentstream.telemetry.redact import Redactor
from agentstream.tenancy.identity import Principal
from agentstream.topology import Topology

AUDIT_TOPIC = "audit"  # the topology's logical name of the audit topic

# Actions.
TASK_SUBMIT = "task.submit"
TASK_CANCEL = "task.cancel"
APPROVAL_DECIDE = "approval.decide"
DLQ_REPLAY = "dlq.replay"  # an operator sent a dead letter back to its source topic
TASK_REJECT = "task.reject"  # the router refused a task for its tenant
# Outcomes.
ACCEPTED = "accepted"
REFUSED = "refused"

_SCRUB = Redactor()  # a detail is free text from a caller: secret-looking strings never reach the topic


class Producer(Protocol):
    """What AuditLog needs of a producer (confluent_kafka.Producer has it)."""

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> None: ...


def audit_record(*, tenant_id: str, subject: str, action: str, target_id: str, outcome: str, source: str,
                 detail: str = "", at: int | None = None) -> dict[str, Any]:
    """An AuditRecord (schemas/AuditRecord.avsc)."""
    return {
        "audit_id": str(uuid.uuid4()),
        "at": now_ms() if at is None else at,
        "tenant_id": tenant_id,
        "subject": subject,
        "action": action,
        "target_id": target_id,
        "outcome": outcome,
        "detail": _SCRUB(detail),
        "source": source,
    }


def encode_audit(schemas: SchemaSet, record: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The record's key (its tenant: one tenant's trail stays in order) and Avro value."""
    return record["tenant_id"].encode(), schemas.encode(AUDIT_RECORD, record)


class AuditLog:
    """Writes audit records for a service (the gateway) to the audit topic."""

    def __init__(self, producer: Producer, topology: Topology, schemas: SchemaSet, source: str) -> None:
        self._producer = producer
        self._topic = topology.topic(AUDIT_TOPIC)
        self._schemas = schemas
        self._source = source

    @property
    def topic(self) -> str:
        return self._topic

    def record(self, principal: Principal, action: str, target_id: str, outcome: str, detail: str = "") -> dict[str, Any]:
        """Produce one record of ``principal`` doing ``action`` to ``target_id`` (not flushed:
        the caller's producer delivers it with its other records); returns it."""
        record = audit_record(tenant_id=principal.tenant_id, subject=principal.subject, action=action,
                              target_id=target_id, outcome=outcome, source=self._source, detail=detail)
        key, value = encode_audit(self._schemas, record)
        self._producer.produce(self._topic, value=value, key=key)
        return record
