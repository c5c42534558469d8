"""Liveness and readiness of a processor, as the poll loop and the restore report them.

Written by the processor's threads, read by the HTTP server's thread (telemetry/server.py):
plain attribute writes of floats and bools, which need no lock under the GIL.

- Live: a poll completed within ``stall_s`` seconds. A restore runs inside a poll (in the
  rebalance callback) and may take minutes for a large changelog, so the processor is live
  while one runs, and not ready.
- Ready: the group assigned partitions, they are restored, and no restore is running. A
  member with no partitions (more members than partitions) has nothing to restore and is
  ready too; but under KIP-848 librdkafka tells such a member nothing at all (no assignment
  callback; its statistics read join_state "init" as before joining, measured on Kafka
  4.1), so a member that polled ``unassigned_ready_s`` without being assigned anything
  counts as one. A member that joins gets its partitions within a few heartbeats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str


class Health:
    """The poll loop's heartbeat and the restore state of one processor."""

    def __init__(self, stall_s: float = 30.0, unassigned_ready_s: float = 30.0) -> None:
        self.stall_s = stall_s
        self.unassigned_ready_s = unassigned_ready_s
        self._first_poll = 0.0  # monotonic; 0: never polled
        self._last_poll = 0.0
        self._restoring = 0  # restores in progress (one per rebalance, so 0 or 1)
        self._assigned_once = False
        self._stopped = False

    # -- written by the processor --------------------------------------------------------
    def beat(self) -> None:
        """The poll loop went round (a poll returned, or it waited for a free slot)."""
        self._last_poll = time.monotonic()
        self._first_poll = self._first_poll or self._last_poll

    def restore_started(self) -> None:
        self._restoring += 1

    def restore_finished(self) -> None:
        self._restoring -= 1
        self._assigned_once = True
        self._last_poll = time.monotonic()  # the poll that ran the restore is alive again

    def stopped(self) -> None:
        self._stopped = True

    # -- read by the probes --------------------------------------------------------------
    def liveness(self, now: float | None = None) -> Verdict:
        if self._stopped:
            return Verdict(False, "the processor stopped")
        if self._restoring:
            return Verdict(True, "restoring state")
        if self._last_poll == 0.0:
            return Verdict(True, "starting")  # readiness, not liveness, gates a starting worker
        quiet = (time.monotonic() if now is None else now) - self._last_poll
        if quiet > self.stall_s:
            return Verdict(False, f"no poll for {quiet:.1f} s (limit {self.stall_s:g} s): the poll loop is stuck")
        return Verdict(True, f"last poll {quiet:.1f} s ago")

    def readiness(self, now: float | None = None) -> Verdict:
        if self._stopped:
            return Verdict(False, "the processor stopped")
        if self._restoring:
            return Verdict(False, "restoring the state of newly assigned partitions")
        if self._assigned_once:
            return Verdict(True, "assigned partitions restored")
        polling = (time.monotonic() if now is None else now) - self._first_poll if self._first_poll else 0.0
        if polling >= self.unassigned_ready_s:
            return Verdict(True, f"no partitions after {polling:.0f} s in the group (more members than partitions?)")
        return Verdict(False, "waiting for the group to assign partitions")
