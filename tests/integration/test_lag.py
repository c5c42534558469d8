"""Consumer lag (runtime/lag.py) on a real broker while the group keeps committing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from agentstream.clients import producer_config
from agentstream.runtime import lag

from .harness import create_topics


def _produce_and_commit(bootstrap: str, topic: str, group: str) -> None:
    """One more record, and the group's offset moved past it: a worker that keeps up."""
    producer = Producer(producer_config(bootstrap))
    producer.produce(topic, b"x", b"k", partition=0)
    assert producer.flush(30) == 0
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        (_, end) = member.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        member.commit(offsets=[TopicPartition(topic, 0, end)], asynchronous=False)
    finally:
        member.close()


def test_lag_is_never_negative_when_the_group_commits_during_the_reading(
    bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, group = f"lag-{unique}", f"lag-g-{unique}"
    create_topics(bootstrap, [topic], partitions=1)
    _produce_and_commit(bootstrap, topic, group)
    real_end_offsets = lag.end_offsets

    def group_moves_on(address: str, topics: Sequence[str], timeout: float = 30.0) -> dict[tuple[str, int], int]:
        ends = real_end_offsets(address, topics, timeout)
        _produce_and_commit(bootstrap, topic, group)  # between the two reads of consumer_lag
        return ends

    monkeypatch.setattr(lag, "end_offsets", group_moves_on)
    (row,) = lag.consumer_lag(bootstrap, group, [topic])
    # A lag read while a worker commits may be stale by what arrived meanwhile, never below 0
    # (the soak saw -1: the ends were read before the commits that passed them).
    assert row.committed is not None and row.lag >= 0, row
