"""Sending one record and awaiting the broker's acknowledgement from asyncio.

librdkafka reports deliveries on whichever thread serves the producer; the report is
handed to the event loop that is waiting for it.
"""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError, Message, Producer

from agentstream.runtime.errors import CheckpointError


async def produce_acked(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: str | bytes | None,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Produce and wait for the acknowledgement; return the offset, or raise CheckpointError."""
    loop = asyncio.get_running_loop()
    acked: asyncio.Future[int] = loop.create_future()

    def delivered(err: KafkaError | None, msg: Message) -> None:
        loop.call_soon_threadsafe(_settle, acked, err, msg)

    while True:
        try:
            producer.produce(topic, value, key, -1 if partition is None else partition, delivered, headers=headers)
            break
        except BufferError:  # the local queue is full: let deliveries drain it
            await asyncio.sleep(0.01)
    return await acked


def _settle(future: asyncio.Future[int], err: KafkaError | None, msg: Message) -> None:
    if future.done():
        return
    if err is not None:
        future.set_exception(CheckpointError(f"write to {msg.topic()}[{msg.partition()}] was not acknowledged: {err}"))
    else:
        future.set_result(msg.offset())
