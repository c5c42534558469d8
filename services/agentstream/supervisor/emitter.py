"""Publishing exactly one TaskResult per task, across crashes, without transactions.

Before a result is sent, a marker holding it is written through to the ``dedupe`` table
(acknowledged by the broker). A marker still "emitting" after a crash means the result
may or may not have reached the results topic; the new owner reads that partition of the
results topic from the offset the marker noted and sends the result only if it is not
there.

An emission runs as spawned work. If it fails (the broker refuses the marker or the
result), the specialist result that completed the task goes to the retry chain at once,
as the specialist's failures do: it comes back from a tier and the task is decided
again (no marker was written) or its emission is finished (the marker holds the
result); out of tiers, it is dead-lettered, and a FAILED result (when no marker was
written) is published behind a marker of its own, as a decided result is.

A "sent" marker holds its write time (``at``) and is deleted ``dedupe.retention_s`` after
it (see marker_written_at); an "emitting" one never expires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from functools import partial
from typing import Any

from agentstream import metrics
from agentstream.events import SPECIALIST_RESULT, TASK_RESULT, now_ms
from agentstream.retry.background import Retried
from agentstream.retry.chain import RETRY, RetryChain
from agentstream.retry.headers import ATTEMPT, REPLAY, decode_headers
from agentstream.runtime import MessageContext, Table
from agentstream.runtime.lag import end_offsets
from agentstream.serde import SerdeError
from agentstream.service import Service
from agentstream.supervisor.cancels import cancel_recorded_at
from agentstream.supervisor.combine import COMPLETED
from agentstream.supervisor.escalation import ESCALATED
from agentstream.supervisor.escalation import closed_at as escalation_closed_at
from agentstream.supervisor.marker_writes import MarkerWrites
from agentstream.supervisor.revision import is_revising
from agentstream.telemetry import tracing
from agentstream.telemetry.logs import task_line_level

log = logging.getLogger(__name__)

EMITTING = "emitting"
SENT = "sent"

Record = dict[str, Any]


def marker_written_at(marker: Record) -> int | None:
    """When a "sent" marker was written; None (never expires) for one still emitting or
    one written before markers held a time (marker_stamp gives it one)."""
    if marker.get("state") != SENT:
        # an escalation's approval record, once decided, or a cancel's record (supervisor/cancels.py)
        return escalation_closed_at(marker) or cancel_recorded_at(marker)
    at = marker.get("at")
    return at if isinstance(at, int) else None


def marker_stamp(marker: Record, now: int) -> Record | None:
    """An old "sent" marker without a time counts as written now; others are left alone."""
    return {**marker, "at": now} if marker.get("state") == SENT else None


class ResultEmitter:
    """Decides, sends and marks the TaskResults of one supervisor's partitions."""

    retries: RetryChain  # bound by build_supervisor: the chain calls the supervisor's handler

    def __init__(self, service: Service, markers: Table, pending: Table) -> None:
        self.service = service
        self.app = service.processor
        self.markers = markers  # task_id -> {state, result, results_from | offset, replay, at}: written through
        self.writes = MarkerWrites(self.app, markers)  # the markers of concurrent emissions share round trips
        self.retried = Retried(self.app, service.input_topic)  # a FAILED result's send refused after its marker
        self.pending = pending  # task_id -> specialist results received so far
        self.results_topic = service.topology.topic("results")
        self.emitting: set[str] = set()  # decided here, marker not yet acknowledged
        self._in_flight: set[str] = set()  # emissions running here, from decision to "sent"
        self._results_end: dict[int, int] = {}  # a lower bound of the end of each results partition

    def start(self, final: Record | Awaitable[Record | None], received: list[Record], ctx: MessageContext,
              replay: str | None) -> None:
        """Emit ``final``, decided on the specialist results ``received`` (the last one is
        the record of ``ctx``), as spawned work. ``final`` may still be in the making (the
        supervisor's review): the source offset is held until its marker is written. A
        review that comes to None sent the task back for a revision (supervisor/reviser.py,
        which wrote the task's marker): nothing is emitted now."""
        task_id = received[-1]["task_id"]
        self.emitting.add(task_id)
        self._in_flight.add(task_id)
        # The supervisor's stage starts when the last specialist result it needed was done.
        ready_at = max(int(r.get("finished_at") or 0) for r in received)
        self.app.spawn(self._guarded(self._emit(task_id, final, ctx, replay, ready_at), task_id, received, ctx))

    def spawn_guarded(self, work: Awaitable[None], received: list[Record], ctx: MessageContext) -> None:
        """Run ``work`` for the task of ``received`` as spawned work; if it fails, the
        specialist result of ``ctx`` (the last of ``received``) goes to the retry chain,
        as an emission's does."""
        self.app.spawn(self._guarded(work, received[-1]["task_id"], received, ctx))

    def unfinished(self, task_id: str) -> Record | None:
        """The marker of an emission decided but not finished, and not running here (it
        failed, or a crash left it): the next specialist result of the task finishes it."""
        marker = self.markers.get(task_id)
        return marker if self.is_unfinished(task_id, marker) else None

    def is_unfinished(self, task_id: str, marker: Record | None) -> bool:
        """unfinished() of the task's ``marker`` the caller has just read."""
        return marker is not None and marker.get("state") == EMITTING and task_id not in self._in_flight

    async def publish(self, final: Record, partition: int, replay: str | None) -> None:
        """Emit ``final``, decided with no specialist result in hand (a human's decision on
        an escalation, supervisor/escalator.py): its marker, then the result. A failure
        leaves the escalation decided: the partition's next owner finishes it."""
        task_id = final["task_id"]
        self._in_flight.add(task_id)  # a specialist result of the task meanwhile must not finish it too
        try:
            await self.writes.write(task_id, self._emitting(final, partition, replay), partition=partition)
            await self._send(final, partition, replay)
        finally:
            self._in_flight.discard(task_id)
        log.info("%s[%d]: task %s %s by a human's decision", self.results_topic, partition, task_id, final["status"])

    def finish(self, marker: Record, received: list[Record], ctx: MessageContext) -> None:
        """Finish the emission ``marker`` stands for, as spawned work."""
        task_id = marker["result"]["task_id"]
        self._in_flight.add(task_id)
        self.app.spawn(self._guarded(self._settle([marker], ctx.partition), task_id, received, ctx))

    async def settle(self, marker: Record, partition: int) -> None:
        """Finish the "emitting" ``marker`` of a failed emission: send its result unless
        the results topic has it already."""
        task_id = marker["result"]["task_id"]
        self._in_flight.add(task_id)
        try:
            await self._settle([marker], partition)
        finally:
            self._in_flight.discard(task_id)

    async def recover(self, partitions: list[int]) -> None:
        """Finish what a previous owner left "emitting": send only what never arrived."""
        # Off the event loop: the broker may take up to its timeout (30 s) to answer, and
        # the work running for the partitions this worker already owns must go on meanwhile.
        topics = [self.results_topic]
        ends = await asyncio.get_running_loop().run_in_executor(None, end_offsets, self.service.settings.bootstrap, topics)
        for partition in partitions:
            self._results_end[partition] = ends[(self.results_topic, partition)]
            unsure = [marker for _, marker in self.markers.items_of(partition) if marker.get("state") == EMITTING]
            if unsure:
                await self._settle(unsure, partition)

    # -- one emission --------------------------------------------------------------------
    async def _emit(self, task_id: str, decision: Record | Awaitable[Record | None], ctx: MessageContext,
                    replay: str | None, ready_at: int) -> None:
        partition = ctx.partition
        try:
            final = decision if isinstance(decision, dict) else await decision
            if final is None:  # sent back for a revision
                return
            await self.writes.write(task_id, self._emitting(final, partition, replay), partition=partition)
        finally:
            self.emitting.discard(task_id)
        # Only now: the deletion would reach the changelog at the next checkpoint while the
        # source offset is still held (a review takes seconds), and after a crash the
        # redelivered result would find its task's other results gone and wait forever.
        if task_id in self.pending:
            del self.pending[task_id]
        self.app.release()  # the decision is durable: the specialist results may be committed
        metrics.stage_done(self.service.agent, final["status"], ready_at, now_ms())  # combine or review, and the marker
        await self._send(final, partition, replay)
        # Not routine: a failure, a COMPLETED result with an error (a partial failure), a replay.
        log.log(task_line_level(final["status"] == COMPLETED and not final.get("error") and replay is None),
                "%s: task %s %s via %s", ctx.where, task_id, final["status"], "+".join(final["agents"]))

    async def _send(self, final: Record, partition: int, replay: str | None = None) -> None:
        encoded = self.service.schemas.encode(TASK_RESULT, final)
        offset = await self.app.send_acked(self.results_topic, encoded, final["session_id"], partition=partition)
        self._results_end[partition] = max(self._results_end.get(partition, 0), offset + 1)
        metrics.task_result(self.service.agent, final)
        # The terminal event goes before the "sent" marker: a task's streams wait for it only a
        # grace period after the result (gateway/stream_gate.py), and the marker's round trip
        # (behind the partition's previous marker batch: marker_writes.py) would only delay it.
        # It is queued, not awaited: a crash before the producer sends it is made good by the
        # settling (_settle), which sends it again.
        self._terminal_event(final)
        sent = {"state": SENT, "offset": offset, "replay": replay, "at": now_ms()}
        await self.writes.write(final["task_id"], sent, partition=partition)

    async def _settle(self, unsure: list[Record], partition: int) -> None:
        """Send the result of each "emitting" marker in ``unsure`` unless the results
        topic has it already (from the earliest offset they noted)."""
        published = await self._published(partition, min(m["results_from"] for m in unsure))
        out = [m for m in unsure if _result_key(m["result"]) in published]
        for marker in out:
            # Its terminal event was queued after the result's ack and may not have left
            # before a crash: sent again (events are at least once; a duplicate only here).
            with tracing.resumed(marker.get("trace")):
                self._terminal_event(marker["result"])
        if out:  # one write for all of them (a recovery may find many)
            sent = {"state": SENT, "offset": -1, "at": now_ms()}
            await self.app.persist_all(self.markers, [(m["result"]["task_id"], sent) for m in out], partition=partition)
        for marker in unsure:
            final = marker["result"]
            if _result_key(final) not in published:
                log.info("%s[%d]: resending the result of task %s", self.results_topic, partition, final["task_id"])
                with tracing.resumed(marker.get("trace")):
                    await self._send(final, partition, marker.get("replay"))

    def _terminal_event(self, final: Record) -> None:
        """Queue the STATE event of the task's end: its status, by the agents that answered."""
        self.service.progress(final, "STATE", final["status"], ",".join(final["agents"]))

    async def _published(self, partition: int, from_offset: int) -> set[tuple[str, int]]:
        """The results (``_result_key``) in ``partition`` of the results topic from ``from_offset``."""
        published = set()
        for _, value, _ in await self.app.read_to_end(self.results_topic, partition, from_offset):
            try:
                published.add(_result_key(self.service.schemas.decode_as(TASK_RESULT, value or b"")))
            except SerdeError:
                continue
        return published

    # -- failures ------------------------------------------------------------------------
    async def _guarded(self, work: Awaitable[None], task_id: str, received: list[Record], ctx: MessageContext) -> None:
        """Run ``work``; if it fails, send the specialist result of ``ctx`` (the last of
        ``received``) to the retry chain at once instead of leaving the task to the next
        owner of the partition."""
        try:
            await work
        except Exception as exc:  # CancelledError is not one: the next owner recovers the marker
            log.error("%s: the result of task %s was not published: %s: %s", ctx.where, task_id, type(exc).__name__, exc,
                      exc_info=exc)
            await self._fail(task_id, received, ctx, exc)
        finally:
            self._in_flight.discard(task_id)

    async def _fail(self, task_id: str, received: list[Record], ctx: MessageContext, exc: Exception) -> None:
        marker = self.markers.get(task_id)
        # Emitting, or waiting for a human, counts as decided: the marker's settling or the
        # human's decision answers the task, so a FAILED result now could be a second one.
        # Sent back for a revision does not, once the task dies here: what failed is the
        # revision awaited or its request, and nothing else would ever answer the task (a
        # revision that comes all the same finds the FAILED result's marker: a repeat).
        decided = marker is not None and marker.get("state") in (EMITTING, ESCALATED)
        attempt = int(decode_headers(ctx.headers).get(ATTEMPT, "0") or 0)
        raw = self.service.schemas.encode(SPECIALIST_RESULT, received[-1])
        # With a marker, a FAILED result could be a second one (the result may have reached
        # the topic): out of tiers, the dead letter alone is sent, and the marker is
        # settled by the partition's next owner.
        dead: list[Record] = []  # the FAILED result of a task dead-lettered here, published below
        if self.retries.failed(raw, ctx, exc, attempt, result=not decided, publish=dead.append) != RETRY:
            for final in dead:
                await self._publish_failed(final, ctx)
            return
        if not decided and not is_revising(marker):
            # No marker: when the result comes back from its tier, the task is decided again
            # (a revising one: on the round's results its marker holds).
            self.pending[task_id] = received
        # The handler that started this emission returned already, and the chain settled
        # it: the session's later results wait again until this one is back.
        session = received[-1]["session_id"]
        self.retries.retrying[session] = self.retries.retrying.get(session, 0) + 1

    async def _publish_failed(self, final: Record, ctx: MessageContext) -> None:
        """Publish the FAILED result of a task dead-lettered here as a decided result is:
        its marker, then the result. A copy of its specialist result read again (after a
        crash, before the source offset was committed) then finds the task decided, instead
        of deciding it again. A refused marker (often what failed the task in the first
        place): the result is sent without one, as the chain sends it for other stages (a
        marker that landed all the same is settled by that result: _settle finds it). A send
        refused after the marker is tried again in the background: the source offset is
        committed, and no later result of the task is likely to come and finish it."""
        task_id = final["task_id"]
        partition = ctx.partition
        replay = (ctx.header(REPLAY) or b"").decode() or None
        marker = self._emitting(final, partition, replay)
        self._in_flight.add(task_id)  # no result of the task meanwhile finishes the marker
        try:
            if not await self._mark_failed(marker, ctx):
                self.service.result(final)
                return
            try:
                await self._send(final, partition, replay)
            except Exception as exc:
                log.warning("%s: the FAILED result of task %s was not sent (%s: %s); sent again in the background",
                            ctx.where, task_id, type(exc).__name__, exc, exc_info=exc)
                self.retried.later(partial(self.settle_unfinished, task_id, partition),
                                   f"sending the FAILED result of task {task_id}", partition)
        finally:
            self._in_flight.discard(task_id)

    async def _mark_failed(self, marker: Record, ctx: MessageContext) -> bool:
        """Write the "emitting" ``marker`` of a FAILED result; whether the broker took it."""
        task_id = marker["result"]["task_id"]
        self.emitting.add(task_id)  # a copy of its specialist result meanwhile is a repeat
        try:
            await self.writes.write(task_id, marker, partition=ctx.partition)
            return True
        except Exception as exc:
            log.warning("%s: the FAILED result of task %s is sent without its marker (%s: %s); a copy of its "
                        "specialist result read again after a crash would decide it again", ctx.where, task_id,
                        type(exc).__name__, exc, exc_info=exc)
            return False
        finally:
            self.emitting.discard(task_id)

    async def settle_unfinished(self, task_id: str, partition: int) -> None:
        """Finish the task's emission unless it is finished, or being finished, meanwhile."""
        if (marker := self.unfinished(task_id)) is not None:
            await self.settle(marker, partition)

    def _emitting(self, final: Record, partition: int, replay: str | None) -> Record:
        """The "emitting" marker of ``final``: the end of the results partition as known
        here (settling reads it from there), and the current trace (a resend after a
        crash continues it: the task's, or a human decision's)."""
        marker = {"state": EMITTING, "result": final, "results_from": self._results_end.get(partition, 0), "replay": replay}
        tracing.keep(marker)
        return marker

def _result_key(result: Record) -> tuple[str, int]:
    """What tells one published result of a task from another: a task whose dead letter is
    replayed has the dead-lettering's FAILED result on the topic too, maybe after the
    offset the replay's marker noted (that result is not an acknowledged send, so it does
    not move the noted end); its own result has the marker's ``completed_at``."""
    return result["task_id"], result["completed_at"]
