"""A checkpoint waits for the reports of the records produced before it began, not for
those its intake goes on producing meanwhile (runtime/unreported.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from agentstream.runtime.offsets import PartitionOffsets
from agentstream.runtime.processor import Processor
from agentstream.runtime.unreported import Report, Unreported


class _Producer:
    """Records waiting for their reports, counted as PumpedProducer counts them; ``serve``
    runs the report of the i-th one (as the pump would, here on the caller's thread)."""

    def __init__(self) -> None:
        self.unreported = Unreported()
        self.reports: list[Report | None] = []
        self.delivered: list[int] = []

    def __len__(self) -> int:
        return sum(report is not None for report in self.reports)

    def produce(self, *args: Any, on_delivery: Report | None = None, **kwargs: Any) -> int:
        index = len(self.reports)

        def delivered(err: Any, msg: Any) -> None:
            self.delivered.append(index)
            if on_delivery is not None:
                on_delivery(err, msg)

        self.reports.append(self.unreported.track(delivered))
        return index

    def serve(self, index: int) -> None:
        report, self.reports[index] = self.reports[index], None
        assert report is not None, f"record {index} was reported already"
        report(None, _Message())  # type: ignore[arg-type]


class _Message:
    """What a changelog record's report reads of its message."""

    def topic(self) -> str:
        return "changelog"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


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


class _Store:
    """A store with one buffered write: the checkpoint produces its changelog record."""

    def __init__(self) -> None:
        self.dirty = True

    def begin_flush(self) -> dict[bytes, bytes]:
        self.dirty = False
        return {b"key": b"value"}

    def abort_flush(self) -> None:
        self.dirty = True


class _Table:
    changelog_topic = "changelog"

    def __init__(self) -> None:
        self.stores = {0: _Store()}


def _processor(producer: _Producer) -> Processor:
    """A processor whose checkpoint would commit offset 1 of ``in``[0] and flush one table write."""
    processor = Processor("unreported", "localhost:9", "unreported", "unused-state-dir")  # no I/O until run()
    processor._producer = producer  # type: ignore[assignment]
    processor._tables["sessions"] = _Table()  # type: ignore[assignment]
    offsets = processor._offsets[("in", 0)] = PartitionOffsets()
    offsets.seen(0)
    return processor


def test_a_checkpoint_ends_once_its_records_are_reported_though_the_producer_never_empties() -> None:
    """The intake goes on while the checkpoint waits: it ends all the same, woken by the
    last of its own reports (not at its flush_timeout)."""
    producer = _Producer()
    processor = _processor(producer)
    processor._checkpoints.flush_timeout = 30
    output = producer.produce()  # an output of the record whose offset the checkpoint commits
    plans: list[Any] = []
    checkpoint = threading.Thread(target=lambda: plans.append(asyncio.run(processor._checkpoints._prepare())),
                                  daemon=True)
    checkpoint.start()
    deadline = time.monotonic() + 5
    while len(producer) < 2 and time.monotonic() < deadline:  # its changelog record is produced
        time.sleep(0.001)
    changelog = 1
    for index in (output, changelog):
        producer.produce()  # the intake goes on while the checkpoint waits
        producer.serve(index)
    checkpoint.join(5)
    assert not checkpoint.is_alive() and len(plans) == 1 and plans[0] is not None
    assert [(tp.topic, tp.offset) for tp in plans[0].offsets] == [("in", 1)]
    assert len(producer) == 2  # the intake's records are still on their way


def test_the_checkpoint_waits_for_its_changelog_records_and_the_outputs_before_them_only() -> None:
    """Step 2 counts the outputs produced before the checkpoint and step 1's changelog
    records, and not a record produced while it waits."""
    producer = _Producer()
    processor = _processor(producer)
    producer.produce()  # an output of the record whose offset the checkpoint commits
    counted: list[int] = []

    def wait_delivered(given: object, unreported: Callable[[], int]) -> int:
        producer.produce()  # produced while the checkpoint waits
        counted.append(unreported())
        producer.serve(0)
        producer.serve(1)  # the changelog record
        counted.append(unreported())
        return unreported()

    processor._checkpoints.wait_delivered = wait_delivered  # type: ignore[method-assign,assignment]
    plan = asyncio.run(processor._checkpoints._prepare())
    assert counted == [2, 0]
    assert plan is not None and [(tp.topic, tp.offset) for tp in plan.offsets] == [("in", 1)]
