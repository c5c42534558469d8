"""When a task's stream may send the result and end: the rule both streams share (the
gateway's SSE, gateway/sse.py, and the Kafka client's ``events``, kafka_client.py).

The result goes once the terminal progress event that the supervisor sends just after it
was sent too. If that event does not come, it goes ``grace_s`` after the view had read
task-events to its ends in a round after the stream first saw the result: only then is
every event produced before the result in the view (a fixed wait from the result alone
ended a stream without its task's last events when the view was seconds behind on
task-events in a burst).
"""

from __future__ import annotations

import time
from typing import Protocol

from agentstream.gateway.view_rules import View, result_due


class EventsProgress(Protocol):
    """What the gate needs of the view's reader (gateway/view_reader.py)."""

    rounds: int

    def events_settled_after(self, round_seen: int) -> bool: ...


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
