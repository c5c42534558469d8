"""A specialist's tasks that wait for a human: their records, requests and decisions.

When a model step calls tools the topology's ``approvals:`` policy holds back, the loop
raises AwaitingApproval (approvals/gate.py) and ends; nothing of it stays in memory.
What stays is in the ``checkpoints`` table: the task's head and steps as for any task,
one ``a/<approval_id>`` record per held call (approvals/records.py), the marker
``w/<run>`` listing the approvals the run waits for, and ``ws/<session>/<run>``, which
finds the session's waiting run when a later task of the session comes (it waits behind
it: specialist/lifecycle.py; no session place is held in memory for a wait nothing
follows). Requests go to the ``approvals`` topic; decisions come back on
``approval_decisions``, keyed by session like the specialist's input, so partition p of
both is on this worker. The waiting gauge is a count per partition, not a set of runs.

Once every approval of the step is decided the task resumes from its checkpoint: the
model's step is replayed (not called again), and the held calls run with the approved
arguments, or return the denial to the model.

Deadlines: the pending ``a/`` records are the durable timers. The worker owning their
partition keeps one event-loop timer per partition, due at the earliest pending deadline
(rounded up to the next second, so calls due together share one firing): it is set when a
call is held, and from every pending record after an assignment (take_over), so a
restart or a rebalance re-arms it. When it fires, the partition's ``a/`` records are read
and every pending call past its deadline gets the policy's ``on_deadline``: ``deny`` decides as a
human's denial would (who = ``deadline``); ``escalate`` sends the request again (same
approval id) to the ``escalate_to`` approver group with a new deadline, at which the call
is denied. No timer per waiting call: one kept its message's context (the record, its
log fields) alive until its deadline, decided or not, about 1.3 kB of Python heap a call
(bench/RESULTS.md "Waiting memory").
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from agentstream import metrics
from agentstream.approvals.gate import ApprovalGate, AwaitingApproval
from agentstream.approvals.policy import ApprovalPolicy
from agentstream.approvals.records import (
    DENY, PENDING, apply_decision, approval_id, approval_prefix, approval_requested, closed_by_cancel, escalated,
    still_waits, waiting_call,
)
from agentstream.approvals.timers import PartitionDeadlines
from agentstream.events import APPROVAL_REQUESTED, now_ms
from agentstream.runtime import MessageContext, Table
from agentstream.service import Service
from agentstream.specialist import checkpoint as ckpt

log = logging.getLogger(__name__)

APPROVAL = "a/"
_APPROVAL_PREFIX = APPROVAL.encode()
WAITING = "w/"
WAITING_SESSION = "ws/"  # not under ``w/``: a scan of the markers does not list these
WAITING_STATE = "WAITING_INPUT"
DEADLINE_WHO = "deadline"
DEADLINE_TICK_MS = 1000  # deadlines fire up to this late; calls due within one tick share a read of the partition

Resume = Callable[[dict[str, Any], int], None]  # (task head, partition)


def approval_key(ident: str) -> str:
    return f"{APPROVAL}{ident}"


def waiting_key(run: str) -> str:
    return f"{WAITING}{run}"


def session_prefix(session: str) -> str:
    """What the ``ws/`` keys of ``session``'s waiting runs start with (a session id may
    hold "/": the record's ``session_id`` is compared too)."""
    return f"{WAITING_SESSION}{session}/"


def session_key(session: str, run: str) -> str:
    return f"{session_prefix(session)}{run}"


def closed_at(value: Any) -> int | None:
    """The expiry clock of ``a/`` records: a decided approval expires like a done marker;
    a pending one never does."""
    return value.get("closed_at") if isinstance(value, Mapping) else None


class ApprovalDesk:
    """The approvals of one specialist's partitions (see the module docstring)."""

    resume: Resume  # bound by the lifecycle: resume a task from its head

    def __init__(self, service: Service, agent_type: str, policies: Mapping[str, ApprovalPolicy],
                 describe: Callable[[str], str], checkpoints: Table) -> None:
        self.service = service
        self.agent_type = agent_type
        self.policies = dict(policies)
        self.describe = describe
        self.checkpoints = checkpoints
        self.requests_topic = service.topology.topic("approvals")
        self._deciding = asyncio.Lock()  # one decision at a time: a human's and a deadline's may race
        self._waiting: dict[int, int] = {}  # partition -> runs waiting (the gauge): a count, nothing per run
        self._deadlines = PartitionDeadlines(self._deadlines_due, DEADLINE_TICK_MS)  # one timer per partition

    def gate(self, task: Mapping[str, Any], partition: int) -> ApprovalGate | None:
        """The run's gate, with every decision already taken for it; None: no policy."""
        if not self.policies:
            return None
        run = ckpt.run_id(task)
        prefix = approval_key(approval_prefix(self.agent_type, run))
        decided: dict[tuple[int, int], dict[str, Any]] = {}
        store = self.checkpoints.partition(partition)
        if not store.may_hold(_APPROVAL_PREFIX):  # most partitions hold no approval: no scan per run
            return ApprovalGate(self.policies, self.describe, decided)
        for _, value in store.scan(prefix.encode()):
            record = json.loads(value)
            if record["run"] == run:
                decided[(int(record["step"]), int(record["index"]))] = record
        return ApprovalGate(self.policies, self.describe, decided)

    def waits(self, run: str, partition: int) -> bool:
        """Whether ``run`` waits for a decision (some approval of its marker is pending)."""
        ids = self._get(waiting_key(run), partition)
        return bool(ids) and any(self._pending(ident, partition) for ident in ids)

    def waiting_run(self, session: str, partition: int) -> str | None:
        """The run of ``session`` waiting for a decision on ``partition``, if any (read
        from the ``ws/`` records: no memory is kept per waiting run)."""
        for _, value in self.checkpoints.partition(partition).scan(session_prefix(session).encode()):
            entry = json.loads(value)
            if entry["session_id"] == session and self.waits(entry["run"], partition):
                return str(entry["run"])
        return None

    async def wait(self, task: Mapping[str, Any], held: AwaitingApproval, partition: int) -> None:
        """Record the held calls, then ask for decisions: pending records and the waiting
        marker first (a crash after them re-asks on restart), then the requests."""
        run = ckpt.run_id(task)
        now = now_ms()
        records = []
        for call in held.calls:
            ident = approval_id(self.agent_type, run, call.step, call.index)
            record = self._get(approval_key(ident), partition)
            if record is None:  # a replay that reaches the same held call asks again, same id
                record = waiting_call(call, ident, run, task, now, held.answer_so_far)
                await self._persist(approval_key(ident), record)
            records.append(record)
        new = self._get(waiting_key(run), partition) is None
        # The session's entry before the marker (in one write, a kill leaves a prefix): a
        # marker is always found from its session.
        await self._persist_all([(session_key(task["session_id"], run), {"session_id": task["session_id"], "run": run}),
                                 (waiting_key(run), [r["approval_id"] for r in records])], partition)
        if new:
            self._count(partition, +1)
        for record in records:
            self._arm(record, partition)
        for record in records:
            await self._request(record, task)
        detail = ", ".join(f"{r['tool']} ({r['approval_id']})" for r in records)
        self.service.progress(task, "STATE", WAITING_STATE, f"waiting for approval of {detail}")
        log.info("task %s waits for approval of %s", task["task_id"], detail)

    async def take_over(self, partition: int) -> set[str]:
        """After an assignment of ``partition``: arm the deadline of every pending approval,
        drop the waiting markers (and session entries) a crash left behind once every
        approval was decided (the task then resumes like any other), count the waiting
        runs. The runs that wait: for the lifecycle, which resumes every other head. Scans
        only, no read per waiting run; the sets of run ids live only while the partition
        is taken."""
        store = self.checkpoints.partition(partition)
        pending: set[str] = set()
        for _, value in store.scan(APPROVAL.encode()):
            record = json.loads(value)
            if record["status"] == PENDING:
                self._arm(record, partition)
                pending.add(record["run"])
        waiting: set[str] = set()
        stale: list[str] = []
        for key, _ in store.scan(WAITING.encode()):
            run = key.decode()[len(WAITING):]
            if run in pending:
                waiting.add(run)
            else:
                stale.append(key.decode())
        stale += [key.decode() for key, value in store.scan(WAITING_SESSION.encode()) if json.loads(value)["run"] not in waiting]
        if stale:
            await self._persist_all([(key, None) for key in stale], partition)
        self._waiting[partition] = len(waiting)
        self._count()
        return waiting

    async def close(self, run: str, partition: int, cancel: Mapping[str, Any]) -> bool:
        """The task of ``run`` was canceled: close its pending approvals and end its wait
        (the caller resumes it, which ends it). Whether it was waiting."""
        async with self._deciding:  # not while a decision or a deadline is being applied
            ids = self._get(waiting_key(run), partition)
            if not ids:
                return False
            for ident in ids:
                if self._pending(ident, partition):
                    record = self._get(approval_key(ident), partition)
                    await self._persist(approval_key(ident), closed_by_cancel(record, cancel, now_ms()))
            await self._end_wait(run, ids, partition)
            log.info("task %s: its wait for %s is dropped: canceled", cancel["task_id"], ids)
            return True

    async def on_decision(self, decision: dict[str, Any], ctx: MessageContext) -> None:
        """The handler of ApprovalDecision records."""
        if decision["agent_type"] != self.agent_type:
            return  # another specialist type's approval
        async with self._deciding:
            await self._decide(decision, ctx)

    async def _decide(self, decision: dict[str, Any], ctx: MessageContext) -> None:
        ident = decision["approval_id"]
        record = self._get(approval_key(ident), ctx.partition)
        if record is None:
            self._refuse(decision, ctx, f"no approval {ident!r} is known to the {self.agent_type} specialist "
                                        "(a wrong id, or one that finished long ago); nothing was changed")
            return
        verdict, updated = apply_decision(record, decision, now_ms())
        if verdict == "duplicate":
            await self._persist(approval_key(ident), updated)  # recorded, and ignored
            self._refuse(decision, ctx, f"approval {ident!r} was already decided ({record['status']} by "
                                        f"{(record['decision'] or {}).get('who') or '?'}); this {decision['decision']} is ignored")
            return
        if verdict != "applied":
            why = ("its arguments_hash is not the requested call's" if verdict == "hash_mismatch"
                   else "edited_arguments_json is not a JSON object")
            self._refuse(decision, ctx, still_waits(ident, why, ctx.offset))
            return
        await self._persist(approval_key(ident), updated)
        self.service.progress(decision, "TEXT", WAITING_STATE,
                              f"{decision['decision']} of {record['tool']} ({ident}) by {decision['who'] or '?'}")
        log.info("%s: approval %s: %s by %s", ctx.where, ident, decision["decision"], decision["who"] or "?")
        await self._resume_if_decided(record["run"], ctx.partition)

    async def _request(self, record: Mapping[str, Any], task: Mapping[str, Any]) -> None:
        request = approval_requested(record, task, self.agent_type)
        encoded = self.service.schemas.encode(APPROVAL_REQUESTED, request)
        await self.service.processor.send_acked(self.requests_topic, encoded, task["session_id"])

    def _arm(self, record: Mapping[str, Any], partition: int) -> None:
        """Have the partition's deadline timer fire by ``record``'s deadline (one timer: it
        fires at the earliest and is set again for the next)."""
        self._deadlines.arm(int(record["deadline"]), partition)

    def _deadlines_due(self, partition: int) -> None:
        """Apply the deadline of every pending call of ``partition`` past it; set the timer
        for the next one."""
        if partition not in self.service.processor.assigned_partitions():
            return  # its new owner armed its deadlines (and so does this worker if it comes back)
        now = now_ms()
        for _, value in self.checkpoints.partition(partition).scan(APPROVAL.encode()):
            record = json.loads(value)
            if record["status"] != PENDING:
                continue
            if record["deadline"] <= now:
                self.service.processor.spawn_resumed(self._deadline(record["approval_id"], partition),
                                                     self.service.input_topic, partition)
            else:
                self._arm(record, partition)

    async def _deadline(self, ident: str, partition: int) -> None:
        async with self._deciding:
            record = self._get(approval_key(ident), partition)
            if record is None or record["status"] != PENDING or record["deadline"] > now_ms():
                return  # decided in time, or escalated with a new deadline meanwhile
            task = {"task_id": record["task_id"], "session_id": record["session_id"]}
            raised = escalated(record, now_ms())
            head = self._get(ckpt.head_key(record["run"]), partition)
            if raised is not None and head is not None:
                # The request before the record that says it was sent: a kill between the two
                # escalates (and asks) again on the next assignment, rather than never asking.
                await self._request(raised, head["task"])
                await self._persist(approval_key(ident), raised)
                self._arm(raised, partition)
                self.service.progress(task, "TEXT", WAITING_STATE,
                                      f"approval {ident} passed its deadline; escalated to {raised['approvers']}")
                log.info("approval %s passed its deadline; escalated to %s", ident, raised["approvers"])
                return
            passed = now_ms() - record["deadline"]
            decision = {**task, "approval_id": ident, "agent_type": self.agent_type, "decision": DENY,
                        "arguments_hash": None, "edited_arguments_json": None, "who": DEADLINE_WHO,
                        "why": f"no decision before the deadline ({passed} ms ago)", "decided_at": now_ms()}
            await self._decide(decision, MessageContext(self.service.input_topic, partition, -1, None, (), 0))

    async def _resume_if_decided(self, run: str, partition: int) -> None:
        if self.waits(run, partition) or self._get(waiting_key(run), partition) is None:
            return  # another approval of the step is pending, or the task is not waiting
        head = self._get(ckpt.head_key(run), partition)
        await self._end_wait(run, self._get(waiting_key(run), partition), partition)
        if head is not None:
            self.resume(head, partition)

    async def _end_wait(self, run: str, ids: list[str], partition: int) -> None:
        """Tombstone the run's waiting marker, then its session entry (a crash between the
        two leaves an entry that waiting_run ignores and the next assignment drops)."""
        first = self._get(approval_key(ids[0]), partition) if ids else None
        entries = [(session_key(first["session_id"], run), None)] if first is not None else []
        await self._persist_all([(waiting_key(run), None), *entries], partition)
        self._count(partition, -1)

    def _count(self, partition: int | None = None, change: int = 0) -> None:
        """Keep the waiting gauge: the runs waiting on the partitions this worker owns now
        (a revoked partition's runs are counted by its new owner; dropped here at the next
        change, not at the revocation)."""
        if partition is not None:
            self._waiting[partition] = self._waiting.get(partition, 0) + change
        owned = self.service.processor.assigned_partitions()
        self._waiting = {p: count for p, count in self._waiting.items() if p in owned}
        metrics.waiting_for_approval(self.agent_type, sum(self._waiting.values()))

    def _refuse(self, decision: Mapping[str, Any], ctx: MessageContext, why: str) -> None:
        log.warning("%s: %s", ctx.where, why)
        self.service.progress(decision, "ERROR", "REJECTED", f"approval decision rejected: {why}")

    def _pending(self, ident: str, partition: int) -> bool:
        record = self._get(approval_key(ident), partition)
        return record is not None and record["status"] == PENDING

    def _get(self, key: str, partition: int) -> Any:
        raw = self.checkpoints.partition(partition).get(key.encode())
        return None if raw is None else json.loads(raw)

    async def _persist(self, key: str, value: Any) -> None:
        await self.service.processor.persist(self.checkpoints, key, value)

    async def _persist_all(self, items: list[tuple[str, Any]], partition: int) -> None:
        """Several keys in this order, in one acknowledged write (a kill leaves a prefix)."""
        await self.service.processor.persist_all(self.checkpoints, items, partition=partition)
