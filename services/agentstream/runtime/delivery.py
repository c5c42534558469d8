"""Sending one record and awaiting the broker's acknowledgement from asyncio.

librdkafka reports deliveries on whichever thread serves the producer. A worker's
processor serves them on the event loop's own thread (runtime/delivery_pump.py), where each
is settled at once. Served by another thread (the gateway's producer), the reports are
handed to the event loop that is waiting for them in batches: the first report of a batch
wakes the loop (one ``call_soon_threadsafe``, one byte in asyncio's self-pipe), later ones
only join the batch until the loop settles it. One wake-up per acknowledged record cost a
handle and a pipe write each, and under load filled the self-pipe.

A write may carry a ``landed`` hook, run with the record's offset as its report is settled,
before the awaiting coroutine is woken, and also when nobody awaits it any more: a writer
cancelled while its record was on its way (a run stopped at its wall-clock limit mid-write)
left a record in the changelog all the same, and a store that skipped it while storing
later offsets would never restore it (the hook itself declines a store no longer the
partition's: runtime/write_through.py _store_landed). Not once the event loop has closed:
a report served after that (a flush on its thread when the processor has ended) is dropped
with its hook, as the stores are closed by then and nothing is stored after it. A batch is settled in the order
librdkafka reported it; the coroutines resume in another order (one awaiting through
``gather`` an iteration later than one awaiting its future). The processor stores a write-through record in its
hook: a store records the highest changelog offset it holds, and a later offset stored
before an earlier one left, for a kill -9 in between, a store at that offset without the
earlier write (never restored). That order is the offsets' because one thread serves a
processor's reports (two threads may hand a partition's reports over out of order), and
because the records of writes with a hook are produced to a partition one write at a time:
a write retried on a full queue (BufferError) waits with the partition's turn held, so no
other write takes an offset between its records.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from agentstream.runtime.errors import CheckpointError

log = logging.getLogger(__name__)

# A delivery report's error is never marked retriable (librdkafka has given up on the record
# by then), so the retry chain would take every refused write for a permanent failure. These
# codes say the cluster was out of reach or between leaders for the whole of
# message.timeout.ms: the same write may well land later, so they are marked retriable.
WORTH_WAITING = frozenset({
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.NETWORK_EXCEPTION,
    KafkaError.KAFKA_STORAGE_ERROR,
})

Landed = Callable[[int], None]  # run with the record's offset once the broker has it
_Report = tuple["asyncio.Future[int]", "Landed | None", "KafkaError | None", Message]


class _Deliveries:
    """The delivery reports awaited on one event loop, settled there in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: ``_per_loop`` keys on the loop, and a strong reference here would keep every
        # loop (and its entry) alive for ever.
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()  # reports arrive on a serving thread and on flush()'s
        self._reports: list[_Report] = []
        self._thread = threading.get_ident()  # the loop's (made there: _produce)
        self._turns: dict[tuple[str, int], asyncio.Lock] = {}

    def turn(self, topic: str, partition: int) -> asyncio.Lock:
        """Held while one write with a hook produces its records to ``topic[partition]``
        (module docstring)."""
        lock = self._turns.get((topic, partition))
        if lock is None:
            lock = self._turns[(topic, partition)] = asyncio.Lock()
        return lock

    def report(self, future: asyncio.Future[int], landed: Landed | None, err: KafkaError | None, msg: Message) -> None:
        """A delivery callback (any thread). On the loop's own thread (a worker's reports:
        runtime/delivery_pump.py) it is settled at once."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            return  # nobody is left to await the report (a flush after the loop ended)
        if threading.get_ident() == self._thread:
            _settle(future, landed, err, msg)
            return
        with self._lock:
            self._reports.append((future, landed, err, msg))
            if len(self._reports) > 1:
                return  # the loop is woken already and settles this report with the others
        loop.call_soon_threadsafe(self._settle_all)

    def _settle_all(self) -> None:
        with self._lock:
            reports, self._reports = self._reports, []
        for future, landed, err, msg in reports:
            _settle(future, landed, err, msg)


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
    landed: Landed | None = None,
) -> int:
    """Produce and wait for the acknowledgement; return the offset, or raise CheckpointError.
    ``landed``: run with the offset as the report is settled (module docstring); what it
    raises is raised here."""
    if landed is None:
        return await (await _produce(producer, topic, value, key, partition, headers))
    if partition is None:
        raise ValueError(f"A write to {topic} with a landed hook needs its partition (the hook's store is one partition's).")
    async with _deliveries(asyncio.get_running_loop()).turn(topic, partition):
        acked = await _produce(producer, topic, value, key, partition, headers, landed)
    return await acked


async def produce_all_acked(
    producer: Producer, topic: str, records: list[tuple[bytes | None, bytes | None]], partition: int,
    landed: Landed | None = None,
) -> list[int]:
    """Produce ``(value, key)`` records to one partition, in order, and wait until every one
    is acknowledged; their offsets, or CheckpointError. With the idempotent producer
    (clients.py) they land in this order, so a later one landing means the earlier ones did,
    unless an earlier one timed out (message.timeout.ms): librdkafka may leave a gap then.
    ``landed``: run with the last record's offset once every record has landed, as the
    report that completes them is settled (whichever thread served which report), also
    when the writer was cancelled meanwhile; never if one was refused."""
    pending: list[asyncio.Future[int]] = []
    together = _AllLanded(len(records), landed) if landed is not None else None
    async with _deliveries(asyncio.get_running_loop()).turn(topic, partition):
        for n, (value, key) in enumerate(records):
            hook = partial(together.one_landed, n) if together is not None else None
            pending.append(await _produce(producer, topic, value, key, partition, landed=hook))
    outcomes = await asyncio.gather(*pending, return_exceptions=True)  # every report read: none left unretrieved
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]


class _AllLanded:
    """The hooks of a write's records: ``landed`` runs, with the last record's offset, in
    the settling of the report that completes the set (reports are settled on the loop's
    thread, one at a time). A refused record never lands: the write's hook never runs."""

    def __init__(self, count: int, landed: Landed) -> None:
        self._left = count
        self._last = count - 1
        self._last_offset = -1
        self._landed = landed

    def one_landed(self, index: int, offset: int) -> None:
        self._left -= 1
        if index == self._last:
            self._last_offset = offset
        if self._left == 0:
            self._landed(self._last_offset)


async def _produce(
    producer: Producer, topic: str, value: bytes | None, key: str | bytes | None, partition: int | None,
    headers: list[tuple[str, bytes]] | None = None, landed: Landed | None = None,
) -> asyncio.Future[int]:
    """Produce one record; the future its delivery report settles."""
    loop = asyncio.get_running_loop()
    acked: asyncio.Future[int] = loop.create_future()
    delivered = partial(_deliveries(loop).report, acked, landed)
    while True:
        try:
            producer.produce(topic, value, key, -1 if partition is None else partition, delivered, headers=headers)
            return acked
        except BufferError:  # the local queue is full: let deliveries drain it
            await asyncio.sleep(0.01)


def _settle(future: asyncio.Future[int], landed: Landed | None, err: KafkaError | None, msg: Message) -> None:
    """Settle one report: its hook first if it landed, awaited or not (module docstring);
    then its future, unless its awaiter was cancelled."""
    if err is not None:
        if not future.done():
            future.set_exception(not_acknowledged(err, msg))
        return
    offset = msg.offset()
    if landed is not None:
        try:
            landed(offset)
        except Exception as exc:  # the awaiter gets it, as if it had run the hook itself
            if future.done():
                log.error("A write to %s[%d] landed at offset %d after its writer was cancelled, and its hook "
                          "failed: %s", msg.topic(), msg.partition(), offset, exc, exc_info=exc)
            else:
                future.set_exception(exc)
            return
    if not future.done():
        future.set_result(offset)


def not_acknowledged(err: KafkaError, msg: Message) -> CheckpointError:
    """The error of a write whose record ``msg`` the broker did not acknowledge, with the
    broker's error as its cause, retriable when waiting may help (WORTH_WAITING): the retry
    chain classifies by it (retry/classify.py), so a write that timed out in an outage goes
    to a retry tier, not to the DLQ, while one the broker refuses (a record too large) still
    fails at once."""
    where = f"{msg.topic()}[{msg.partition()}]"
    error = CheckpointError(f"write to {where} was not acknowledged: {err}")
    try:  # the write it names: a dead letter's message is the cause's (retry/classify.py deciding_error)
        fatal = err.fatal()
        cause = KafkaError(err.code(), f"{err.str()} (write to {where})", fatal=fatal,
                           retriable=err.code() in WORTH_WAITING and not fatal)
    except Exception:  # never fail the settling of a report: without a cause, the write counts as refused for good
        log.exception("The error of a write to %s could not be read: %r", where, err)
        return error
    error.__cause__ = KafkaException(cause)
    return error
