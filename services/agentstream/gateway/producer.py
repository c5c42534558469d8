"""The gateway's producer: ``await send(...)`` returns once the broker acknowledged the
record (runtime/delivery.py), without blocking the event loop; a thread of its own serves
the producer's delivery callbacks (a worker serves them on its event loop's thread:
runtime/delivery_pump.py)."""

from __future__ import annotations

import threading

from confluent_kafka import Producer

from agentstream.blocking_send import producer_settings
from agentstream.clients import producer_config
from agentstream.runtime.delivery import produce_acked
from agentstream.telemetry import tracing


class AsyncProducer:
    def __init__(self, bootstrap: str) -> None:
        # A request fails after blocking_send.DELIVERY_TIMEOUT_MS rather than hang, and a record
        # not acknowledged by then will not land later (a retry with the same key makes no second).
        self._producer = Producer(producer_config(bootstrap, producer_settings()))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="gateway-producer", daemon=True)
        self._thread.start()

    @property
    def raw(self) -> Producer:
        """The confluent-kafka producer, for records whose acknowledgement nobody awaits (audit)."""
        return self._producer

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    async def send(self, topic: str, value: bytes, key: str) -> int:
        """Produce and wait for the acknowledgement; the record's offset (CheckpointError if refused).
        The record carries the current trace (a PRODUCER span), as every worker's records do."""
        with tracing.producing(topic, None, None) as traced:
            offset = await produce_acked(self._producer, topic, value, key, headers=traced.headers)
            traced.landed(offset)
            return offset

    def close(self) -> None:
        self._producer.flush(10)
        self._stopping.set()
        self._thread.join(5)
