"""Sending one record and awaiting the broker's acknowledgement from asyncio.

librdkafka reports deliveries on whichever thread serves the producer; the reports are
handed to the event loop that is waiting for them in batches: the first report of a batch
wakes the loop (one ``call_soon_threadsafe``, one byte in asyncio's self-pipe), later ones
only join the batch until the loop settles it. One wake-up per acknowledged record cost a
handle and a pipe write each, and under load filled the self-pipe.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from functools import partial

from confluent_kafka import KafkaError, Message, Producer

from agentstream.runtime.errors import CheckpointError

_Report = tuple["asyncio.Future[int]", "KafkaError | None", Message]


class _Deliveries:
    """The delivery reports awaited on one event loop, settled there in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: ``_per_loop`` keys on the loop, and a strong reference here would keep every
        # loop (and its entry) alive for ever.
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()  # reports arrive on the delivery thread and on flush()'s
        self._reports: list[_Report] = []

    def report(self, future: asyncio.Future[int], err: KafkaError | None, msg: Message) -> None:
        """A delivery callback (any thread)."""
        with self._lock:
            self._reports.append((future, err, msg))
            if len(self._reports) > 1:
                return  # the loop is woken already and settles this report with the others
        loop = self._loop()
        if loop is not None and not loop.is_closed():  # else nobody is left to await the report
            loop.call_soon_threadsafe(self._settle_all)

    def _settle_all(self) -> None:
        with self._lock:
            reports, self._reports = self._reports, []
        for future, err, msg in reports:
            _settle(future, err, msg)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deliveries] = weakref.WeakKeyDictionary()


def _deliveries(loop: asyncio.AbstractEventLoop) -> _Deliveries:
    deliveries = _per_loop.get(loop)
    if deliveries is None:
        deliveries = _per_loop[loop] = _Deliveries(loop)
    return deliveries


async def produce_acked(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: str | bytes | None,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Produce and wait for the acknowledgement; return the offset, or raise CheckpointError."""
    return await (await _produce(producer, topic, value, key, partition, headers))


async def produce_all_acked(
    producer: Producer, topic: str, records: list[tuple[bytes | None, bytes | None]], partition: int,
) -> list[int]:
    """Produce ``(value, key)`` records to one partition, in order, and wait until every one
    is acknowledged; their offsets, or CheckpointError. With the idempotent producer
    (clients.py) they land in this order, so a later one landing means the earlier ones did."""
    pending = [await _produce(producer, topic, value, key, partition) for value, key in records]
    outcomes = await asyncio.gather(*pending, return_exceptions=True)  # every report read: none left unretrieved
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]


async def _produce(
    producer: Producer, topic: str, value: bytes | None, key: str | bytes | None, partition: int | None,
    headers: list[tuple[str, bytes]] | None = None,
) -> asyncio.Future[int]:
    """Produce one record; the future its delivery report settles."""
    loop = asyncio.get_running_loop()
    acked: asyncio.Future[int] = loop.create_future()
    delivered = partial(_deliveries(loop).report, acked)
    while True:
        try:
            producer.produce(topic, value, key, -1 if partition is None else partition, delivered, headers=headers)
            return acked
        except BufferError:  # the local queue is full: let deliveries drain it
            await asyncio.sleep(0.01)


def _settle(future: asyncio.Future[int], err: KafkaError | None, msg: Message) -> None:
    if future.done():
        return
    if err is not None:
        future.set_exception(CheckpointError(f"write to {msg.topic()}[{msg.partition()}] was not acknowledged: {err}"))
    else:
        future.set_result(msg.offset())
