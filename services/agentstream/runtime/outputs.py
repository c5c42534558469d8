"""A processor's plain outputs (``Processor.send``): each produced with the delivery
report that counts it for the next checkpoint (its source offsets are committed only
once every output produced before has been acknowledged: runtime/checkpointing.py),
inside a PRODUCER span when tracing is on. A retry sent to a retry tier's partition also
tells IdleTiers (runtime/idle_tiers.py), so that partition is fetched until the retry
has been read; its report tells it where the retry landed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from confluent_kafka import KafkaError, Message, Producer

from agentstream.runtime.delivery_pump import wait_for_room
from agentstream.runtime.idle_tiers import IdleTiers
from agentstream.telemetry import tracing

Report = Callable[[KafkaError | None, Message], None]
Headers = list[tuple[str, bytes]]


class Outputs:
    """Sends one processor's outputs on its producer (``producer()``: raises before the
    processor runs)."""

    def __init__(self, producer: Callable[[], Producer], on_delivery: Report) -> None:
        self._producer = producer
        self._on_delivery = on_delivery  # the checkpoints' count of outputs still unacknowledged
        self.tiers: IdleTiers | None = None  # set once the processor knows its retry tiers (Processor._start)

    def send(self, topic: str, value: bytes | None, key: str | bytes | None, partition: int | None,
             headers: Headers | None) -> None:
        producer = self._producer()
        target = -1 if partition is None else partition  # -1: the partitioner decides
        tiers = self.tiers
        to_tier = tiers is not None and topic in tiers.topics
        report = partial(self._on_tier_delivery, counted=partition is not None) if to_tier else self._on_delivery
        if not tracing.enabled():  # the default: no span, and the caller's headers as they are
            produce(producer, topic, value, key, target, headers, report)
        else:
            with tracing.producing(topic, partition, headers) as traced:  # PRODUCER span, traceparent header
                produce(producer, topic, value, key, target, traced.headers, report)
        if to_tier:  # a retry: its partition is fetched until the consumer took it (no report served before this)
            assert tiers is not None
            tiers.sent(topic, partition)

    def _on_tier_delivery(self, err: KafkaError | None, msg: Message, *, counted: bool) -> None:
        topic, partition = msg.topic(), msg.partition()
        assert self.tiers is not None and topic is not None and partition is not None  # a report names its record's
        self.tiers.delivered(topic, partition, None if err is not None else msg.offset(), counted=counted)
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
