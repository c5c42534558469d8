"""The event-loop lag probe (runtime/loop_lag.py) on a fake loop whose clock the test moves."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentstream.runtime.loop_lag import LoopLagProbe


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        self.timers.append(timer)
        return timer

    def run_due_at(self, now: float) -> None:
        """The loop gets round to its due timers only at ``now`` (it was busy until then)."""
        self.now = now
        due = [t for t in self.timers if t.when <= now and not t.cancelled]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.callback()


def _started(observed: list[float]) -> tuple[LoopLagProbe, FakeLoop]:
    probe = LoopLagProbe(observed.append, interval=0.1)
    loop = FakeLoop()
    probe.start(loop)  # type: ignore[arg-type]
    return probe, loop


def test_a_timer_run_late_reports_how_late() -> None:
    observed: list[float] = []
    _, loop = _started(observed)
    assert [t.when for t in loop.timers] == [0.1]
    loop.run_due_at(0.35)  # a callback held the loop 0.25 s past the timer
    assert observed == [pytest.approx(0.25)]
    assert [t.when for t in loop.timers] == [pytest.approx(0.45)]  # next one interval after it ran
    loop.run_due_at(0.45)
    assert observed == [pytest.approx(0.25), pytest.approx(0.0, abs=1e-9)]  # on time


def test_stop_cancels_the_timer() -> None:
    observed: list[float] = []
    probe, loop = _started(observed)
    assert probe.running
    probe.stop()
    assert not probe.running
    loop.run_due_at(10.0)
    assert observed == []


@pytest.mark.parametrize("interval", [0, -1])
def test_the_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match=f"interval must be positive, got {interval}"):
        LoopLagProbe(lambda lag: None, interval=interval)


def test_a_running_probe_refuses_a_second_start() -> None:
    probe, loop = _started([])
    with pytest.raises(RuntimeError, match="running already; stop"):
        probe.start(loop)  # type: ignore[arg-type]
    probe.stop()
    probe.start(loop)  # type: ignore[arg-type]  # stopped: it may start again


def test_an_observer_that_raises_leaves_the_next_timer_armed() -> None:
    def refuse(lag: float) -> None:
        raise ValueError("observer failed")

    probe = LoopLagProbe(refuse, interval=0.1)
    loop = FakeLoop()
    probe.start(loop)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        loop.run_due_at(0.1)
    assert [t.when for t in loop.timers if not t.cancelled] == [pytest.approx(0.2)]
