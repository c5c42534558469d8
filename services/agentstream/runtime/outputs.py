"""A processor's plain outputs (``Processor.send``): each produced with the delivery
report that counts it for the next checkpoint (its source offsets are committed only
once every output produced before has been acknowledged: runtime/checkpointing.py),
inside a PRODUCER span when tracing is on. A record sent to one of the processor's own
partitions that may be paused (a retry to a retry tier's, most often) also tells
IdlePartitions (runtime/idle_partitions.py), so that partition is fetched until the
record has been read; its report tells it where the record landed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from confluent_kafka import KafkaError, Message, Producer

from agentstream.runtime.delivery_pump import wait_for_room
from agentstream.runtime.idle_partitions import IdlePartitions
from agentstream.telemetry import tracing

Report = Callable[[KafkaError | None, Message], None]
Headers = list[tuple[str, bytes]]


class Outputs:
    """Sends one processor's outputs on its producer (``producer()``: raises before the
    processor runs)."""

    def __init__(self, producer: Callable[[], Producer], on_delivery: Report) -> None:
        self._producer = producer
        self._on_delivery = on_delivery  # the checkpoints' count of outputs still unacknowledged
        self.idle: IdlePartitions | None = None  # set once the processor knows what it may pause (Processor._start)

    def send(self, topic: str, value: bytes | None, key: str | bytes | None, partition: int | None,
             headers: Headers | None) -> None:
        producer = self._producer()
        target = -1 if partition is None else partition  # -1: the partitioner decides
        idle = self.idle
        to_own = idle is not None and topic in idle.topics
        report = partial(self._on_own_delivery, counted=partition is not None) if to_own else self._on_delivery
        if not tracing.enabled():  # the default: no span, and the caller's headers as they are
            produce(producer, topic, value, key, target, headers, report)
        else:
            with tracing.producing(topic, partition, headers) as traced:  # PRODUCER span, traceparent header
                produce(producer, topic, value, key, target, traced.headers, report)
        if to_own:  # a retry, say: its partition is fetched until the consumer took it (no report served before this)
            assert idle is not None
            idle.sent(topic, partition)

    def _on_own_delivery(self, err: KafkaError | None, msg: Message, *, counted: bool) -> None:
        topic, partition = msg.topic(), msg.partition()
        assert self.idle is not None and topic is not None and partition is not None  # a report names its record's
        self.idle.delivered(topic, partition, None if err is not None else msg.offset(), counted=counted)
        self._on_delivery(err, msg)


def produce(producer: Producer, topic: str, value: bytes | None, key: str | bytes | None, partition: int,
            headers: Headers | None, report: Report) -> None:
    """``producer.produce``, waiting for room while its local queue is full (served reports free it)."""
    while True:
        try:
            producer.produce(topic, value, key, partition, report, headers=headers)
            return
        except BufferError:
            wait_for_room(producer)
