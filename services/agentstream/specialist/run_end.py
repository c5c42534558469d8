"""What a finished run still owes once its answer has landed: its transcript, its result,
then its end write (the done marker and the tombstones, specialist/lifecycle.py _forget),
in that order, each acknowledged before the next is sent.

Every step of the run is in its checkpoint by then, so a write the broker did not
acknowledge in time (a partition without a leader for longer than the producer's
``message.timeout.ms``) is no reason to run the task again: a retry tier's copy would
find no done marker and call every model again (paid calls, maybe another answer). The
lifecycle sends again beside the partition (retry/background.py) what is still owed; the
head stays until the end write lands, and a new owner of the partition sends what this
one could not (below). A write
that timed out may have landed all the same: its readers keep one transcript per run and
one result per task (the supervisor's markers). A result the broker refuses for good (a
record over the topic's size, no authorization) on its first send still fails the task
into the retry chain: no retry would pass (refused so on a later send, it is tried again
until the partition moves: not handled). A dead-lettered run's FAILED result is sent
again the same way. Before it sends again, the lifecycle writes what is owed into the run's
head (``OWED``: the result as first encoded), so that a new owner after a rebalance sends
the owed writes and ends the run, with no model call and no step replayed; if that write
does not land, the new owner resumes the run from its head (replaying its steps).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypedDict

from agentstream.retry.classify import ErrorClass, classify
from agentstream.runtime.errors import CheckpointError

log = logging.getLogger(__name__)

Write = Callable[[], Awaitable[None]]

# The head's field of what a run's end still owes: a new owner sends that and ends the run
# (TaskLifecycle._send_owed) instead of resuming it, which would call its models again (a
# dead-lettered run's, whose FAILED result was owed) or fail it on the redelivery limit
# (owners in a row resuming a finished run at the same step).
OWED = "owed"


class Owed(TypedDict):
    result: str  # the SpecialistResult as first sent (Avro, base64): sent again byte for byte
    replay: str | None  # the replay marker the result carries
    transcript: bool  # whether the transcript is owed too (made again from the result and the steps)


def owed(result: bytes, replay: str | None, *, transcript: bool) -> Owed:
    return {"result": base64.b64encode(result).decode("ascii"), "replay": replay, "transcript": transcript}


def owed_result(owing: Owed) -> bytes:
    return base64.b64decode(owing["result"])


@dataclass(slots=True)
class RunEnd:
    """The writes a finished run owes, crossed off as each is acknowledged, so a retry
    sends only what is still owed: a result is not sent twice for one refused end write."""

    transcript: Write | None  # None: no transcript is owed (sent already, or no transcripts topic)
    result: Write | None
    end_write: Write
    settle: Write | None = None  # once the result is out: a retried run's session lets its parked tasks go
    # Sent back to the partition (send_and_end): first, what is owed goes into the run's head
    # (OWED), so a new owner after a rebalance sends it instead of running the task again.
    owe: Write | None = None

    async def send(self) -> None:
        """The transcript (if owed), then the result (if owed): acknowledged in this order, so
        a run's result is never out before its transcript is readable; then ``settle``."""
        if self.transcript is not None:
            await self.transcript()
            self.transcript = None
        if self.result is not None:
            await self.result()
            self.result = None
        if self.settle is not None:
            settle, self.settle = self.settle, None  # crossed off first: a session is settled once
            await settle()

    async def send_and_end(self) -> None:
        """``owe`` (if not written yet), :meth:`send`, then the end write: the whole end,
        retried as one."""
        await self._try_owe()
        await self.send()
        await self.end_write()

    async def _try_owe(self) -> None:
        """Write ``owe``, best effort: the owed writes go all the same (a result held back
        for it would wait on the checkpoints' partition too). Refused for good, it is given
        up (a new owner then resumes the run from its head, as without it)."""
        if self.owe is None:
            return
        try:
            await self.owe()
            self.owe = None
        except CheckpointError as exc:
            if classify(exc) is not ErrorClass.TRANSIENT:
                self.owe = None
            log.warning("what a run's end owes was not written into its head (%s); %s", exc,
                        "tried again with the end" if self.owe is not None else "given up")


async def answer_landed(answer: Awaitable[None], transcript: Awaitable[None] | None) -> CheckpointError | None:
    """Await the run's last write (its answer) and its transcript at once, both to the end
    (no write left unretrieved). Raise the answer's error: the run's answer is not
    recorded, so the run fails. Return the transcript's error when the broker did not
    acknowledge it in time (the transcript is owed); raise any other error of it."""
    outcomes = await asyncio.gather(answer, *([transcript] if transcript is not None else []), return_exceptions=True)
    landed, sent = outcomes[0], (outcomes[1:] or [None])[0]
    del outcomes
    try:
        if isinstance(landed, BaseException):
            raise landed
        if isinstance(sent, CheckpointError) and classify(sent) is ErrorClass.TRANSIENT:
            return sent
        if isinstance(sent, BaseException):
            raise sent
        return None
    finally:
        del landed, sent  # a traceback holds this frame: no cycle left for the collector
