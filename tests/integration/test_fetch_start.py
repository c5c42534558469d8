"""A worker whose first OffsetFetch after an assignment is refused with NOT_COORDINATOR for the
whole request still fetches its partitions, from the group's committed offsets
(runtime/fetch_start.py). Left to librdkafka, such a refusal leaves the partitions assigned
and never fetched (confluentinc/librdkafka#5586). On a real broker, behind
tests/integration/coordinator_refuser.py, which refuses the request as a moved coordinator."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from agentstream.runtime import MessageContext, Processor

from .coordinator_refuser import CoordinatorRefuser
from .harness import create_topics, wait_for

PARTITIONS = 2
RECORDS_EACH = 3
COMMITTED = 1  # the group has handled each partition's first record
REFUSALS = 2  # the worker's own lookup is refused twice, then answered


def _written_and_committed(bootstrap: str, topic: str, group: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition in range(PARTITIONS):
        for n in range(RECORDS_EACH):
            producer.produce(topic, f"{partition}-{n}".encode(), partition=partition)
    assert producer.flush(30) == 0
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committer.commit(offsets=[TopicPartition(topic, p, COMMITTED) for p in range(PARTITIONS)], asynchronous=False)
    finally:
        committer.close()


# "auto" is what the workers run: KIP-848 on Apache Kafka (where CI met the stall), the
# classic protocol on Tansu (so there both cases are classic).
@pytest.mark.parametrize("group_protocol", ["classic", "auto"])
def test_a_refused_offset_fetch_after_an_assignment_leaves_no_partition_unfetched(
    bootstrap: str, unique: str, tmp_path: Path, group_protocol: str
) -> None:
    topic = group = f"fetch-start-{unique}"
    create_topics(bootstrap, [topic], partitions=PARTITIONS)
    _written_and_committed(bootstrap, topic, group)
    refuser = CoordinatorRefuser(bootstrap)
    refuser.refuse(group, times=REFUSALS)
    app = Processor(group, refuser.bootstrap, group, tmp_path / "state", group_protocol=group_protocol)
    handled: list[tuple[int, int]] = []

    @app.handler(topic)
    async def on_record(value: bytes, ctx: MessageContext) -> None:
        handled.append((ctx.partition, ctx.offset))

    runner = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    runner.start()
    try:
        expected = {(p, n) for p in range(PARTITIONS) for n in range(COMMITTED, RECORDS_EACH)}
        wait_for(lambda: set(handled) >= expected, 60, "every record after the committed offsets to be handled")
    finally:
        app.stop()
        runner.join(60)
        refuser.close()
    assert not runner.is_alive()
    assert refuser.misread == [] and refuser.refused == REFUSALS
    # The refused lookups and the answered one were the worker's own (runtime/fetch_start.py);
    # librdkafka, given the offsets, asked nothing (a fallback to its lookup would be one more).
    assert refuser.offset_fetches == {group: REFUSALS + 1}
    assert sorted(handled) == sorted(expected)  # from the committed offsets, each once
