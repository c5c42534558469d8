"""Records produced by a caller that may block (the CLI, the Kafka client, an approval's
or a cancel's operation), each waited for until the broker has acknowledged it.

A producer's ``flush()`` tells how many records are still queued, not whether the broker
took them: a refused record (no write access, over the topic's size) leaves the queue as
an acknowledged one does, and only its delivery report says so. And when callers on
several threads share a producer, one caller's flush may serve another's reports. So each
record gets a ``Delivery`` of its own, and ``acknowledged`` waits for exactly the caller's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from agentstream.runtime.delivery import not_acknowledged
from agentstream.runtime.errors import CheckpointError

ACK_TIMEOUT_S = 30.0  # a blocking caller's wait for the broker (librdkafka's request timeout is 30 s too)


class Delivery:
    """The delivery report of one record: pass ``report`` as its ``on_delivery``."""

    def __init__(self) -> None:
        self._reported = threading.Event()
        self.error: CheckpointError | None = None  # the broker's error as its cause (runtime/delivery.py)

    def report(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.error = not_acknowledged(err, msg)
        self._reported.set()

    def wait(self, timeout_s: float) -> bool:
        """Whether the report came within ``timeout_s``."""
        return self._reported.wait(timeout_s)


def acknowledged(producer: Producer, deliveries: Sequence[Delivery], timeout_s: float, what: str) -> None:
    """Flush ``producer`` and wait for the report of each of ``deliveries`` (``what``: the
    records, for the error). CheckpointError when one was refused (from the broker's error:
    retry/classify.py tells an outage from a refusal for good) or not reported in time."""
    deadline = time.monotonic() + timeout_s
    producer.flush(timeout_s)
    late = sum(not delivery.wait(max(0.0, deadline - time.monotonic())) for delivery in deliveries)
    refused = next((delivery.error for delivery in deliveries if delivery.error is not None), None)
    if refused is not None:
        raise CheckpointError(f"{what}: {refused}") from refused
    if late:
        raise CheckpointError(f"{what}: {late} of {len(deliveries)} not acknowledged within {timeout_s:.0f} s; "
                              "is the broker up?")
