"""The supervisor's escalations (supervisor/escalation.py): hold a task for a human, answer
the decisions addressed to the supervisor, and apply deadlines.

Decisions come on the ``approval_decisions`` topic, keyed by session like the
supervisor's input, so partition p of both is on this worker. The specialists with tool
approvals consume the same topic in their own groups; each consumer takes only the
decisions whose ``agent_type`` is its own (the request's, copied into the decision), so a
decision for the supervisor is never answered "unknown approval" by a specialist, nor one
for a specialist by the supervisor.

Deadlines: one event-loop timer per partition (approvals/timers.py), due at the earliest
pending deadline of the partition's escalations; set when a task is held and, from the
pending approval records, after every assignment (so a restart or a rebalance re-arms it). The same
assignment finishes an escalation a crash left decided but not yet published. A deadline
that fails to apply (a broker error), or a decided escalation whose result fails to
publish, is retried in the background with back-off (retry/background.py) while the
partition's other deadlines go on.

Cancels come on the ``control`` topic, co-partitioned too: a cancel of a task that waits
here closes its approval and publishes its CANCELED result. A cancel of a task not decided
yet (its review running, a specialist or a revision still out) is recorded
(supervisor/cancels.py) before its record is committed, and the task's decision reads it
before its review and after it, so it ends CANCELED and is never held. A cancel and a hold
take the same lock: the cancel comes before the hold (no request is sent) or after it (the
approval is closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from functools import partial
from typing import Any

from agentstream.approvals.policy import DeadlinePolicy
from agentstream.approvals.records import (
    DENY, PENDING, apply_decision, approval_requested, closed_by_cancel, escalated, still_waits,
)
from agentstream.approvals.timers import PartitionDeadlines
from agentstream.events import APPROVAL_REQUESTED, now_ms
from agentstream.runtime import MessageContext, Table
from agentstream.service import Service
from agentstream.specialist.waiting import DEADLINE_WHO, WAITING_STATE
from agentstream.supervisor.cancels import cancel_entry, cancel_key, canceled_result
from agentstream.supervisor.emitter import ResultEmitter
from agentstream.supervisor.escalation import (
    APPROVAL_KEY, approval_key, edit_refused, escalated_marker, held, is_escalated, needs_human, outcome,
    request_task,
)
from agentstream.retry.background import Retried
from agentstream.supervisor.revision import is_revising

log = logging.getLogger(__name__)

Record = dict[str, Any]


class Escalator:
    """Holds escalated tasks for a human on behalf of one supervisor."""

    def __init__(self, service: Service, markers: Table, pending: Table, emitter: ResultEmitter,
                 policy: DeadlinePolicy) -> None:
        self.service = service
        self.app = service.processor
        self.markers = markers
        self.pending = pending
        self.emitter = emitter
        self.policy = policy
        self.agent = service.agent  # its requests' agent_type: the decisions to take
        self.requests_topic = service.topology.topic("approvals")
        self._deciding = asyncio.Lock()  # a human's decision and a deadline may race
        self.deadlines = PartitionDeadlines(self._due)
        self.retried = Retried(self.app, service.input_topic)

    async def hold(self, decided: Record, combined: Mapping[str, Any], received: list[Record], partition: int,
                   replay: str | None) -> None:
        """Make the escalated TaskResult ``decided`` wait for a human: the approval record
        and the task's marker written through first (a crash after them re-sends the
        request: app.py), then the request, acknowledged; only then may the specialist
        result that completed the task be committed."""
        task_id = decided["task_id"]
        task_input = next((str(r["input"]) for r in received if r.get("input")), "")
        record = held(self.agent, decided, combined.get("error"), task_input, self.policy, now_ms())
        # One write, in this order (a kill leaves a prefix): the record before the marker.
        await self.app.persist_all(self.markers, [(approval_key(record["approval_id"]), record),
                                                  (task_id, escalated_marker(record, replay))], partition=partition)
        self.emitter.emitting.discard(task_id)  # decided by the human from now on
        if task_id in self.pending:  # after the marker, as emitter.py does
            del self.pending[task_id]
        await self.request(record)
        self.app.release()
        self.deadlines.arm(record["deadline"], partition)
        self.service.progress(decided, "STATE", WAITING_STATE,
                              f"waiting for approval of {record['tool']} ({record['approval_id']}): "
                              f"{decided['error']['message']}")
        log.info("task %s waits for a human: %s", task_id, record["approval_id"])

    async def after_review(self, reviewing: Awaitable[Record | None], combined: Mapping[str, Any],
                           received: list[Record], partition: int, replay: str | None) -> Record | None:
        """The review's TaskResult to publish now, or None: the review sent the task back
        for a revision, or escalated it and the task now waits for a human. A cancel
        recorded while the review ran makes it the task's CANCELED result instead."""
        decided = await reviewing
        if decided is None:
            return None
        async with self._deciding:  # a cancel is applied before the hold or after it, never between
            stopped = self.canceled(decided, partition)
            if stopped is not None:
                log.info("task %s was canceled during its review: %s", decided["task_id"], stopped["error"]["message"])
                return stopped
            if not needs_human(decided):
                return decided
            await self.hold(decided, combined, received, partition, replay)
        return None

    def canceled(self, final: Mapping[str, Any], partition: int) -> Record | None:
        """``final`` as a CANCELED result if a cancel of its task is recorded, else None."""
        entry = self._get(cancel_key(final["task_id"]), partition)
        return canceled_result(final, entry) if isinstance(entry, dict) else None

    async def resend(self, marker: Mapping[str, Any], partition: int) -> None:
        """A specialist result of the ``escalated`` task came again: a crash may have come
        before its request was out, so send it again while it is pending."""
        record = self.record_of(marker, partition)
        if record is not None and record["status"] == PENDING:
            await self.request(record)

    async def request(self, record: Mapping[str, Any]) -> None:
        """Send the ApprovalRequested of ``record`` (again, after a crash: the latest copy
        of an id is the one listed)."""
        request = approval_requested(record, request_task(record), self.agent)
        encoded = self.service.schemas.encode(APPROVAL_REQUESTED, request)
        await self.app.send_acked(self.requests_topic, encoded, record["session_id"])

    def record_of(self, marker: Mapping[str, Any], partition: int) -> Record | None:
        """The approval record the ``escalated`` marker waits on."""
        found = self._get(approval_key(marker["approval_id"]), partition)
        return found if isinstance(found, dict) else None

    # -- decisions ------------------------------------------------------------------------
    async def on_decision(self, decision: dict[str, Any], ctx: MessageContext) -> None:
        """The handler of ApprovalDecision records: the supervisor's own only."""
        if decision["agent_type"] != self.agent:
            return  # a specialist's approval: its desk answers it
        async with self._deciding:
            await self._decide(decision, ctx.partition, ctx.where, ctx.offset)

    async def _decide(self, decision: Mapping[str, Any], partition: int, where: str, offset: int = -1) -> None:
        """Apply ``decision`` (read at ``offset`` of the decisions topic; -1: a deadline's)."""
        ident = decision["approval_id"]
        key = approval_key(ident)
        record = self._get(key, partition)
        if record is None:
            self._refuse(decision, where, f"no approval {ident!r} is known to the supervisor (a wrong id, or one "
                                          "decided long ago); nothing was changed")
            return
        refused = edit_refused(decision) if record["status"] == PENDING else None
        if refused is not None:
            self._refuse(decision, where, still_waits(ident, refused, offset))
            return
        verdict, updated = apply_decision(record, decision, now_ms())
        if verdict == "duplicate":
            await self.app.persist(self.markers, key, updated, partition=partition)  # recorded, and ignored
            self._refuse(decision, where, f"approval {ident!r} was already decided ({record['status']} by "
                                          f"{(record['decision'] or {}).get('who') or '?'}); this "
                                          f"{decision['decision']} is ignored")
            return
        if verdict != "applied":  # hash_mismatch (bad_edit is caught above)
            self._refuse(decision, where, still_waits(ident, "its arguments_hash is not the requested answer's", offset))
            return
        await self.app.persist(self.markers, key, updated, partition=partition)
        self.service.progress(decision, "TEXT", WAITING_STATE,
                              f"{decision['decision']} of {record['tool']} ({ident}) by {decision['who'] or '?'}")
        await self._publish(updated, partition)

    async def on_cancel(self, cancel: dict[str, Any], ctx: MessageContext) -> None:
        """The handler of TaskCancel records: a task waiting for a human here ends CANCELED;
        one not decided yet gets its cancel recorded, written through before this handler
        returns (so before the record's offset is committed), for its decision to read. A
        task decided already keeps its result (one running at a specialist is also that
        specialist's to stop)."""
        task_id = cancel["task_id"]
        async with self._deciding:
            marker = self._get(task_id, ctx.partition)
            if is_escalated(marker):
                await self._close(marker, cancel, ctx)
            elif marker is None or is_revising(marker):
                await self.app.persist(self.markers, cancel_key(task_id), cancel_entry(cancel, now_ms()),
                                       partition=ctx.partition)
                log.info("%s: cancel of task %s recorded: it ends CANCELED when it is decided", ctx.where, task_id)
            else:
                log.info("%s: task %s has its result already; its cancel is ignored", ctx.where, task_id)

    async def _close(self, marker: Mapping[str, Any], cancel: Mapping[str, Any], ctx: MessageContext) -> None:
        """Close the pending approval the ``escalated`` marker waits on, and publish CANCELED."""
        record = self.record_of(marker, ctx.partition)
        if record is None or record["status"] != PENDING:
            return
        closed = closed_by_cancel(record, cancel, now_ms())
        await self.app.persist(self.markers, approval_key(record["approval_id"]), closed, partition=ctx.partition)
        log.info("%s: task %s: its wait for %s is dropped: canceled", ctx.where, cancel["task_id"], record["approval_id"])
        await self._publish(closed, ctx.partition)

    async def _publish(self, record: Mapping[str, Any], partition: int) -> None:
        """Publish the outcome of the decided ``record`` if its task still waits; if that
        fails (a broker error), again in the background until it is out: the decision is
        recorded already, so nothing else would publish it before the next assignment."""
        task_id = record["task_id"]
        await self.retried.run(partial(self._finish, task_id, partition),
                               f"publishing the {record['status']} result of task {task_id}", partition)

    async def _finish(self, task_id: str, partition: int) -> None:
        """Publish the result of the task's decided escalation, unless it is out already:
        a task still marked escalated is published; one marked emitting (a failure after
        its marker) is sent only if the results topic lacks it (emitter.settle_unfinished)."""
        marker = self._get(task_id, partition)
        if is_escalated(marker):
            record = self.record_of(marker, partition)
            if record is not None and record["status"] != PENDING:
                await self.emitter.publish(outcome(record), partition, marker.get("replay"))
        else:
            await self.emitter.settle_unfinished(task_id, partition)

    def _refuse(self, decision: Mapping[str, Any], where: str, why: str) -> None:
        log.warning("%s: %s", where, why)
        self.service.progress(decision, "ERROR", "REJECTED", f"approval decision rejected: {why}")

    # -- after an assignment, and deadlines -----------------------------------------------
    async def recover(self, partitions: list[int]) -> None:
        """Arm the deadlines of the escalations waiting on ``partitions``, and publish the
        ones a crash left decided."""
        for partition in partitions:
            for record in self._records(partition):
                if record["status"] == PENDING:
                    self.deadlines.arm(record["deadline"], partition)
                else:
                    await self._publish(record, partition)

    def _records(self, partition: int) -> list[Record]:
        """The approval records of ``partition``, pending or decided."""
        store = self.markers.partition(partition)
        return [self.markers.decode_value(value) for _, value in store.scan(APPROVAL_KEY.encode())]

    def _get(self, key: str, partition: int) -> Any:
        return self.markers.partition(partition).get_value(key.encode(), self.markers.decode_value)

    def _due(self, partition: int) -> None:
        if partition in self.app.assigned_partitions():  # else its new owner armed the deadlines
            self.app.spawn_resumed(self._deadlines(partition), self.service.input_topic, partition)

    async def _deadlines(self, partition: int) -> None:
        """Apply ``on_deadline`` to every escalation of ``partition`` past its deadline;
        arm the timer for the next. One that fails (a broker error) is retried in the
        background; the others are applied meanwhile."""
        for found in self._records(partition):
            if found["status"] != PENDING:
                continue
            if found["deadline"] > now_ms():
                self.deadlines.arm(found["deadline"], partition)
                continue
            ident = found["approval_id"]
            await self.retried.run(partial(self._apply_deadline, ident, partition), f"applying the deadline of {ident}",
                                   partition)

    async def _apply_deadline(self, ident: str, partition: int) -> None:
        """Apply the deadline of approval ``ident`` if it is still pending and past it."""
        async with self._deciding:
            record = self._get(approval_key(ident), partition)
            if record is not None and record["status"] == PENDING and record["deadline"] <= now_ms():
                await self._deadline(record, partition)

    async def _deadline(self, record: Record, partition: int) -> None:
        raised = escalated(record, now_ms())
        if raised is not None:
            # The request first: if the record's write then fails, the retry (which finds
            # the deadline still past) asks again; the other way round, a failed request
            # would be lost behind a record already moved on.
            await self.request(raised)
            await self.app.persist(self.markers, approval_key(record["approval_id"]), raised, partition=partition)
            self.deadlines.arm(raised["deadline"], partition)
            self.service.progress(record, "TEXT", WAITING_STATE,
                                  f"approval {record['approval_id']} passed its deadline; escalated to {raised['approvers']}")
            return
        passed = now_ms() - record["deadline"]
        decision = {"task_id": record["task_id"], "session_id": record["session_id"], "agent_type": self.agent,
                    "approval_id": record["approval_id"], "decision": DENY, "arguments_hash": None,
                    "edited_arguments_json": None, "who": DEADLINE_WHO,
                    "why": f"no decision before the deadline ({passed} ms ago)", "decided_at": now_ms()}
        await self._decide(decision, partition, f"{self.service.input_topic}[{partition}]")
