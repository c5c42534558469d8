"""A worker's delivery reports served on its event loop's own thread, all that have come
in at once.

Why not a thread of their own (as until session 26): confluent-kafka runs each report's
Python callback with the GIL taken again for that one report. A thread serving them while
the event loop's thread runs Python waits for the GIL once per report, and it gets it
only when the loop's thread lets go of it (a blocking call, or the switch interval of
5 ms): with 5,000 agent loops of a 5 s model in one worker, whose loop ran for stretches
of 0.1-0.7 s, reports reached Python 30 ms (p50) to 390 ms (p90) after their record was
produced, against ~6 ms in a worker at rest (bench/RESULTS.md, session 26). On the
loop's thread one ``poll(0)`` serves every report that has arrived, with the GIL held,
and each is settled there and then (runtime/delivery.py), in the order librdkafka
reported them: one thread serves a producer's reports, as the order of a partition's
landed hooks needs.

Where: a worker's loop (``new_serving_loop``) serves them each time it wakes from its
select, before it runs what is ready, so a coroutine whose record was acknowledged runs in
that same pass of the loop; with records waiting, the select waits at most ``interval_s``.
Under load a pass of the loop runs hundreds of callbacks (0.1-0.7 s at 5,000 loops), and
a report settled by a callback queued behind them woke its writer a pass later. On a loop
made elsewhere (tests, an embedding app) a timer serves them every ``interval_s`` instead.
With no record waiting neither looks at all (an idle worker costs nothing), and the next
produce() starts it again (PumpedProducer).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import selectors
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from agentstream.errors import ConfigurationError
from agentstream.runtime.unreported import Report, Unreported

log = logging.getLogger(__name__)

# How often the loop serves reports while a record waits for one. A report comes ~2-6 ms
# after its produce() on loopback (the linger of 2 ms, then the broker's round trip), so
# 1 ms adds at most a millisecond to an acknowledgement and costs one timer and one
# poll(0) per millisecond, only while records are on their way.
DEFAULT_INTERVAL_S = 0.001
# How long a produce() refused with a full local queue (BufferError) waits before trying
# again. librdkafka counts a record in that queue until its report is served.
ROOM_WAIT_S = 0.05
# Producer settings that take records' delivery reports away from their own callbacks (a
# success reported to none, or to one callback for all), which the counts a checkpoint
# waits for (runtime/unreported.py) and every acknowledged write depend on.
_NEEDS_EVERY_REPORT = ("delivery.report.only.error", "on_delivery", "dr_cb", "dr_msg_cb")


class ServingSelector(selectors.DefaultSelector):
    """The selector of a worker's loop: serves its pumps' reports each time it wakes."""

    def __init__(self) -> None:
        super().__init__()
        self.pumps: list[DeliveryPump] = []

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        waiting = [pump for pump in self.pumps if pump.waiting]
        if waiting:
            timeout = min(pump.interval_s for pump in waiting) if timeout is None else min(timeout, *(
                pump.interval_s for pump in waiting))
        ready = super().select(timeout)
        for pump in waiting:
            pump.serve()
        return ready


_selectors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ServingSelector] = weakref.WeakKeyDictionary()


def new_serving_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose select serves the reports of the pumps made on it (a worker's)."""
    selector = ServingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    _selectors[loop] = selector
    return loop


class DeliveryPump:
    """Serves ``producer``'s delivery reports on ``loop`` (whose thread is ``loop_thread``)
    while any record waits for one; ``on_all_delivered`` runs whenever none is left. The
    callbacks need no task's context (they settle futures and run landed hooks): they run
    in the loop's own (its select), in the context the pump was made in (its timer: not
    that of the task whose produce() armed it, whose record's fields would tag the log
    lines of other records' reports), or, from make_room, in the task whose produce() was
    refused."""

    def __init__(
        self,
        producer: Producer,
        loop: asyncio.AbstractEventLoop,
        loop_thread: int,
        on_all_delivered: Callable[[], None],
        interval_s: float = DEFAULT_INTERVAL_S,
        name: str = "producer",
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._producer = producer
        self._loop = loop
        self._loop_thread = loop_thread
        self._on_all_delivered = on_all_delivered
        self.interval_s = interval_s
        self.name = name  # whose reports, in the log (a processor's name)
        self._timer: asyncio.TimerHandle | None = None
        self._context = contextvars.copy_context()  # the timer's (class docstring)
        self._closed = False
        self._selector = _selectors.get(loop)  # None: a loop made elsewhere, served by a timer
        if self._selector is not None:
            self._selector.pumps.append(self)

    @property
    def waiting(self) -> bool:
        """Whether a record waits for its report."""
        return not self._closed and len(self._producer) > 0

    @property
    def armed(self) -> bool:
        """Whether the loop will look for reports (records are waiting for theirs)."""
        return self.waiting if self._selector is not None else self._timer is not None

    def arm(self) -> None:
        """Make sure the reports of what was just produced will be served (any thread)."""
        if self._closed:
            return
        if threading.get_ident() != self._loop_thread:
            if self._selector is not None or self._timer is None:  # a stale read costs one more call
                self._loop.call_soon_threadsafe(self.arm)  # also wakes a loop asleep in its select
            return
        if self._selector is None and self._timer is None:
            self._timer = self._loop.call_later(self.interval_s, self._on_timer, context=self._context)
        # With a serving selector, the loop's next select sees the record waiting.

    def serve(self) -> None:
        """Serve every report that has come in (on the loop's thread)."""
        try:
            self._producer.poll(0)
        except Exception:  # a callback raised: the reports after it wait for the next pass, not for ever
            log.exception("%s: a delivery report's callback failed", self.name)
        if len(self._producer) == 0:
            self._on_all_delivered()

    def _on_timer(self) -> None:
        self._timer = None
        self.serve()
        if len(self._producer) > 0:
            self.arm()

    def make_room(self) -> None:
        """The local queue is full: wait up to ROOM_WAIT_S for reports to free it. On the
        loop's thread nothing else would serve them meanwhile (the pump is a callback of
        this loop), so they are served here, on the pump's thread: their order holds."""
        if threading.get_ident() == self._loop_thread and not self._closed:
            self._producer.poll(ROOM_WAIT_S)
        else:
            time.sleep(ROOM_WAIT_S)

    def close(self) -> None:
        """Serve nothing more (the processor has stopped)."""
        self._closed = True
        if self._selector is not None and self in self._selector.pumps:
            self._selector.pumps.remove(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class PumpedProducer(Producer):
    """A Producer whose every produce() arms its DeliveryPump (set with ``pump_with``) and
    is counted until its report is served (``unreported``: what a checkpoint waits for)."""

    def __init__(self, config: dict[str, Any]) -> None:
        refused = sorted(key for key in _NEEDS_EVERY_REPORT if config.get(key) not in (None, False, "false"))
        if refused:
            raise ConfigurationError(
                f"A processor's producer may not set {', '.join(refused)}: its checkpoints and acknowledged "
                "writes need every record's own delivery report. Leave them out of the producer overrides.")
        super().__init__(config)
        self.pump: DeliveryPump | None = None
        self.unreported = Unreported()

    def pump_with(self, pump: DeliveryPump) -> None:
        self.pump = pump

    def produce(  # the signature of Producer.produce (``callback`` is ``on_delivery``'s alias)
        self, topic: str, value: str | bytes | None = None, key: str | bytes | None = None, partition: int = -1,
        callback: Report | None = None, on_delivery: Report | None = None, timestamp: int = 0,
        headers: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        report = self.unreported.track(callback if callback is not None else on_delivery)
        try:
            super().produce(topic, value, key, partition, report, timestamp=timestamp, headers=headers)
        except Exception:  # BufferError (the queue is full) above all: the caller produces it again
            # (Not BaseException: an interrupt may come once the record is queued, and a count
            # one too high only makes a checkpoint wait longer; one too low would commit early.)
            self.unreported.untrack(report)
            raise
        if self.pump is not None:
            self.pump.arm()


def wait_for_room(producer: Producer) -> None:
    """A produce() was refused with a full local queue (BufferError): wait for room (a
    PumpedProducer's pump serves reports meanwhile, DeliveryPump.make_room)."""
    if isinstance(producer, PumpedProducer) and producer.pump is not None:
        producer.pump.make_room()
    else:
        time.sleep(ROOM_WAIT_S)


def serve_soon(producer: Producer) -> None:
    """Make the loop look at ``producer``'s queue soon (any thread): a checkpoint about to
    wait for it. The queue also holds librdkafka's log and error events, which no produce()
    arms a timer for: one that came after the pump last emptied it would wait there."""
    pump = getattr(producer, "pump", None)  # a PumpedProducer's (or a stand-in's)
    if pump is not None:
        pump.arm()
