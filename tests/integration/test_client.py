"""The client a downstream user reads results with (agentstream.client.Follower): what it
cannot decode is counted and logged with topic[partition]@offset, or raised if asked."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Producer

from agentstream.client import Follower, SkippedRecordError, new_task
from agentstream.clients import producer_config
from agentstream.events import TASK_SUBMITTED
from agentstream.serde import SchemaSet

from .harness import create_topics


@pytest.fixture
def topic(bootstrap: str, unique: str) -> str:
    """One partition: a good record, bytes that are not Avro, a null value, a good record."""
    name = f"client-{unique}"
    create_topics(bootstrap, [name], partitions=1)
    schemas = SchemaSet.load()
    good = schemas.encode(TASK_SUBMITTED, new_task("hello", "s-1", task_id="t-1"))
    producer = Producer(producer_config(bootstrap))
    for value in (good, b"\x00\xffnot avro", None, good):
        producer.produce(name, value, b"s-1")
    assert producer.flush(30) == 0
    return name


def test_skipped_records_are_counted_and_logged_where_they_are(
    bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    follower = Follower(bootstrap, [topic], SchemaSet.load(), from_beginning=True)
    try:
        with caplog.at_level(logging.WARNING, logger="agentstream.client"):
            records = follower.backlog()
    finally:
        follower.close()
    assert [(name, record["task_id"]) for _, name, record in records] == [(TASK_SUBMITTED, "t-1")] * 2
    assert (follower.skipped, follower.errors) == (2, 0)
    assert f"skipped {topic}[0]@1: not decodable (NotAvroError: " in caplog.text
    assert f"skipped {topic}[0]@2: a null value (tombstone), not a record" in caplog.text


def test_a_strict_follower_raises_at_the_first_skipped_record(bootstrap: str, topic: str) -> None:
    follower = Follower(bootstrap, [topic], SchemaSet.load(), from_beginning=True, strict=True)
    try:
        with pytest.raises(SkippedRecordError, match=rf"^skipped {topic}\[0\]@1: not decodable \(NotAvroError"):
            follower.backlog()
    finally:
        follower.close()


def test_a_follower_reads_a_topic_created_a_moment_ago(bootstrap: str, unique: str) -> None:
    """Right after `topology apply` (or dev's start) a partition may have no leader yet:
    ListOffsets answers NOT_LEADER_FOR_PARTITION, which is asked again, not an error."""
    for n in range(5):
        name = f"fresh-{unique}-{n}"
        create_topics(bootstrap, [name])
        follower = Follower(bootstrap, [name], SchemaSet.load())
        try:
            assert follower.backlog() == []
        finally:
            follower.close()
