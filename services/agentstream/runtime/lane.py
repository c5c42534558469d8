"""One thread that runs the calls an event loop gives it, one at a time, in order.

The processor's consumer lives on such a thread (runtime/processor.py): every poll,
commit (runtime/checkpointing.py) and close runs there, never on the loop, because librdkafka runs the rebalance
callbacks inside them and those wait for the loop. A ``ThreadPoolExecutor(1)`` with
``run_in_executor`` does the same, but each call then builds a concurrent Future (with its
Condition and RLock), a work item and an asyncio Future chained to it: about twice the CPU
of this handover (a SimpleQueue in, ``call_soon_threadsafe`` back), paid on every poll,
and a poll at moderate load brings one record (issue #18).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from agentstream.runtime.errors import ProcessorError

_T = TypeVar("_T")
_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_CLOSE = None  # put on the queue by close(): the thread ends after the calls before it


class ThreadLane:
    """A named thread, started by its first call; :meth:`close` ends it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def run(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """``fn(*args)`` on the lane's thread; await the future for its result or exception.
        Cancelling the future does not stop a call that has begun (as with an executor)."""
        if self._closed:
            raise ProcessorError(f"The thread lane {self.name!r} is closed; a stopped processor cannot run again.")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._calls.put((loop, future, fn, args))
        return future

    def close(self) -> None:
        """End the thread once the calls already given have run."""
        if not self._closed:
            self._closed = True
            self._calls.put(_CLOSE)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not _CLOSE:
            loop, future, fn, args = call
            if future.cancelled():
                continue  # as an executor does: a call cancelled before it began is not made
            try:
                outcome: tuple[Any, BaseException | None] = (fn(*args), None)
            except BaseException as exc:  # handed to the awaiting coroutine, which raises it
                outcome = (None, exc)
            if loop.is_closed():
                continue  # nobody is left to wait for it (a loop torn down mid-call)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:
                continue  # the loop closed between the check and the call


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
