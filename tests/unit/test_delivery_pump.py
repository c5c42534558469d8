"""A worker's delivery reports are served on its event loop's thread, while records wait
for theirs, and by no other thread (runtime/delivery_pump.py)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from agentstream.runtime.delivery import produce_acked
from agentstream.runtime.delivery_pump import DeliveryPump, new_serving_loop
from agentstream.runtime.processor import Processor

from .test_delivery import _Producer, _Record, _until

T = TypeVar("T")


class _Queue:
    """A producer's queue of unreported records: ``produce`` adds one and arms the pump, as
    PumpedProducer does; ``poll`` serves up to ``per_poll`` reports, noting the thread."""

    def __init__(self, per_poll: int = 7) -> None:
        self.waiting = 0
        self.per_poll = per_poll
        self.polls = 0
        self.served_on: set[str] = set()
        self.pump: DeliveryPump | None = None
        self.looked = 0  # len() calls: a serving loop's select makes one before it sleeps

    def __len__(self) -> int:
        self.looked += 1
        return self.waiting

    def produce(self) -> None:
        self.waiting += 1
        assert self.pump is not None
        self.pump.arm()

    def poll(self, timeout: float) -> int:
        assert timeout == 0, "the pump must never block the loop"
        self.polls += 1
        served = min(self.waiting, self.per_poll)
        if served:
            self.served_on.add(threading.current_thread().name)
        self.waiting -= served
        return served


def _run(scenario: Coroutine[Any, Any, T], loop_factory: LoopFactory) -> T:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(scenario)


# Both kinds of loop: a worker's (its select serves) and any other (a timer serves).
BOTH_LOOPS = pytest.mark.parametrize("loop_factory", [None, new_serving_loop], ids=["timer", "serving-loop"])
LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None


def _until_in_thread(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Off the loop: wait until ``condition`` holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {condition}")
        time.sleep(0.001)


def _pumped(queue: _Queue, on_all_delivered: object = lambda: None) -> DeliveryPump:
    loop = asyncio.get_running_loop()
    queue.pump = DeliveryPump(queue, loop, threading.get_ident(), on_all_delivered)  # type: ignore[arg-type]
    return queue.pump


@BOTH_LOOPS
def test_the_pump_serves_every_report_on_the_loops_thread_and_looks_no_more_once_none_wait(
    loop_factory: LoopFactory,
) -> None:
    queue = _Queue()
    emptied: list[int] = []

    async def scenario() -> None:
        pump = _pumped(queue, lambda: emptied.append(len(queue)))
        for _ in range(300):
            queue.produce()
        assert pump.armed
        await _until(lambda: len(queue) == 0 and bool(emptied))
        assert not pump.armed
        polls = queue.polls
        for _ in range(20):
            await asyncio.sleep(0)  # passes of the loop (a serving loop's each through its select)
        assert queue.polls == polls  # nothing waits: nothing is polled
        queue.produce()  # and the next produce starts it again
        await _until(lambda: len(queue) == 0)
        assert queue.polls > polls
        pump.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())
    assert queue.served_on == {threading.current_thread().name}
    assert emptied and set(emptied) == {0}


@BOTH_LOOPS
def test_a_produce_on_another_thread_arms_the_pump_on_the_loop(loop_factory: LoopFactory) -> None:
    queue = _Queue()

    async def scenario() -> None:
        pump = _pumped(queue)
        producing = threading.Thread(target=queue.produce, name="poll-thread")  # a rebalance callback's flush
        producing.start()
        producing.join()
        await _until(lambda: len(queue) == 0)
        assert not pump.armed

    _run(scenario(), loop_factory)
    assert queue.served_on == {threading.current_thread().name}


@BOTH_LOOPS
def test_the_pump_goes_on_after_a_callback_raises(loop_factory: LoopFactory) -> None:
    class _Raising(_Queue):
        def poll(self, timeout: float) -> int:
            if self.polls == 1:
                self.polls += 1
                raise RuntimeError("a delivery callback failed")
            return super().poll(timeout)

    queue = _Raising(per_poll=1)

    async def scenario() -> None:
        _pumped(queue)
        for _ in range(4):
            queue.produce()
        await _until(lambda: len(queue) == 0)

    _run(scenario(), loop_factory)
    assert queue.polls >= 5  # four reports, one poll that raised


@BOTH_LOOPS
def test_a_closed_pump_serves_nothing_more(loop_factory: LoopFactory) -> None:
    queue = _Queue()

    async def scenario() -> None:
        pump = _pumped(queue)
        pump.close()
        queue.produce()
        assert not pump.armed
        await asyncio.sleep(10 * pump.interval_s)  # ten of its intervals: an open pump would have served
        assert queue.polls == 0 and len(queue) == 1

    _run(scenario(), loop_factory)


@BOTH_LOOPS
def test_a_checkpoint_waits_for_the_pump_to_serve_every_report_and_serves_none(loop_factory: LoopFactory) -> None:
    queue = _Queue(per_poll=3)
    processor = Processor("order", "localhost:9", "order", "unused-state-dir")  # no I/O until run()

    async def scenario() -> int:
        _pumped(queue, processor._checkpoints.all_delivered)
        for _ in range(500):
            queue.produce()
        # As a checkpoint waits: on another thread, while the loop goes on serving.
        return await asyncio.get_running_loop().run_in_executor(
            None, processor._checkpoints.wait_delivered, queue)

    assert _run(scenario(), loop_factory) == 0
    assert queue.served_on == {threading.current_thread().name}


def test_a_full_queue_on_the_loops_thread_is_freed_by_serving_reports_there() -> None:
    # The pump is a callback of this loop: a produce() retried in a loop on its thread would
    # wait for ever for reports nobody serves (a sleep there served none).
    class _Full(_Queue):
        def poll(self, timeout: float) -> int:
            self.polls += 1
            self.served_on.add(threading.current_thread().name)
            self.waiting = 0
            return 1

    queue = _Full()
    elsewhere: list[int] = []

    async def scenario() -> None:
        pump = _pumped(queue)
        queue.waiting = 10
        pump.make_room()  # on the loop's thread: served here
        assert queue.polls == 1 and len(queue) == 0
        queue.waiting = 10
        def make_room_elsewhere() -> None:
            pump.make_room()
            elsewhere.append(queue.polls)

        waiting = threading.Thread(target=make_room_elsewhere, name="poll-thread")
        waiting.start()
        waiting.join()

    asyncio.run(scenario())
    assert queue.served_on == {threading.current_thread().name}
    assert elsewhere == [1]  # another thread waits for the pump and serves none


def test_on_a_serving_loop_a_writer_resumes_in_the_pass_that_serves_its_report() -> None:
    class _Reporting(_Producer):
        """Serves a produced record's report in poll() once ``landed`` is set."""

        def __init__(self) -> None:
            super().__init__()
            self.landed = False

        def __len__(self) -> int:
            return len(self.callbacks)

        def poll(self, timeout: float) -> int:
            if not self.landed:
                return 0
            served, self.callbacks = self.callbacks, []
            for n, (topic, partition, callback) in enumerate(served):
                callback(None, _Record(topic, partition, n))
            return len(served)

    producer = _Reporting()

    async def scenario() -> int:
        pump = DeliveryPump(producer, asyncio.get_running_loop(), threading.get_ident(), lambda: None)  # type: ignore[arg-type]
        write = asyncio.ensure_future(produce_acked(producer, "t", b"v", b"k", 0))  # type: ignore[arg-type]
        await _until(lambda: len(producer) == 1)
        producer.landed = True
        passes = 0
        while not write.done() and passes < 10:  # bounded: a regression fails, not hangs
            await asyncio.sleep(0)
            passes += 1
        pump.close()
        return passes

    with asyncio.Runner(loop_factory=new_serving_loop) as runner:
        assert runner.run(scenario()) <= 2  # served in the next select; the writer runs in that pass


@BOTH_LOOPS
def test_a_checkpoint_gets_an_event_no_produce_armed_for_served(
    loop_factory: LoopFactory,
) -> None:
    # librdkafka's log and error events share the queue len() counts; one that comes after
    # the pump last emptied it arms nothing, and the checkpoint would wait its flush_timeout.
    queue = _Queue()
    processor = Processor("order", "localhost:9", "order", "unused-state-dir")  # no I/O until run()
    processor._checkpoints.flush_timeout = 5.0

    def log_line_then_wait() -> int:
        if loop_factory is not None:  # the line must come while the loop sleeps in its select
            looked = queue.looked
            _until_in_thread(lambda: queue.looked > looked)
        queue.waiting = 1  # a log line, not a produce(): the pump is not armed
        return processor._checkpoints.wait_delivered(queue)

    async def scenario() -> int:
        _pumped(queue, processor._checkpoints.all_delivered)
        return await asyncio.get_running_loop().run_in_executor(None, log_line_then_wait)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(scenario()) == 0
    assert queue.served_on == {threading.current_thread().name}


def test_a_stopped_checkpoint_wait_returns_at_once_with_what_is_left() -> None:
    # A shutdown cancelled again while it waits for reports closes the pump: the thread
    # still waiting must not wait flush_timeout for reports nobody serves any more.
    queue = _Queue()
    queue.waiting = 3
    processor = Processor("order", "localhost:9", "order", "unused-state-dir")  # no I/O until run()
    processor._checkpoints.flush_timeout = 60.0
    left: list[int] = []
    waiting = threading.Thread(target=lambda: left.append(processor._checkpoints.wait_delivered(queue)))
    waiting.start()
    _until_in_thread(lambda: queue.looked >= 2)  # in its wait (it looks before and after the clear)
    processor._checkpoints.stop_waiting()
    waiting.join(10)
    assert not waiting.is_alive() and left == [3]
    assert processor._checkpoints.wait_delivered(queue) == 3  # and any wait after it


@BOTH_LOOPS
def test_a_shutdown_cancelled_while_it_waits_for_reports_does_not_wait_the_flush_timeout(
    loop_factory: LoopFactory,
) -> None:
    # A second Ctrl-C during the shutdown's wait: its thread used to go on waiting with the
    # pump closed, and the loop's own shutdown waited for that thread flush_timeout long.
    queue = _Queue()
    processor = Processor("order", "localhost:9", "order", "unused-state-dir")  # no I/O until run()
    processor._checkpoints.flush_timeout = 30.0

    async def scenario() -> None:
        processor._pump = _pumped(queue, processor._checkpoints.all_delivered)
        queue.waiting = 1
        queue.poll = lambda timeout: 0  # type: ignore[method-assign]  # its report never comes
        processor._producer = queue  # type: ignore[assignment]
        closing = asyncio.ensure_future(processor._close_producer())
        await asyncio.get_running_loop().run_in_executor(None, _until_in_thread, lambda: queue.looked >= 2)
        closing.cancel()  # the second cancel
        with pytest.raises(asyncio.CancelledError):
            await closing

    began = time.monotonic()
    _run(scenario(), loop_factory)  # the Runner's exit waits for the executor's threads
    assert time.monotonic() - began < 10, "the loop's shutdown waited for a thread held by the flush timeout"
    assert processor._closing.is_set() and not processor._pump.armed  # type: ignore[union-attr]


def test_a_shutdown_cancelled_in_its_grace_wait_still_closes_everything() -> None:
    # The most likely place for a second Ctrl-C: the wait of up to shutdown_grace for the
    # spawned work. It used to skip the closing of the consumer, the stores and the pump.
    queue = _Queue()
    processor = Processor("order", "localhost:9", "order", "unused-state-dir")  # no I/O until run()
    stopped: list[bool] = []
    processor._stop_hooks.append(lambda: stopped.append(True))

    async def scenario() -> None:
        processor._pump = _pumped(queue, processor._checkpoints.all_delivered)
        processor._producer = queue  # type: ignore[assignment]
        processor._loop_lag.start(asyncio.get_running_loop())
        async def work_that_does_not_end() -> None:
            await asyncio.Event().wait()

        never = asyncio.ensure_future(work_that_does_not_end())
        processor._spawned.pending = lambda: [never]  # type: ignore[method-assign]
        shutdown = asyncio.ensure_future(processor._shutdown())
        await asyncio.sleep(0)  # it is in its grace wait now
        shutdown.cancel()
        with pytest.raises(asyncio.CancelledError):
            await shutdown

    _run(scenario(), None)
    assert stopped == [True] and processor._closing.is_set() and processor._pump is not None
    assert queue.pump is not None and not queue.pump.armed and processor._pump._closed


def test_the_timer_serves_reports_in_the_context_the_pump_was_made_in() -> None:
    # Not the context of the task whose produce() armed it: a log line of another record's
    # report would carry that task's record fields (telemetry/log_context.py).
    tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="none")

    class _Tagged(_Queue):
        seen: list[str] = []

        def poll(self, timeout: float) -> int:
            self.seen.append(tag.get())
            return super().poll(timeout)

    queue = _Tagged()

    async def scenario() -> None:
        tag.set("the processor's run")
        _pumped(queue)

        async def handler() -> None:
            tag.set("a handled record")
            queue.produce()

        await asyncio.ensure_future(handler())
        await _until(lambda: len(queue) == 0)

    _run(scenario(), None)
    assert queue.seen and set(queue.seen) == {"the processor's run"}
