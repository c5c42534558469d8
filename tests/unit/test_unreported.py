"""A checkpoint waits for the reports of the records produced before it began, not for
those its intake goes on producing meanwhile (runtime/unreported.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from agentstream.runtime.offsets import PartitionOffsets
from agentstream.runtime.processor import Processor
from agentstream.runtime.unreported import Report, Unreported


class _Producer:
    """Records waiting for their reports; ``serve`` runs the report of the i-th one (as the
    pump would, on whichever thread calls it)."""

    def __init__(self) -> None:
        self.unreported = Unreported()
        self.reports: list[Report | None] = []
        self.delivered: list[int] = []

    def __len__(self) -> int:
        return sum(report is not None for report in self.reports)

    def produce(self) -> int:
        index = len(self.reports)
        self.reports.append(self.unreported.track(lambda err, msg: self.delivered.append(index)))
        return index

    def serve(self, index: int) -> None:
        report, self.reports[index] = self.reports[index], None
        assert report is not None, f"record {index} was reported already"
        report(None, None)  # type: ignore[arg-type]


def test_only_the_records_produced_before_the_mark_are_waited_for_in_any_order() -> None:
    producer = _Producer()
    settled: list[int] = []
    producer.unreported.on_settled = lambda: settled.append(producer.unreported.before)
    old = [producer.produce() for _ in range(3)]
    assert producer.unreported.mark() == 3
    new = [producer.produce() for _ in range(2)]
    producer.serve(new[0])  # a later record reported first: not one the mark waits for
    assert producer.unreported.before == 3
    for index in reversed(old):  # reports come in any order across partitions
        producer.serve(index)
    assert producer.unreported.before == 0 and settled == [0]
    assert len(producer) == 1  # the intake's record is still on its way
    assert producer.delivered == [new[0], *reversed(old)]  # every report still reaches its own callback


def test_a_later_mark_waits_for_what_an_earlier_one_left_too() -> None:
    producer = _Producer()
    first = producer.produce()
    producer.unreported.mark()
    second = producer.produce()
    assert producer.unreported.mark() == 2  # the first mark's record, still unreported, and the second's
    producer.serve(second)
    assert producer.unreported.before == 1
    producer.serve(first)
    assert producer.unreported.before == 0


def test_a_produce_that_was_refused_is_not_waited_for() -> None:
    unreported = Unreported()
    refused = unreported.track(None)
    unreported.untrack(refused)  # the produce raised BufferError: the caller produces it again
    kept = unreported.track(None)
    assert unreported.mark() == 1
    kept(None, None)  # type: ignore[arg-type]
    assert unreported.before == 0


def test_a_report_whose_callback_raises_is_still_counted() -> None:
    unreported = Unreported()

    def failing(err: Any, msg: Any) -> None:
        raise RuntimeError("a callback failed")

    report = unreported.track(failing)
    unreported.mark()
    try:
        report(None, None)  # type: ignore[arg-type]
    except RuntimeError:
        pass
    assert unreported.before == 0


def _processor(producer: _Producer) -> Processor:
    processor = Processor("unreported", "localhost:9", "unreported", "unused-state-dir")  # no I/O until run()
    processor._producer = producer  # type: ignore[assignment]
    producer.unreported.on_settled = processor._checkpoints.all_delivered
    return processor


def _in_thread(wait: Callable[[], int]) -> tuple[threading.Thread, list[int]]:
    left: list[int] = []
    thread = threading.Thread(target=lambda: left.append(wait()))
    thread.start()
    return thread, left


def test_a_checkpoints_wait_ends_once_its_records_are_reported_though_later_ones_are_not() -> None:
    """The producer never empties (an intake that goes on): the wait still ends."""
    producer = _Producer()
    processor = _processor(producer)
    processor._checkpoints.flush_timeout = 30
    old = [producer.produce() for _ in range(3)]
    producer.unreported.mark()
    thread, left = _in_thread(lambda: processor._checkpoints.wait_delivered(
        producer, lambda: producer.unreported.before))  # type: ignore[arg-type]
    for index in old:
        producer.produce()  # the intake goes on while the checkpoint waits
        producer.serve(index)
    thread.join(5)
    assert not thread.is_alive() and left == [0]
    assert len(producer) == 3


def test_the_checkpoint_marks_what_it_waits_for_before_it_waits() -> None:
    """Step 2 counts the records produced before it, changelog records included, and not
    one produced while it waits."""
    producer = _Producer()
    processor = _processor(producer)
    offsets = processor._offsets[("in", 0)] = PartitionOffsets()
    offsets.seen(0)
    producer.produce()  # an output of the record whose offset the checkpoint commits
    counted: list[int] = []

    def wait_delivered(given: object, unreported: Callable[[], int]) -> int:
        producer.produce()  # produced while the checkpoint waits
        counted.append(unreported())
        producer.serve(0)
        counted.append(unreported())
        return unreported()

    processor._checkpoints.wait_delivered = wait_delivered  # type: ignore[method-assign,assignment]
    plan = asyncio.run(processor._checkpoints._prepare())
    assert counted == [1, 0]
    assert plan is not None and [(tp.topic, tp.offset) for tp in plan.offsets] == [("in", 1)]
