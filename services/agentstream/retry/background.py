"""Work that one broker error must not strand, run again beside its partition with
exponential back-off and jitter until it succeeds, or until the partition goes (its work is
then cancelled, and the new owner's assignment finds the same records). Nothing waits for
it: the partition's other work goes on. Used for a supervisor's escalation deadlines and
decided escalations (supervisor/escalator.py: its recover finds them) and for the end of
a specialist's run once its answer has landed: a transcript or result not acknowledged in
time, the end write (specialist/run_end.py: the head stays until the end is written, and
a new owner resumes or ends the run again).

The work is durable before it is retried (an approval record, a run's head and done
marker say what is due), so the retries need no record of their own. tenacity drives them,
as it drives the retries of model calls (controls/retry.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential, wait_random

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 1.0  # the first retry's wait; each next one doubles, with up to 1 s of jitter
RETRY_MAX_S = 60.0  # a broker down for long is retried once a minute, not hammered

Work = Callable[[], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class Spawner(Protocol):
    def assigned_partitions(self) -> set[int]: ...

    def spawn_resumed(self, work: Coroutine[Any, Any, None], topic: str, partition: int) -> None: ...


class Retried:
    """Retries failed work of one processor's partitions in the background."""

    def __init__(self, app: Spawner, topic: str, *, initial_s: float = RETRY_INITIAL_S, max_s: float = RETRY_MAX_S,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.app = app
        self.topic = topic  # the input topic: its partition's work is cancelled when it goes
        self.initial_s = initial_s
        self.max_s = max_s
        self._sleep = sleep

    async def run(self, work: Work, what: str, partition: int) -> None:
        """``await work()``; if it fails, log why and run it again later (never raises but
        for a cancel: the caller goes on with the partition's other work)."""
        try:
            await work()
        except Exception as exc:
            log.warning("%s failed (%s: %s); retried in the background", what, type(exc).__name__, exc)
            self.later(work, what, partition)

    def later(self, work: Work, what: str, partition: int) -> None:
        """``work()`` failed once: run it again until it succeeds, beside ``partition``."""
        if partition not in self.app.assigned_partitions():
            log.warning("%s[%d] is no longer assigned here: %s is its new owner's (found on assignment)",
                        self.topic, partition, what)
            return
        self.app.spawn_resumed(self._until_done(work, what), self.topic, partition)

    async def _until_done(self, work: Work, what: str) -> None:
        await self._sleep(self.initial_s)  # it has just failed: not again at once
        retrying = AsyncRetrying(
            # 2x, 4x, 8x... the first wait, up to max_s, plus up to 1 s of jitter (so the
            # retries of a partition's many failed writes do not hit the broker at once)
            wait=wait_exponential(multiplier=self.initial_s * 2, max=self.max_s) + wait_random(0, 1),
            retry=retry_if_exception_type(Exception),  # until done: the partition's loss cancels it
            sleep=self._sleep,
            before_sleep=lambda state: _failed(what, state),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await work()
        log.info("%s done after a retry", what)


def _failed(what: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning("%s failed again (attempt %d): %s: %s; next try in %.1f s", what, state.attempt_number + 1,
                type(error).__name__, error, wait)
