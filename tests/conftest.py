"""Shared fixtures. Integration tests always get a real broker; none skips for want of one.

Order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else testcontainers Apache Kafka (KRaft)
when a Docker engine answers; else the embedded Tansu broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from agentstream.broker import BOOTSTRAP_ENV, bootstrap_servers, wait_until_answers


def _docker_answers() -> bool:
    try:
        import docker  # installed with testcontainers

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    if not os.environ.get(BOOTSTRAP_ENV) and _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            address = kafka.get_bootstrap_server()
            wait_until_answers(address)
            yield address
        return
    with bootstrap_servers() as address:
        yield address


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and session names of one test."""
    return uuid.uuid4().hex[:10]
