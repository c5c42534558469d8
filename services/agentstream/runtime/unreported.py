"""A producer's records whose delivery report has not been served yet, told apart by
whether they were produced before a checkpoint began or since.

A checkpoint commits source offsets once the outputs and changelog records produced for
them are acknowledged (runtime/checkpointing.py). Those are the records produced before
its snapshot; what the intake goes on producing while it waits belongs to the next one.
Waiting until the producer held no record at all waited for those too, and under a load
that never lets the producer empty (loops writing all the time) a checkpoint ran for a
whole commit interval, after which the run loop takes in nothing until it ends:
bench/RESULTS.md, session 36.

Every record is counted in the generation that was current when it was produced; a
checkpoint closes the current one (``mark``) and waits until the closed generations hold
no unreported record (``before``). Reports are served in any order across partitions, so
a count per generation, not a position, says when they are all in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, Message

Report = Callable[[KafkaError | None, Message], None]


@dataclass(slots=True)
class _Generation:
    unreported: int = 0
    closed: bool = False


class Unreported:
    """Counts of a producer's unreported records before the last ``mark`` and since. Any
    thread may produce, serve reports or mark (a lock keeps the counts whole)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = _Generation()
        self._before = 0  # unreported records of the closed generations
        self.on_settled: Callable[[], None] = lambda: None  # run when ``before`` falls to 0

    @property
    def before(self) -> int:
        """Records produced before the last ``mark`` whose report has not been served (read
        without the lock: an int is read whole, and a waiter checks again once woken)."""
        return self._before

    def track(self, on_delivery: Report | None) -> Report:
        """The callback to produce a record with: ``on_delivery``, then the record counted as
        reported. Call ``untrack`` with it if the produce is refused."""
        with self._lock:
            generation = self._current
            generation.unreported += 1
        return partial(self._reported, generation, on_delivery)

    def untrack(self, report: Report) -> None:
        """A record ``track`` counted was not produced after all (its produce raised)."""
        assert isinstance(report, partial), "untrack takes what track returned"
        self._settle(report.args[0])

    def mark(self) -> int:
        """Records produced from now on are "since"; returns ``before``."""
        with self._lock:
            closed = self._current
            closed.closed = True
            self._before += closed.unreported
            self._current = _Generation()
            return self._before

    def _reported(self, generation: _Generation, on_delivery: Report | None, err: KafkaError | None,
                  msg: Message) -> None:
        try:
            if on_delivery is not None:
                on_delivery(err, msg)
        finally:
            self._settle(generation)

    def _settle(self, generation: _Generation) -> None:
        with self._lock:
            generation.unreported -= 1
            if not generation.closed:
                return
            self._before -= 1
            settled = self._before == 0
        if settled:
            self.on_settled()
