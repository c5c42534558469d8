"""Audit records (tenancy/audit.py): what the gateway's AuditLog produces, and its key."""

from __future__ import annotations

from agentstream.serde import SchemaSet
from agentstream.tenancy import ACCEPTED, AUDIT_TOPIC, TASK_SUBMIT, AuditLog, Principal, audit_record, encode_audit
from agentstream.topology import load_topology

SCHEMAS = SchemaSet.load()


class Produced:
    """A producer that keeps what it is given (AuditLog needs only produce)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None]] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> None:
        self.records.append((topic, value, key))


def test_audit_log_produces_an_avro_record_keyed_by_tenant() -> None:
    topology = load_topology(prefix="t1")
    producer = Produced()
    log = AuditLog(producer, topology, SCHEMAS, source="gateway")
    principal = Principal("acme", "key:ci", frozenset({"submitter"}))
    record = log.record(principal, TASK_SUBMIT, "task-1", ACCEPTED, detail="idempotency key reused")
    [(topic, value, key)] = producer.records
    assert (topic, key) == (topology.topic(AUDIT_TOPIC), b"acme") == ("t1.audit.v1", b"acme")
    assert value is not None and SCHEMAS.decode_as("AuditRecord", value) == record
    assert {k: record[k] for k in ("tenant_id", "subject", "action", "target_id", "outcome", "source")} == {
        "tenant_id": "acme", "subject": "key:ci", "action": "task.submit", "target_id": "task-1",
        "outcome": "accepted", "source": "gateway"}


def test_a_secret_in_a_detail_never_reaches_the_topic() -> None:
    record = audit_record(tenant_id="acme", subject="alice", action="task.cancel", target_id="t", outcome="refused",
                          source="gateway", detail="sent Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc and api_key=sk-live-12345678")
    assert "eyJ" not in record["detail"] and "sk-live" not in record["detail"]
    assert "[REDACTED]" in record["detail"]
    key, value = encode_audit(SCHEMAS, record)
    assert key == b"acme" and SCHEMAS.decode_as("AuditRecord", value) == record
