"""Records produced by a caller that may block (the CLI, the Kafka client, an approval's,
a cancel's or a rollout control's operation), each waited for until the broker has
acknowledged it.

A producer's ``flush()`` tells how many records are still queued, not whether the broker
took them: a refused record (no write access, over the topic's size) leaves the queue as
an acknowledged one does, and only its delivery report says so. And when callers on
several threads share a producer (the Kafka client's AsyncClient), a flush waits for all
of their records and may serve another's reports. So each record gets a ``Delivery`` of its
own, and ``acknowledged`` polls until exactly the caller's are reported.

Their producers give a record up after ``DELIVERY_TIMEOUT_MS`` (``producer_settings``),
not librdkafka's 300 s, so a caller told "not acknowledged" after ``ACK_TIMEOUT_S`` knows
the record will not land later: sending it again with the same id cannot make two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from agentstream.runtime.delivery import not_acknowledged
from agentstream.runtime.errors import CheckpointError

DELIVERY_TIMEOUT_MS = 30_000  # the producer reports a record failed after this rather than try on
ACK_TIMEOUT_S = DELIVERY_TIMEOUT_MS / 1000 + 5.0  # a caller's wait: the report of a record given up comes first
_POLL_S = 0.05


def producer_settings() -> dict[str, Any]:
    """The overrides of clients.producer_config for a blocking caller's producer."""
    return {"delivery.timeout.ms": DELIVERY_TIMEOUT_MS}


class Delivery:
    """The delivery report of one record: pass ``report`` as its ``on_delivery``."""

    def __init__(self) -> None:
        self._reported = threading.Event()
        self.error: CheckpointError | None = None  # the broker's error as its cause (runtime/delivery.py)

    def report(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.error = not_acknowledged(err, msg)
        self._reported.set()

    @property
    def reported(self) -> bool:
        return self._reported.is_set()


def acknowledged(producer: Producer, deliveries: Sequence[Delivery], timeout_s: float, what: str) -> None:
    """Send ``producer``'s queue now and poll until each of ``deliveries`` is reported
    (``what``: the records, for the error). CheckpointError when one was refused (from the
    broker's error: retry/classify.py and broker_refusal.py tell an outage from a refusal
    for good) or not reported within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    producer.flush(0)  # no linger for what is queued: the caller waits for it
    while not all(delivery.reported for delivery in deliveries) and (left := deadline - time.monotonic()) > 0:
        producer.poll(min(_POLL_S, left))  # serves any caller's reports; another thread may serve ours
    refused = next((delivery.error for delivery in deliveries if delivery.error is not None), None)
    if refused is not None:
        raise CheckpointError(f"{what}: {refused}") from refused
    late = sum(not delivery.reported for delivery in deliveries)
    if late:
        raise CheckpointError(f"{what}: {late} of {len(deliveries)} not acknowledged within {timeout_s:.0f} s "
                              "(is the broker up?)")
