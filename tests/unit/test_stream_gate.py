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


class _Store:
    """A task's view and events; ``lands`` (offset, event) arrives in the view and the events
    together (one batch) right after the first of a look's two reads, whichever it is."""

    def __init__(self, view: dict[str, object], events: dict[int, dict[str, object]],
                 lands: tuple[int, dict[str, object]] | None = None) -> None:
        self.view, self.events, self.lands = view, events, lands

    def task(self, task_id: str) -> dict[str, object] | None:
        view = dict(self.view)
        self._land()
        return view

    def events_after(self, task_id: str, offset: int, limit: int = 500) -> list[tuple[int, dict[str, object]]]:
        events = sorted((o, e) for o, e in self.events.items() if o > offset)[:limit]
        self._land()
        return events

    def _land(self) -> None:
        if self.lands is not None:
            offset, event = self.lands
            self.events[offset] = event
            self.view["terminal_event_offset"] = offset
            self.lands = None


def _settled_gate(clock: list[float]) -> ResultGate:
    """A gate whose view has read task-events to its ends after any round it saw a result in,
    its grace period long over."""
    reader = _Reader()
    reader.settled_round = 10**9
    gate = ResultGate(reader, 2.0)
    assert not gate.due(_DONE, -1)  # the grace starts
    clock[0] += 30.0
    return gate


def test_a_look_sends_the_events_the_view_counted_before_its_result(clock: list[float]) -> None:
    store = _Store({**_DONE, "terminal_event_offset": 4}, {3: {"kind": "TOOL_CALL"}, 4: {"kind": "STATE"}})
    look = ResultGate(_Reader(), 2.0).look(store, "t", -1)
    assert [offset for offset, _ in look.events] == [3, 4]
    assert look.result is not None and look.result["result"]["offset"] == 7 and not look.full


def test_an_event_that_lands_between_the_reads_goes_out_before_the_result(clock: list[float]) -> None:
    # The terminal event lands once the view is read, after the grace period ran out: the
    # look sends it, and the result goes after it, never without it.
    store = _Store(dict(_DONE), {3: {"kind": "TOOL_CALL"}}, lands=(4, {"kind": "STATE"}))
    gate = _settled_gate(clock)
    look = gate.look(store, "t", -1)
    sent = [offset for offset, _ in look.events]
    assert sent == [3, 4]
    assert look.result is not None  # due on the grace, on a view that counts no event the stream did not send
    assert (look.result["terminal_event_offset"] or -1) <= sent[-1]


def test_a_full_look_leaves_the_result_for_a_later_one(clock: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_gate, "EVENTS_PER_LOOK", 2)
    store = _Store(dict(_DONE), {3: {}, 4: {}, 5: {}})
    gate = _settled_gate(clock)
    look = gate.look(store, "t", -1)
    assert [offset for offset, _ in look.events] == [3, 4] and look.result is None  # event 5 is still to send
    assert look.full  # so the stream looks again at once instead of waiting for news
    look = gate.look(store, "t", 4)
    assert [offset for offset, _ in look.events] == [5] and look.result is not None and not look.full
