"""When a task's stream may send the result and end: the rule both streams share (the
gateway's SSE, gateway/sse.py, and the Kafka client's ``events``, kafka_client.py).

The result goes once the terminal progress event that the supervisor sends just after it
was sent too. If that event does not come, it goes ``grace_s`` after the view had read
task-events to its ends in a round after the stream first saw the result: only then is
every event produced before the result in the view (a fixed wait from the result alone
ended a stream without its task's last events when the view was seconds behind on
task-events in a burst).

Each look at the task (:meth:`ResultGate.look`) reads the task's view before its events:
the view reader writes a record's event and the task's view in one batch, so every event
the view has counted is among the events read after it. Read the other way round, an
event that landed between the two reads (while a stream was sending the ones before it)
was in the view the result went on, and never sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from agentstream.gateway.view_rules import View, result_due

EVENTS_PER_LOOK = 500  # events a stream sends per look at its task; a full look leaves more to send


class EventsProgress(Protocol):
    """What the gate needs of the view's reader (gateway/view_reader.py)."""

    rounds: int

    def events_settled_after(self, round_seen: int) -> bool: ...


class TaskStore(Protocol):
    """What a look needs of the view's store (gateway/view_store.py)."""

    def task(self, task_id: str) -> dict[str, Any] | None: ...

    def events_after(self, task_id: str, offset: int, limit: int = ...) -> list[tuple[int, dict[str, Any]]]: ...


@dataclass(frozen=True, slots=True)
class Look:
    """What one look at a task gives its stream."""

    events: list[tuple[int, dict[str, Any]]]  # to send now, in offset order
    result: dict[str, Any] | None  # the view whose result goes after them; None: not yet
    full: bool  # more events follow these: look again at once rather than wait for news


class ResultGate:
    """One stream's gate; ``due`` is asked each time the stream looks at its task's view."""

    def __init__(self, reader: EventsProgress, grace_s: float) -> None:
        self._reader = reader
        self._grace_s = grace_s
        self._round_seen: int | None = None
        self._settled_at: float | None = None

    @property
    def result_seen(self) -> bool:
        return self._round_seen is not None

    def due(self, view: View, sent_offset: int) -> bool:
        """Whether the result in ``view`` may go, the stream having sent events up to task-events
        offset ``sent_offset``."""
        if view.get("result") is None:
            return False
        if self._round_seen is None:
            self._round_seen = self._reader.rounds
        now = time.monotonic()
        if self._settled_at is None and self._reader.events_settled_after(self._round_seen):
            self._settled_at = now
        settled_for = None if self._settled_at is None else now - self._settled_at
        return result_due(view, sent_offset, settled_for, self._grace_s)

    def look(self, store: TaskStore, task_id: str, offset: int) -> Look:
        """One look at the task for a stream that has sent events up to task-events ``offset``.
        The view is read before the events (the module's docstring says why)."""
        view: dict[str, Any] = store.task(task_id) or {}
        events = store.events_after(task_id, offset, EVENTS_PER_LOOK)
        if len(events) == EVENTS_PER_LOOK:  # more after these: the result cannot go yet
            return Look(events, None, full=True)
        sent = events[-1][0] if events else offset
        return Look(events, view if self.due(view, sent) else None, full=False)
