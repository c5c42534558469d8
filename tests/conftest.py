"""Shared fixtures. Integration tests always get a real broker; none skips for want of one.

Order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else testcontainers Apache Kafka (KRaft) when a
Docker engine answers; else Apache Kafka 4 started from its Maven artifacts where ``java``
and ``mvn`` exist; else the embedded Tansu broker. ``AGENTSTREAM_BROKER=tansu`` (or
``kafka``) picks the broker to start instead; CI runs the suite once on each.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from agentstream.apache_kafka import java_and_maven_present
from agentstream.broker import BOOTSTRAP_ENV, KAFKA, TANSU, bootstrap_servers, broker_to_start, wait_until_answers
from agentstream.settings import BROKER_ENV


def _docker_answers() -> bool:
    try:
        import docker  # installed with testcontainers

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    if not os.environ.get(BOOTSTRAP_ENV) and not os.environ.get(BROKER_ENV) and _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            address = kafka.get_bootstrap_server()
            wait_until_answers(address)
            yield address
        return
    with bootstrap_servers(broker_to_start(KAFKA if java_and_maven_present() else TANSU)) as address:
        yield address


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and session names of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def kafka_bootstrap(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Apache Kafka broker: the session's broker if it is one, else a 1-node cluster started
    here (tests of compaction and config changes need what Tansu does not do)."""
    from agentstream.broker import is_tansu

    if not is_tansu(bootstrap):
        yield bootstrap
        return
    from agentstream.apache_kafka import KafkaCluster

    with KafkaCluster(tmp_path_factory.mktemp("kafka")) as cluster:
        yield cluster.bootstrap
