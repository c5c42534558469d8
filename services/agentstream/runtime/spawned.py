"""Work a handler starts beside its partition (an agent loop, a result's emission), and the
source offsets it holds back until it ends or releases them.

A record whose handler spawned work is not done until the work is: its offset is
committed only after that, unless the work calls :meth:`SpawnedWork.release` once its
input is durably recorded elsewhere. A partition that goes away cancels its work.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from typing import Any

from agentstream.runtime.context import MessageContext, current_context
from agentstream.runtime.errors import HandlerError, ProcessorError
from agentstream.runtime.offsets import TP, PartitionOffsets

Hold = tuple[TP, int]  # a source record whose offset a spawned work holds back


class SpawnedWork:
    """The spawned work of one processor, per partition, and the offsets it holds."""

    def __init__(self, offsets: dict[TP, PartitionOffsets], report: Callable[[HandlerError], None]) -> None:
        self._offsets = offsets  # the processor's, per assigned partition
        self._report = report  # how a crash of the work is counted and logged
        self._tasks: dict[TP, set[asyncio.Task[None]]] = {}
        self._holds: dict[Hold, bool] = {}
        self.running = 0
        self._slot_free = asyncio.Event()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` beside the partition; its record's offset is committed when it ends
        (or earlier, when the work calls :meth:`release`). Must be called from a handler.

        Work that raises is only logged here, and its offset released: work whose input
        must not be lost that way catches its own failures (the specialist and the
        supervisor send them to their retry chain)."""
        try:
            ctx = current_context.get()
        except LookupError:
            work.close()
            raise ProcessorError("spawn() must be called from inside a handler.") from None
        tp = (ctx.topic, ctx.partition)
        tracker = self._offsets[tp]
        if ctx.offset < 0 or tracker.already_seen(ctx.offset):
            # A record handled again from state (a parked event released later): its
            # offset was committed long ago and must not be held back again.
            self._start(work, tp, ctx, hold=None)
            return
        tracker.started(ctx.offset)
        self._holds[(tp, ctx.offset)] = True
        self._start(work, tp, ctx, hold=(tp, ctx.offset))

    def spawn_resumed(self, work: Coroutine[Any, Any, None], topic: str, partition: int) -> None:
        """Run ``work`` for an assigned partition with no source record to hold back (work
        restored from state after an assignment). It is cancelled if the partition goes."""
        tp = (topic, partition)
        if tp not in self._offsets:
            work.close()
            raise ProcessorError(f"{topic}[{partition}] is not assigned to this worker.")
        ctx = MessageContext(topic, partition, -1, None, (), 0)
        self._start(work, tp, ctx, hold=None)

    def release(self) -> None:
        """Called by spawned work once its input is durably recorded elsewhere: the source
        offset may be committed now, while the work goes on."""
        ctx = current_context.get()
        key = ((ctx.topic, ctx.partition), ctx.offset)
        if self._holds.pop(key, False):
            tracker = self._offsets.get(key[0])
            if tracker is not None:
                tracker.finished(ctx.offset)

    async def slot(self, limit: int) -> None:
        """Return once fewer than ``limit`` works are running."""
        while self.running >= limit:
            self._slot_free.clear()
            await self._slot_free.wait()

    def of(self, tps: Iterable[TP]) -> list[asyncio.Task[None]]:
        """The work running for the partitions ``tps``."""
        return [task for tp in tps for task in self._tasks.get(tp, set())]

    def pending(self) -> list[asyncio.Task[None]]:
        return [task for tasks in self._tasks.values() for task in tasks]

    async def cancel(self, tps: list[TP]) -> None:
        """The partitions ``tps`` are gone: cancel their work, and forget its holds (their
        offsets are the next owner's to commit)."""
        tasks = [task for tp in tps for task in self._tasks.pop(tp, set())]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._holds = {hold: True for hold in self._holds if hold[0] not in tps}

    def _start(self, work: Coroutine[Any, Any, None], tp: TP, ctx: MessageContext, hold: Hold | None) -> None:
        context = contextvars.copy_context()
        context.run(current_context.set, ctx)
        task = asyncio.get_running_loop().create_task(self._run(work, ctx), context=context)
        self.running += 1
        self._tasks.setdefault(tp, set()).add(task)
        task.add_done_callback(partial(self._done, tp, hold))

    async def _run(self, work: Coroutine[Any, Any, None], ctx: MessageContext) -> None:
        try:
            await work
        except asyncio.CancelledError:
            work.close()
            raise
        except Exception as exc:  # a bug in spawned work must not kill the processor
            self._report(HandlerError(ctx.where, exc))

    def _done(self, tp: TP, hold: Hold | None, task: asyncio.Task[None]) -> None:
        self.running -= 1
        self._slot_free.set()
        self._tasks.get(tp, set()).discard(task)
        if hold is not None and self._holds.pop(hold, False) and not task.cancelled():
            tracker = self._offsets.get(tp)
            if tracker is not None:
                tracker.finished(hold[1])
