"""What a service remembers between records (service.py): the physical topic names and
the headers of what it emits, which must follow the topology and its behavior version."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.errors import ConfigurationError
from agentstream.serde import SchemaSet
from agentstream.service import BEHAVIOR_VERSION_HEADER, Service
from agentstream.settings import WorkerSettings
from agentstream.topology import DEFAULT_PATH, parse_topology

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


@pytest.fixture(scope="module")
def service() -> Service:
    topology = parse_topology(DEFAULT_PATH.read_text(encoding="utf-8"), DEFAULT_PATH, prefix="unit")
    return Service.build("billing", WorkerSettings(bootstrap="localhost:9092"), topology, SchemaSet.load(SCHEMAS_DIR))


def test_a_topic_is_the_topologys_name_for_it_every_time(service: Service) -> None:
    for logical in ("task_events", "results", "task_events"):
        assert service.topic(logical) == service.topology.topic(logical)
    assert service.topic("task_events").startswith("unit.")


def test_an_unknown_topic_is_refused_every_time(service: Service) -> None:
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="Unknown topic 'task_event'"):
            service.topic("task_event")


def test_the_headers_follow_the_behavior_version() -> None:
    topology = parse_topology(DEFAULT_PATH.read_text(encoding="utf-8"), DEFAULT_PATH)
    billing = Service.build("billing", WorkerSettings(bootstrap="localhost:9092"), topology, SchemaSet.load(SCHEMAS_DIR))
    assert billing.headers() is None
    billing.behavior_version = "v1"
    assert billing.headers() == [(BEHAVIOR_VERSION_HEADER, b"v1")]
    assert billing._shared_headers() is billing._shared_headers(), "built once per version"
    assert billing.headers() is not billing.headers(), "each caller gets a list of its own"
    billing.behavior_version = "v2"
    assert billing.headers() == [(BEHAVIOR_VERSION_HEADER, b"v2")]
    billing.behavior_version = ""
    assert billing.headers() is None


def test_a_set_linger_reaches_the_workers_producer() -> None:
    from agentstream.clients import LINGER

    topology = parse_topology(DEFAULT_PATH.read_text(encoding="utf-8"), DEFAULT_PATH)
    schemas = SchemaSet.load(SCHEMAS_DIR)
    unset = Service.build("billing", WorkerSettings(bootstrap="localhost:9092"), topology, schemas)
    assert LINGER not in unset.processor._producer_overrides  # clients.PRODUCER's default holds
    at_once = Service.build("billing", WorkerSettings(bootstrap="localhost:9092", linger_ms=0), topology, schemas)
    assert at_once.processor._producer_overrides == {LINGER: 0}


def test_a_set_flush_timeout_reaches_the_workers_checkpoints() -> None:
    topology = parse_topology(DEFAULT_PATH.read_text(encoding="utf-8"), DEFAULT_PATH)
    patient = WorkerSettings(bootstrap="localhost:9092", flush_timeout_s=90, health_stall_s=90)
    service = Service.build("billing", patient, topology, SchemaSet.load(SCHEMAS_DIR))
    assert service.processor.flush_timeout == 90
