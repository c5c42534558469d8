"""The checkpoint of one run as the worker running it knows it: the head's epochs and the
run's step records, so the end of the run needs no scan of the checkpoint and no decode.

A run's step records (specialist/checkpoint.py) are the ones this worker writes through
:meth:`RunSteps.recording`, and for a run taken up from its checkpoint (a resume after a
restart or a take-over, after a decision or a cancel) the ones it held then: the resume
reads them to rebuild the chain anyway (:meth:`RunSteps.read`). Nothing else writes a
run's step keys while the run is on this worker (a zombie's late writes never reach this
worker's store either), so at the end these are the records a scan would find:

- ``keys``: every step key written or read; a key is noted before its write, so a write
  that landed without its acknowledgement is tombstoned too;
- ``records``: the records read, and each written one from its send (dropped again if
  the broker refuses it: the run then fails before its end) — what a decode of the
  stored values returns once the writes have landed: a record is JSON data built for
  its write (checkpoint.model_step, tool_step) and not changed after it. What it shares with the
  loop is a reply's tool-call arguments, which nothing changes: the loop reads them, and
  a tool gets its arguments through validation (a copy, except for a parameter typed
  ``Any`` or values nested in one: a tool changing those in place would change the
  conversation the loop goes on with as well).

The transcript (specialist/transcript_writer.py) is built from ``epochs`` and ``records``,
the tombstones of the run's end (specialist/lifecycle.py) from ``keys``. Nothing is kept
once the run's loop ends (a run waiting for a decision holds nothing in memory): a run
taken up again reads its checkpoint again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from agentstream.specialist import checkpoint as ckpt

Persist = Callable[[str, Any], Awaitable[None]]


class Scannable(Protocol):
    def scan(self, prefix: bytes) -> Iterable[tuple[bytes, bytes]]: ...


class RunSteps:
    """The epochs and step records of one run (see the module docstring)."""

    def __init__(self, epochs: list[list[int]], stored: Iterable[tuple[str, dict[str, Any]]] = ()) -> None:
        self.epochs = epochs  # the head's own list: a resume appends its epoch to it
        self._landing: Callable[[], Awaitable[None]] | None = None  # see wait_for
        self._writing: set[asyncio.Task[Any]] = set()  # the tasks writing a step record now (cancel_writes)
        self.keys: list[str] = []
        self.records: list[dict[str, Any]] = []
        for key, record in stored:
            self.keys.append(key)
            self.records.append(record)

    @classmethod
    def read(cls, store: Scannable, run: str, epochs: list[list[int]]) -> RunSteps:
        """The step records of ``run`` in its checkpoint (one partition's store)."""
        scanned = store.scan(ckpt.step_prefix(run).encode())
        return cls(epochs, ((key.decode(), json.loads(value)) for key, value in scanned))

    def cancel_writes(self) -> None:
        """Cancel the writes of step records still on their way (the run's work went with
        its head's write, which may not have been produced yet: a record queued behind it
        for the partition must not land without it). One already produced lands anyway."""
        for writing in list(self._writing):
            if writing is not asyncio.current_task():
                writing.cancel()

    def wait_for(self, landing: Callable[[], Awaitable[None]] | None) -> None:
        """What :meth:`landed` awaits: the head's write until the run's loop starts, then the
        loop's DurableRun.landed (a loop's answer may still be on its way when it returns);
        None once the run has ended (the DurableRun holds this object through ``persist``:
        letting go of it breaks that cycle)."""
        self._landing = landing

    async def landed(self) -> None:
        """Return once the run's last write has landed; StepNotRecorded if it was refused."""
        if self._landing is not None:
            await self._landing()

    def recording(self, persist: Persist) -> Persist:
        """``persist`` noting each step it writes."""

        async def persist_step(key: str, record: dict[str, Any]) -> None:
            self.keys.append(key)
            self.records.append(record)  # a transcript sent while it lands holds it (lifecycle _finish)
            writing = asyncio.current_task()
            if writing is not None:
                self._writing.add(writing)
            try:
                await persist(key, record)
            except BaseException:
                self.records.remove(record)
                raise
            finally:
                self._writing.discard(writing)  # type: ignore[arg-type]
                # A refusal's traceback holds this frame, and the task holds the refusal.
                del writing

        return persist_step
