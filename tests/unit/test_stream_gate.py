"""The stream's result gate: the result waits until the view has read task-events to its
ends after the result was seen, then the grace period (or the terminal event)."""

from __future__ import annotations

import pytest

from agentstream.gateway import stream_gate
from agentstream.gateway.stream_gate import ResultGate


class _Reader:
    """The two things the gate reads of the view reader, set by the test."""

    def __init__(self) -> None:
        self.rounds = 0
        self.settled_round = -1

    def events_settled_after(self, round_seen: int) -> bool:
        return self.settled_round > round_seen


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(stream_gate.time, "monotonic", lambda: now[0])
    return now


_DONE = {"result": {"status": "COMPLETED", "offset": 7}, "terminal_event_offset": None}


def test_no_result_is_never_due(clock: list[float]) -> None:
    gate = ResultGate(_Reader(), 2.0)
    assert not gate.due({"result": None}, 0) and not gate.result_seen


def test_the_grace_starts_only_once_task_events_were_read_to_their_ends_after_the_result(clock: list[float]) -> None:
    reader = _Reader()
    reader.rounds, reader.settled_round = 5, 5  # settled, but not after the round the result was seen in
    gate = ResultGate(reader, 2.0)
    assert not gate.due(_DONE, 3) and gate.result_seen
    clock[0] += 30.0  # the view is still behind on task-events: however long, the result waits
    assert not gate.due(_DONE, 3)
    reader.rounds, reader.settled_round = 9, 9
    assert not gate.due(_DONE, 3)  # the grace period starts now
    clock[0] += 1.9
    assert not gate.due(_DONE, 3)
    clock[0] += 0.2
    assert gate.due(_DONE, 3)


def test_the_terminal_event_sent_lets_the_result_go_at_once(clock: list[float]) -> None:
    gate = ResultGate(_Reader(), 2.0)
    view = {**_DONE, "terminal_event_offset": 4}
    assert not gate.due(view, 3)  # the stream has not sent the terminal event yet
    assert gate.due(view, 4)
