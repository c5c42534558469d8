"""Durable execution of one agent loop: every model reply and tool result is checkpointed
(acknowledged by the broker) before anything that depends on it happens — a reply before
its turn's tools run, a side-effecting result before the call returns, a turn's read-only
results before the run's next record (below) — and a resumed loop replays them instead of
calling the model or the tool again.

A reply without tool calls (the answer, or a history summary) is written without waiting too: the
next model call waits for it (a summary is in that call's messages), and the end of the run
before the result (specialist/lifecycle.py sends the transcript while it lands).

The loop itself (specialist/loop.py) is unchanged: it runs from the start, and these
wrappers answer its model and tool calls from the checkpoint chain while there is one.
So after a kill -9 at most the model call in flight is made again; a tool call in flight
is repeated with the same idempotency key, which tools can read with
:func:`idempotency_key` to recognise the repeat.

The calls of one model turn run concurrently. A call with side effects (``@tool(
side_effects=True)``, or held for a human's approval) is checkpointed the moment it
returns, so once it has returned a kill -9 never runs it again. The results of calls
without side effects wait and go into the same record — the next side-effecting
result's, or one at the end of the turn: a turn of two lookups is one record, not two.
The end-of-turn record (read-only results only) is not waited for: the next model call
starts while the broker acknowledges it, and the run's next waited record, or the end of
the run (:func:`landed_at_exit`), or a loop stopping for a drain, waits for it too: a refused
one fails the run there (one model call later than before). A kill -9 before it lands — mid-turn,
as before, or now also during the next model call — makes the resume run the turn's
read-only calls again, with the model call that was in flight. The price: read-only calls
run again after a kill — calls that by their own declaration change nothing, so only their
time is spent again.
(Waiting for the end-of-turn record put one acknowledged write between every tool turn and
the next model call: bench/RESULTS.md, session 12.) A new task's head is such a record
too: the run starts with its write on its way (specialist/lifecycle.py _accept), and its
first waited record waits for it.

Records do not wait for each other to be produced: each is produced at once, behind the
run's records still on their way, and a waited one returns once it and every record
before it have landed. One run's records go to one partition in sequence order (an
idempotent producer), so they land in that order; should one be refused and a later one
land, the chain rebuilt on a resume stops at the missing sequence number
(checkpoint.rebuild) and never takes the later one, and the run, failed at its next wait,
tombstones every key it wrote (the lifecycle's end). Waiting for each acknowledgement
before producing the next put up to four round trips in a row on a task's path (the head,
a reply, a read-only turn, the answer): bench/RESULTS.md, session 17.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from agentstream.approvals.gate import ApprovalGate, Cleared
from agentstream.cancellation.records import TaskCanceled
from agentstream.events import now_ms
from agentstream.models.base import Message, Model, ModelResponse
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.loop import StepNotRecorded
from agentstream.tools.registry import DEFAULT_TIMEOUT_S, ToolRegistry, ToolResult

Persist = Callable[[str, dict[str, Any]], Awaitable[None]]

_T = TypeVar("_T")

_idempotency_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("agentstream_idempotency_key", default=None)


def idempotency_key() -> str | None:
    """Inside a tool: ``<task id>:<model step>:<call index>``, the same on a repeat."""
    return _idempotency_key.get()


class DurableRun:
    """The checkpoint state of one task attempt: its epoch, replay chain and next seq."""

    def __init__(
        self, task_id: str, epoch: int, chain: ckpt.Chain, persist: Persist, draining: Callable[[], bool] = lambda: False,
        gate: ApprovalGate | None = None, canceled: Callable[[], Mapping[str, Any] | None] = lambda: None,
        landing: asyncio.Future[None] | None = None, last_awaited_by_caller: bool = False,
    ) -> None:
        self.task_id = task_id
        self.canceled = canceled  # the task's TaskCancel once one is recorded (specialist/canceling.py)
        self.gate = gate  # tool calls that need a human's approval (approvals/gate.py)
        self.draining = draining
        self.epoch = epoch
        self.chain = chain
        self.seq = chain.length
        self.persist = persist
        self.model_step = -1
        self.last_text: str | None = None  # the model's latest text: the answer so far, for an approval request
        self.calls = 0  # complete() calls so far in this run, replayed ones included
        self.replayed_model_calls = 0
        self.new_model_calls = 0
        self.requests = ckpt.RequestSummaries()  # what each new model call was asked, for the transcript
        # The writes not yet seen to land, in the order they were produced: from the start,
        # the task's head when its write may still be on its way (specialist/lifecycle.py
        # _accept). A waiter awaits them one by one (landed), not a chain of tasks each
        # awaiting the one before: every link cost the waiter one more turn of the event
        # loop, ~20-30 ms each at 1,000 loops (bench/RESULTS.md, session 24).
        self._on_its_way: list[asyncio.Future[None]] = []
        if landing is not None:
            landing.add_done_callback(retrieved)
            self._on_its_way.append(landing)
        # A reply without tool calls written without waiting: the next model call (after a
        # history summary) waits for it; after the answer, the end of the run does.
        self.reply_on_its_way = False
        # The run's caller awaits landed() itself once the loop returns (landed_at_exit).
        self.last_awaited_by_caller = last_awaited_by_caller

    def stop_if_canceled(self) -> None:
        """At a step boundary: raise TaskCanceled if the task was canceled meanwhile."""
        cancel = self.canceled()
        if cancel is not None:
            raise TaskCanceled(cancel)

    async def record(self, make: Callable[[int], dict[str, Any]], *, wait: bool = True) -> None:
        """Write the next step record: produced now, behind the run's records still on
        their way (module docstring: records land in order without waiting for each
        other). ``wait``: return once it and every record before it have landed (raise
        StepNotRecorded if one was refused); ``wait=False``: return at once, the next
        waited record, or :meth:`landed`, waits for it."""
        seq = self.seq
        self.seq += 1
        # A task: its first step produces the record; tasks start in the order they are
        # created, so the records are produced in sequence order (no await since ``seq``).
        write = asyncio.ensure_future(self._write(seq, make))
        write.add_done_callback(retrieved)  # a run that stops without awaiting it logs no warning
        self._on_its_way.append(write)
        del write
        if wait:
            await self.landed()

    async def landed(self) -> None:
        """Return once every record written so far has landed; raise StepNotRecorded if one
        was refused: the first refused one, once the records up to the last have settled
        too (nothing of them is still on its way when the run fails), and again to the
        next waiter if records were written after those (they depend on it). Shielded: a
        cancelled waiter leaves the writes to land or fail on their own, and to be awaited
        again (a refusal still to report)."""
        on_its_way = self._on_its_way
        if not on_its_way:
            return
        last = on_its_way[-1]
        first: asyncio.Future[None] | None = None
        try:
            while last in on_its_way:  # another waiter may have seen some land meanwhile
                first = on_its_way[0]
                try:
                    await asyncio.shield(first)
                except Exception:  # not a CancelledError: a cancelled waiter leaves every write where it is
                    await self._settle_after_refusal(first, last)
                    raise
                if on_its_way and on_its_way[0] is first:
                    del on_its_way[0]
        finally:
            # A refusal's traceback holds this frame, and the writes hold the refusal: no
            # cycle left for the collector (it would keep the run and its records).
            del on_its_way, last, first

    async def _settle_after_refusal(self, refused: asyncio.Future[None], last: asyncio.Future[None]) -> None:
        """Wait for the writes up to ``last`` to settle; then forget them, but keep
        ``refused`` in front of the writes after ``last`` (their waiter learns of it too).
        Nothing to do if another waiter of the refusal did it meanwhile."""
        on_its_way = self._on_its_way
        try:
            through = on_its_way.index(last) + 1 if last in on_its_way else 0
            settling = [write for write in on_its_way[:through] if not write.done()]
            if settling:  # (asyncio.wait takes two turns even when every write has settled)
                await asyncio.wait(settling)
            if last in on_its_way:
                later = on_its_way[on_its_way.index(last) + 1:]
                on_its_way[:] = [refused, *later] if later else []
        finally:
            # The refusal's traceback holds this frame too: it must not hold the writes.
            on_its_way = settling = later = refused = last = None  # type: ignore[assignment]

    async def stop_for_drain(self) -> NoReturn:
        """Stop the loop at this step boundary because the worker drains: once a record
        written without waiting has landed (or failed: the next owner resumes from what
        landed), so the partition is handed over with no write of this run still to come."""
        with contextlib.suppress(StepNotRecorded):
            await self.landed()
        raise asyncio.CancelledError("worker draining")

    async def _write(self, seq: int, make: Callable[[int], dict[str, Any]]) -> None:
        try:
            await self.persist(ckpt.step_key(self.task_id, self.epoch, seq), make(seq))
        except Exception as exc:
            raise StepNotRecorded(f"Step {seq} of task {self.task_id} could not be checkpointed: {exc}") from exc


async def landed_at_exit(run: DurableRun, loop: Awaitable[_T]) -> _T:
    """``loop``'s outcome once every step record it wrote has landed, also when it raises
    (a run canceled or held for approval has its steps in the checkpoint before its end is
    written). A run whose ``last_awaited_by_caller`` is set returns with its last record
    (its answer) maybe still on its way: the caller awaits ``run.landed()`` before anything
    that depends on it (the lifecycle sends the run's transcript meanwhile). Outside the run's
    wall-clock limit: a slow acknowledgement can hold the run past it. A cancelled loop
    does not wait: a drained one waited where it stopped (DurableRun.stop_for_drain), and
    one cancelled outright (its partition lost, or still running when the drain's grace
    ran out) leaves the record to land or not, as a cancelled write-through always did;
    the next owner reads what landed."""
    try:
        outcome = await loop
    except Exception:
        await run.landed()
        raise
    if not run.last_awaited_by_caller:
        await run.landed()
    return outcome


def retrieved(landing: asyncio.Future[Any]) -> None:
    """A done callback: reads the write's outcome, so a refusal nobody awaited logs no warning."""
    if not landing.cancelled():
        landing.exception()


class DurableModel:
    """A Model that answers from the checkpoint chain first, and checkpoints new replies."""

    def __init__(self, inner: Model, run: DurableRun) -> None:
        self.inner = inner
        self.run = run
        self.model_id = inner.model_id

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        # Steps are numbered by call, not by the assistant turns in ``messages``: history
        # compression rewrites the conversation, but the loop is deterministic, so the
        # n-th call of a replay is the n-th call of the original run (summaries included).
        step = self.run.calls
        self.run.calls += 1
        self.run.model_step = step
        recorded = self.run.chain.models.get(step)
        if recorded is not None:
            self.run.replayed_model_calls += 1
            replayed = ckpt.response_of(recorded)
            self.run.last_text = replayed.text or self.run.last_text
            return replayed
        if self.run.draining():
            # Shutting down: stop at the step boundary; the next owner resumes from here.
            await self.run.stop_for_drain()
        self.run.stop_if_canceled()  # before a new model call, never during one
        if self.run.reply_on_its_way:  # a history summary: this call's messages hold it
            self.run.reply_on_its_way = False
            await self.run.landed()
        began, clock = now_ms(), time.monotonic()
        response = await self.inner.complete(messages, tools)
        timing = ckpt.Timing(began, round((time.monotonic() - clock) * 1000))
        self.run.new_model_calls += 1
        self.run.last_text = response.text or self.run.last_text
        request = self.run.requests.summary(messages, tools)  # for the task's transcript
        # A reply's tools run once it has landed. A reply without tool calls (the answer, or
        # a history summary) is awaited by what depends on it: the next model call, or the
        # end of the run before the result (landed_at_exit, the lifecycle's _finish).
        calls_tools = bool(response.tool_calls)
        await self.run.record(lambda seq: ckpt.model_step(step, response, self.run.epoch, seq, timing=timing, request=request),
                              wait=calls_tools)
        self.run.reply_on_its_way = not calls_tools
        return response


class DurableTools(ToolRegistry):
    """A ToolRegistry view whose calls are replayed from, or recorded to, the chain."""

    def __init__(self, inner: ToolRegistry, run: DurableRun) -> None:
        super().__init__(max_result_chars=inner.max_result_chars)
        self.adopt(inner)
        self.inner = inner
        self.run = run

    async def call_many(self, calls: Sequence[tuple[str, object]], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[ToolResult]:
        step = self.run.model_step
        self.run.stop_if_canceled()  # before any call of the step: a step's calls run all or none
        if self.run.gate is not None:
            # Before any call of the step runs: a step waiting for a human runs nothing yet.
            self.run.gate.check(step, calls, lambda index: (step, index) in self.run.chain.tools, self.run.last_text)
        unrecorded: list[ckpt.Finished] = []  # read-only results of this turn not yet in a record
        results = await concurrently([self._one(step, i, name, args, timeout_s, unrecorded)
                                      for i, (name, args) in enumerate(calls)])
        if unrecorded:  # read-only results only: the next model call need not wait for them
            await self._record(step, _take(unrecorded), wait=False)
        return list(results)

    def _without_side_effects(self, name: str) -> bool:
        """Whether a call of ``name`` may wait for its turn's record: the tool says it acts
        on nothing (an unknown tool is taken to act) and no human must approve it."""
        found = self.inner.get(name)
        held = self.run.gate is not None and name in self.run.gate.policies
        return found is not None and not found.side_effects and not held

    async def _record(self, step: int, finished: list[ckpt.Finished], *, wait: bool = True) -> None:
        first, *more = finished
        await self.run.record(lambda seq: ckpt.tool_step(step, first.index, first.result, self.run.epoch, seq,
                                                         timing=first.timing, more=more), wait=wait)

    async def _one(
        self, step: int, index: int, name: str, arguments: object, timeout_s: float, unrecorded: list[ckpt.Finished],
    ) -> ToolResult:
        recorded = self.run.chain.tools.get((step, index))
        if recorded is not None:
            return ckpt.tool_result_of(recorded)
        if self.run.draining():
            await self.run.stop_for_drain()
        cleared = self.run.gate.clear(step, index, arguments) if self.run.gate is not None else Cleared(arguments)
        began, clock = now_ms(), time.monotonic()
        if cleared.denial is not None:
            result = ToolResult(name, False, cleared.denial)
        else:
            token = _idempotency_key.set(f"{self.run.task_id}:{step}:{index}")
            try:
                result = await self.inner.call(name, cleared.arguments, timeout_s)
            finally:
                _idempotency_key.reset(token)
        finished = ckpt.Finished(index, result, ckpt.Timing(began, round((time.monotonic() - clock) * 1000)))
        if self._without_side_effects(name):
            unrecorded.append(finished)  # recorded with the turn's next record
        else:
            # Durable before this call returns: the read-only results so far ride along.
            await self._record(step, [finished, *_take(unrecorded)])
        return result


async def concurrently(calls: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
    """The results of ``calls`` in order, run concurrently as ``asyncio.gather`` runs them,
    but the first in this task: gather wraps every call in a task that starts one turn of
    the event loop later, and wakes its caller two turns after the last one ends: three
    turns for any number of calls; here a turn of one call takes none, and of two calls two
    (tests/unit/test_loop_turns.py; bench/RESULTS.md, session 24).

    Unlike gather, a call's error is raised once the calls before it have ended (they are
    awaited in order); the calls after it go on, their errors read (none is logged as never
    retrieved). A cancelled caller cancels them all, also when the first call swallows the
    cancellation. The other calls' tasks are created before the first call starts, so they
    do not see what it sets in the context (a tool's idempotency key); the first call's
    context is the caller's, so a tool that sets a context variable without resetting it
    leaves it set for the rest of the run's step."""
    if not calls:
        return []
    first, *rest = calls
    others = [asyncio.ensure_future(call) for call in rest]
    caller = asyncio.current_task()
    requests = caller.cancelling() if caller is not None else 0
    try:
        results = [await first]
        if caller is not None and caller.cancelling() > requests:
            # The first call swallowed the caller's cancellation (a tool catching every
            # error): as under gather, the caller is cancelled all the same.
            raise asyncio.CancelledError()
        for index in range(len(others)):
            results.append(await others[index])
        return results
    except asyncio.CancelledError:
        _cancel_all(others)
        raise
    except BaseException:
        _read_later(others)
        raise
    finally:
        # An error's traceback holds this frame: it must not hold the calls too (a cycle).
        first = rest = others = caller = None  # type: ignore[assignment]


def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
        task.add_done_callback(retrieved)


def _read_later(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.add_done_callback(retrieved)


def _take(items: list[ckpt.Finished]) -> list[ckpt.Finished]:
    """Empty ``items`` and return what it held (no await in between: no other call of the
    turn can add to it or take it meanwhile)."""
    taken = list(items)
    items.clear()
    return taken
