"""The durable life of a routed task on its specialist: accepted, run, resumed, ended.

- The handler only checks for duplicates and schedules; the loop runs as spawned work.
- Acceptance is a write-through checkpoint head; once the broker has it, the source
  offset is released, so offsets keep advancing while long loops run. The head's write
  goes on while the task waits for its session's turn and its first model call runs: the
  run's first record is produced behind it and waits for it too (specialist/durable.py:
  records are produced without waiting for earlier ones to land, and land in order), so a
  kill before it lands repeats only that call, the task being redelivered from its
  uncommitted offset.
- Every model reply and tool result is checkpointed before anything that depends on it
  (the read-only results of a turn in one record, landing while the next model call
  runs: specialist/durable.py); after a kill -9 or
  a rebalance, the new owner of the
  partition resumes every task it finds in the checkpoints, replaying finished steps.
- One task at a time per session, in arrival order (specialist/order.py).
- At the end: the transcript (specialist/transcript_writer.py), sent while the run's
  answer lands, and then the result are sent and acknowledged; then one write holds the
  done marker and the tombstones of the task's checkpoint records (_finish). The run's
  step records are kept in memory while it runs (specialist/run_steps.py), so its end
  reads nothing back from the checkpoint.
- A revision (the supervisor sent the task back, RoutedTask.revision n > 0) is a run of
  its own: every record above is keyed by ckpt.run_id, so it is not taken for a duplicate
  of the task, and a repeated request for revision n is one of revision n.
- A model step calling tools that need a human's approval (topology ``approvals:``)
  ends the loop: the task waits with nothing in memory (specialist/waiting.py); a
  decision resumes it from its checkpoint. It keeps its session's place in memory only
  when a later task of the session already waits behind it; a task of the session that
  comes later finds the waiting run in the checkpoints and queues behind it then. So a
  restart reads no waiting task's records beyond its key and markers.
- A canceled task (cancellation/) stops at its next step boundary, or at once when it
  waits for approval, and ends with a CANCELED report (specialist/canceling.py).
- A task whose models were all unavailable, or whose work crashed (a bug, a checkpoint
  the broker refused), goes to the retry chain at once: the next tier, or the DLQ with a
  FAILED result. The tier's copy is the run's next attempt, never a duplicate: back
  before the run's head is tombstoned (a short tier delay, a slow acknowledgement), it
  waits for that write beside the partition; after a refused one, it takes the head's
  place (_succeeds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from agentstream import metrics
from agentstream.approvals.gate import AwaitingApproval
from agentstream.cancellation.records import CANCELED, TaskCanceled, cancel_error
from agentstream.events import ROUTED_TASK, SPECIALIST_RESULT, now_ms
from agentstream.retry.background import Retried
from agentstream.retry.chain import DEAD, RETRY, RetryChain
from agentstream.retry.classify import ErrorClass, TransientStageError, ValidationFailed, classify
from agentstream.retry.headers import ATTEMPT, REPLAY, decode_headers
from agentstream.runtime import MessageContext, Table
from agentstream.runtime.errors import CheckpointError
from agentstream.service import Service
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.agent import SpecialistAgent
from agentstream.specialist.canceling import Cancellations
from agentstream.specialist.durable import DurableRun, retrieved
from agentstream.specialist.loop import AgentOutcome, StepNotRecorded
from agentstream.specialist.order import SessionOrder, SessionPlaces
from agentstream.specialist.run_end import OWED, Owed, RunEnd, answer_landed, owed, owed_result
from agentstream.specialist.run_steps import RunSteps
from agentstream.specialist.transcript_writer import TranscriptWriter
from agentstream.specialist.waiting import ApprovalDesk
from agentstream.telemetry import log_context, tracing
from agentstream.telemetry.logs import task_line_level

log = logging.getLogger(__name__)

MAX_REDELIVERIES = 3  # owners in a row that died at the same step before the task fails
REDELIVERY_LIMIT = "REDELIVERY_LIMIT"
# Outcomes worth another attempt later: every model of the chain failed transiently.
TRANSIENT_CODES = frozenset({"MODEL_UNAVAILABLE"})
DEAD_LETTERED = "DEAD_LETTERED"
CRASHED = "CRASHED"  # the task's work raised; replaced by DEAD_LETTERED when it is not retried
DONE = "done"
WAITING = "waiting"  # for a human's approval: the session's place is kept

Task = dict[str, Any]
Place = asyncio.Future[None]
# A task's loop: its outcome and start time, or None when it ended the task itself.
Work = Awaitable[tuple[AgentOutcome, int] | None]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task: the record it came from (a routed task, a retry tier's copy,
    or a stand-in for a task resumed from its checkpoint), its retry attempt, for an
    operator's replay of a dead letter the replay id, and its checkpoint as known here."""

    source: MessageContext
    number: int
    replay: str | None
    steps: RunSteps

    @classmethod
    def of(cls, ctx: MessageContext) -> Attempt:
        """A new run (its first epoch, no steps yet) of the task in ``ctx``."""
        seen = decode_headers(ctx.headers)
        return cls(ctx, int(seen.get(ATTEMPT, "0") or 0), seen.get(REPLAY) or None, RunSteps([[0, 0]]))

    @property
    def partition(self) -> int:
        return self.source.partition


class TaskLifecycle:
    """Accepts, runs, resumes and ends the tasks of one specialist's partitions."""

    retries: RetryChain  # bound by build_specialist: the chain calls on_routed back

    def __init__(
        self, service: Service, agent: SpecialistAgent, checkpoints: Table, retrying: Table, desk: ApprovalDesk | None = None,
        cancels: Cancellations | None = None,
    ) -> None:
        self.service = service
        self.desk = desk
        if desk is not None:
            desk.resume = self.resume_decided
        self.cancels = cancels
        if cancels is not None:
            cancels.resume = self.resume_decided  # a canceled wait resumes, and ends at once
        self.app = service.processor
        self.agent = agent
        self.checkpoints = checkpoints
        self.retrying = retrying  # shared with the retry chain
        self.places = SessionPlaces()
        self.accepting: set[str] = set()  # accepted here, head write not yet acknowledged
        self.looping: set[str] = set()  # runs whose loop has not handed its session place on yet
        self.decided_early: dict[str, tuple[dict[str, Any], int]] = {}  # run -> (head, partition): see resume_decided
        self.parking: dict[str, asyncio.Event] = {}  # run -> set once its park write is done and its place kept (_fail)
        self.supervisor_topic = service.topology.topic("supervisor")
        self.transcripts = TranscriptWriter.of(service)
        self.ended_later = Retried(self.app, service.input_topic)  # end writes not acknowledged once (run_end.py)

    # -- entry points --------------------------------------------------------------------
    async def on_routed(self, task: Task, ctx: MessageContext) -> None:
        """The handler of routed tasks (and of their copies from the retry tiers)."""
        task_id = task["task_id"]
        if task["agent_type"] != self.agent.agent_type:
            # Not skipped: a record that ends nowhere is lost. The chain dead-letters it.
            raise ValidationFailed(
                f"RoutedTask {task_id!r} is for agent type {task['agent_type']!r} but arrived on the "
                f"{self.agent.agent_type} specialist's topic; produce it to that type's topic instead (the router does)."
            )
        run = ckpt.run_id(task)  # a revision is a run of its own, deduplicated as one
        if (parked := self.parking.get(run)) is not None:
            # Its copy from a retry tier, read before the failed run's head went (a short
            # tier delay, a slow broker): it waits for that write beside the partition (the
            # spawned work holds its offset), not in this handler, which would stop the
            # worker's intake for a broker's acknowledgement.
            log.debug("%s: task %s is back from a tier before its run's park write landed; it waits for it", ctx.where, run)
            self.app.spawn(self._after_park(parked, task, ctx))
            return
        if (work := self._taken_on(task, ctx)) is not None:
            self.app.spawn(work)

    async def _after_park(self, parked: asyncio.Event, task: Task, ctx: MessageContext) -> None:
        await parked.wait()
        try:
            work = self._taken_on(task, ctx)
        except Exception as exc:  # as the handler's would: to the chain, not lost with this work
            log.error("%s: task %s back from a tier was not taken on: %s: %s", ctx.where, task["task_id"], type(exc).__name__,
                      exc, exc_info=exc)
            attempt = Attempt.of(ctx)
            if self.retries.failed(self.service.schemas.encode(ROUTED_TASK, task), ctx, exc, attempt.number) == DEAD:
                # Ended as a run that dies here ends (_fail), so the supervisor has its result;
                # a copy from a tier settles its session.
                dead = AgentOutcome("FAILED", None, (DEAD_LETTERED, f"{type(exc).__name__}: {exc}"), [], {}, 0)
                await self._complete(task, dead, attempt, now_ms())
            elif attempt.number == 0:
                self.retrying[task["session_id"]] = self.retrying.get(task["session_id"], 0) + 1  # as the chain's input does
            return
        if work is not None:
            await work  # not spawned again: this work holds the copy's offset already

    def _taken_on(self, task: Task, ctx: MessageContext) -> Coroutine[Any, Any, None] | None:
        """The work of the run ``ctx`` brings, or None for a duplicate of one accepted here."""
        run = ckpt.run_id(task)
        replayed = ctx.header(REPLAY) is not None  # an operator replays a dead letter: run it again
        done = ckpt.done_key(run) in self.checkpoints and not replayed
        head = self.checkpoints.get(ckpt.head_key(run))
        if run in self.accepting or done or (head is not None and not self._succeeds(head, ctx, run)):
            # A tier's copy meeting a run still live here (resumed from an earlier attempt's
            # head after a crash): worth a look, as it is the trace a lost copy would leave.
            copy = not done and Attempt.of(ctx).number > 0
            log.log(logging.WARNING if copy else logging.INFO, "%s: task %s already accepted; duplicate ignored", ctx.where, run)
            return None
        previous, mine = self._place(run, task["session_id"], ctx.partition)
        self.accepting.add(run)  # only now: a failure before would leave every later copy a duplicate
        self.looping.add(run)
        return self._accept_and_run(task, ctx, previous, mine)

    def _succeeds(self, head: dict[str, Any], ctx: MessageContext, run: str) -> bool:
        """Whether ``ctx`` holds the next attempt of a run whose head is left over from an
        earlier one that nothing runs here: its park write was refused (_park), so the
        head stayed behind the tier's copy. Taken for a duplicate, the task would be lost
        and its session parked for good; accepted, its new head replaces that one. A run
        waiting for a human (resumed from such a head after a crash) is live all the same:
        the decision resumes it."""
        waiting = self.desk is not None and self.desk.waits(run, ctx.partition)
        return run not in self.looping and not waiting and Attempt.of(ctx).number > int(head.get("attempt", 0))

    async def resume_in_flight(self, partitions: list[int]) -> None:
        """After an assignment: resume every task whose checkpoint head is still there,
        except those waiting for a decision (only their keys are read: see _place); a run
        that had ended gets its end write (_end_again), one whose end was owed gets what it
        owed (_send_owed)."""
        for partition in partitions:
            store = self.checkpoints.partition(partition)
            waiting = await self.desk.take_over(partition) if self.desk is not None else set()
            placed = {key.decode()[len(ckpt.PLACE):]: json.loads(value) for key, value in store.scan(ckpt.PLACE.encode())}
            self._restore_places(placed, partition)
            heads = [json.loads(value) for key, value in store.scan(ckpt.HEAD.encode())
                     if key.decode()[len(ckpt.HEAD):] not in waiting]
            # A retried task goes first: it holds its session's place.
            for head in sorted(heads, key=lambda h: (ckpt.run_id(h["task"]) not in placed, h.get("offset", 0))):
                if self._ended(head, partition):
                    self.app.spawn_resumed(self._end_again(head, partition), self.service.input_topic, partition)
                elif OWED in head:
                    self.app.spawn_resumed(self._send_owed(head, partition), self.service.input_topic, partition)
                else:
                    self._resume_task(head, partition)

    def _ended(self, head: dict[str, Any], partition: int) -> bool:
        """Whether the run of ``head`` sent its result and a kill cut its end write short:
        its done marker is stored, and is its own (not one of the run an operator's replay
        runs again: a replay's head was accepted after that marker)."""
        raw = self.checkpoints.partition(partition).get(ckpt.done_key(ckpt.run_id(head["task"])).encode())
        if raw is None:
            return False
        return head.get("replay") is None or int(self.checkpoints.decode_value(raw)) >= int(head.get("accepted_at", now_ms()))

    async def _end_again(self, head: dict[str, Any], partition: int) -> None:
        """Finish the end write of a run that ended (see _ended) instead of running it again:
        a resume would rebuild its chain from the step records left and call again what the
        tombstones that landed had removed. The tombstones that are left, the head last."""
        task = head["task"]
        run = ckpt.run_id(task)
        steps = RunSteps.read(self.checkpoints.partition(partition), run, head["epochs"])
        place = [(ckpt.place_key(run), None)] if self._stored(ckpt.place_key(run), partition) else []
        log.info("%s[%d]: task %s had ended (its done marker is stored); its end write is finished", self.service.input_topic,
                 partition, task["task_id"])
        # Retried beside the partition as _finish's end write is: the head stays until it lands.
        await self.ended_later.run(partial(self._forget, run, partition, steps, place), f"the end write of task {run}",
                                   partition)
        if int(head.get("attempt", 0)) > 0:  # as _complete: the session's parked tasks may go now
            await self.retries.settled(task["session_id"])

    def resume_decided(self, head: dict[str, Any], partition: int) -> None:
        """Every approval the task waited for is decided: resume it in its session's
        place (if its loop has not handed the place on yet, as soon as it does)."""
        run = ckpt.run_id(head["task"])
        if run in self.looping:
            self.decided_early[run] = (head, partition)
            return
        self._resume_task(head, partition)

    # -- accepting and resuming ----------------------------------------------------------
    async def _accept_and_run(self, task: Task, ctx: MessageContext, previous: Place | None, mine: Place) -> None:
        verdict = ""
        try:
            attempt = Attempt.of(ctx)
            accepted = self._write_head(task, attempt)
            try:
                verdict = await self._conclude(task, attempt, self._accept(task, attempt, previous, accepted))
            except asyncio.CancelledError:
                # The partition went (or a drain's grace ran out): the head's write goes with
                # the work, as when it was awaited inline, and a copy redelivered here is
                # accepted again. So do the run's records produced behind it (DurableRun):
                # one still waiting for the partition's turn behind an unproduced head would
                # land without it.
                accepted.cancel()
                attempt.steps.cancel_writes()
                raise
        finally:
            self._leave_or_keep(task, mine, verdict)

    def _write_head(self, task: Task, attempt: Attempt) -> asyncio.Future[None]:
        """Start the write of the task's checkpoint head. It lands while the task waits for
        its session's turn and its first model call runs: the run's first waited record waits
        for it (DurableRun: records land in order), and so does an end before the loop's (_fail)."""
        run = ckpt.run_id(task)
        try:
            head = {"task": task, "epochs": attempt.steps.epochs, "offset": attempt.source.offset, "attempt": attempt.number,
                    "replay": attempt.replay, "trace": tracing.traceparent(),  # a resumed run continues the trace
                    "accepted_at": now_ms()}  # a done marker older than it is another run's (_ended)
            stale: list[str] = []
            if attempt.number or attempt.replay:
                # Its earlier attempt's step keys were tombstoned when it went to a tier, unless
                # that write was refused (_succeeds), and a late write of a worker that had lost
                # the partition may have left one since: tombstoned in the head's write, before
                # it, so no step of this attempt is taken for one of them after a crash.
                stale = [key.decode() for key, _ in self.checkpoints.partition(attempt.partition).scan(
                    ckpt.step_prefix(run).encode())]
                attempt.steps.keys.extend(stale)  # and at its end, should this write be refused
        except BaseException:
            self.accepting.discard(run)
            raise
        accepted = asyncio.ensure_future(self._accepted(run, head, stale, attempt.partition))
        accepted.add_done_callback(retrieved)
        attempt.steps.wait_for(partial(asyncio.shield, accepted))  # until the run's loop takes it over (_run)
        return accepted

    async def _accept(
        self, task: Task, attempt: Attempt, previous: Place | None, accepted: asyncio.Future[None],
    ) -> tuple[AgentOutcome, int]:
        await SessionOrder.wait(previous)
        return await self._run(task, ckpt.Chain(), attempt, attempt.source.where, accepted)

    async def _accepted(self, run: str, head: dict[str, Any], stale: list[str], partition: int) -> None:
        """Write the head of ``run`` (after the tombstones of ``stale`` step keys, in one
        write); once the broker has it, the task is accepted and its source offset may be
        committed. A refused head is the run's StepNotRecorded: the loop's next record
        raises it, and the task's work fails into the retry chain as it would for any
        refused checkpoint (its offset is released when the work ends)."""
        try:
            if stale:
                await self.app.persist_all(self.checkpoints, [*((key, None) for key in stale), (ckpt.head_key(run), head)],
                                           partition=partition)
            else:
                await self._persist(ckpt.head_key(run), head)
        except Exception as exc:
            raise StepNotRecorded(f"The head of task {run} could not be checkpointed: {exc}") from exc
        finally:
            self.accepting.discard(run)
        self.app.release()  # the task is durable now: its source offset may be committed

    def _resume_task(self, head: dict[str, Any], partition: int) -> None:
        """Rebuild the task's step chain from its checkpoint, open a new epoch and resume
        it in its session's place."""
        task = head["task"]
        steps = RunSteps.read(self.checkpoints.partition(partition), ckpt.run_id(task), head["epochs"])
        chain = ckpt.rebuild(head["epochs"], steps.records)
        head["epochs"].append([max(e for e, _ in head["epochs"]) + 1, chain.length])
        self.looping.add(ckpt.run_id(task))
        previous, mine = self._place(ckpt.run_id(task), task["session_id"], partition)
        self.app.spawn_resumed(self._resume(head, chain, steps, partition, previous, mine), self.service.input_topic, partition)
        log.info("%s[%d]: resuming task %s at step %d", self.service.input_topic, partition, task["task_id"], chain.length)

    async def _resume(
        self, head: dict[str, Any], chain: ckpt.Chain, steps: RunSteps, partition: int, previous: Place | None, mine: Place,
    ) -> None:
        task = head["task"]
        tracing.adopt(head.get("trace"))  # the task's trace goes on where the crashed owner left it
        log_context.bind(worker=self.app.name, **log_context.task_fields(task))  # no record to take them from
        source = MessageContext(self.service.input_topic, partition, -1, task["session_id"].encode(), (), 0)
        verdict = ""
        try:
            attempt = Attempt(source, int(head.get("attempt", 0)), head.get("replay"), steps)
            verdict = await self._conclude(task, attempt, self._resume_loop(head, chain, attempt, previous))
        finally:
            self._leave_or_keep(task, mine, verdict)

    async def _resume_loop(
        self, head: dict[str, Any], chain: ckpt.Chain, attempt: Attempt, previous: Place | None,
    ) -> tuple[AgentOutcome, int] | None:
        task = head["task"]
        epochs = head["epochs"]
        await self._persist(ckpt.head_key(ckpt.run_id(task)), head)
        await SessionOrder.wait(previous)
        where = f"{self.service.input_topic}[{attempt.partition}] task {task['task_id']}"
        if ckpt.resumes_at_same_step(epochs) > MAX_REDELIVERIES:
            reason = f"{MAX_REDELIVERIES} workers in a row stopped at step {epochs[-1][1]} of this task; it is not retried again."
            log.error("%s: %s", where, reason)
            failed = AgentOutcome("FAILED", None, (REDELIVERY_LIMIT, reason), [], {}, 0)
            await self._finish(task, self.agent.result(task, failed, now_ms()), attempt.partition, attempt.steps)
            return None
        return await self._run(task, chain, attempt, where)

    async def _run(
        self, task: Task, chain: ckpt.Chain, attempt: Attempt, where: str, accepted: asyncio.Future[None] | None = None,
    ) -> tuple[AgentOutcome, int]:
        """The task's agent loop, every step checkpointed (and noted in ``attempt.steps``);
        its outcome and start time. ``accepted``: the head's write, when it may still be on
        its way (the run's records land after it)."""
        started = now_ms()
        partition = attempt.partition
        draining = partial(self.app.draining, self.service.input_topic, partition)
        gate = self.desk.gate(task, partition) if self.desk is not None else None
        canceled = partial(self.cancels.requested, task["task_id"], partition) if self.cancels is not None else lambda: None
        run = DurableRun(ckpt.run_id(task), attempt.steps.epochs[-1][0], chain, attempt.steps.recording(self._persist),
                         draining=draining, gate=gate, canceled=canceled, landing=accepted, last_awaited_by_caller=True)
        attempt.steps.wait_for(run.landed)  # the answer lands while the transcript is sent (_finish)
        if run.canceled() is not None:
            await run.landed()  # a head on its way lands first: a refused one fails the task into the retry chain
        run.stop_if_canceled()  # canceled while it waited for its turn, a decision, or in a retry tier
        begun = f"resumed at step {chain.length}" if chain.length else "started"
        self.service.progress(task, "STATE", "RUNNING",
                              f"{self.agent.agent_type} {begun} tier={task.get('tier')} model={self.agent.model_id(task)}")
        with metrics.loop_running(self.agent.agent_type):
            outcome = await self.agent.run(task, run)
        # Routine: a first run (no resume, retry tier or dead-letter replay) that completed.
        routine = (outcome.status == "COMPLETED" and run.epoch == 0 and not run.replayed_model_calls
                   and attempt.number == 0 and attempt.replay is None)
        log.log(
            task_line_level(routine),
            "%s: task %s %s by %s (epoch %d: %d model calls made, %d replayed)", where, task["task_id"], outcome.status,
            self.agent.agent_type, run.epoch, run.new_model_calls, run.replayed_model_calls,
        )
        return outcome, started

    # -- ending --------------------------------------------------------------------------
    async def _conclude(self, task: Task, attempt: Attempt, work: Work) -> str:
        """_conclude_run, then the run's DurableRun is let go of (RunSteps.wait_for: a cycle
        that would otherwise wait for the collector)."""
        try:
            return await self._conclude_run(task, attempt, work)
        finally:
            attempt.steps.wait_for(None)

    async def _conclude_run(self, task: Task, attempt: Attempt, work: Work) -> str:
        """Run ``work`` and end the task: done, into the next retry tier, or dead-lettered.
        A crash of the work — a bug, a checkpoint the broker refused — fails the task into
        the retry chain at once, as a transient model outage does, instead of leaving it
        for the next owner."""
        started = now_ms()
        try:
            ran = await work
            if ran is None:
                return DONE
            outcome, started = ran
            if not (outcome.error and outcome.error[0] in TRANSIENT_CODES):
                await self._complete(task, outcome, attempt, started)
                return DONE
            error: Exception = TransientStageError(outcome.error[1])
        except TaskCanceled as stop:
            log.info("%s[%d]: task %s stopped: %s", self.service.input_topic, attempt.partition, task["task_id"], stop)
            self.service.progress(task, "TEXT", CANCELED, f"{self.agent.agent_type} stopped: {stop}")
            canceled = stop.outcome or AgentOutcome("FAILED", None, cancel_error(stop.cancel), [], {}, 0)
            await self._complete(task, canceled, attempt, started)
            return DONE
        except AwaitingApproval as held:
            assert self.desk is not None  # only a gate raises it
            await self.desk.wait(task, held, attempt.partition)
            if self.cancels is not None:
                await self.cancels.end_new_wait(task, attempt.partition)
            return WAITING
        except Exception as exc:  # CancelledError is not one: a drained loop resumes elsewhere
            log.error("%s[%d]: task %s crashed: %s: %s", self.service.input_topic, attempt.partition, task["task_id"],
                      type(exc).__name__, exc, exc_info=exc)
            error, outcome = exc, AgentOutcome("FAILED", None, (CRASHED, f"{type(exc).__name__}: {exc}"), [], {}, 0)
        try:
            return await self._fail(task, error, outcome, attempt, started)
        finally:
            del error  # its traceback holds this frame (and the run's): no cycle left for the collector

    async def _fail(self, task: Task, error: Exception, outcome: AgentOutcome, attempt: Attempt, started: int) -> str:
        """The task failed with ``error``: on to the next retry tier, or a dead letter and a
        FAILED result (error DEAD_LETTERED) so nothing waits for it. A write of the run still
        on its way settles first (a head or a record refused changes nothing now: the run
        has failed), so the end's writes come after it."""
        with contextlib.suppress(StepNotRecorded):
            await attempt.steps.landed()
        attempt.steps.wait_for(None)
        verdict = self.retries.failed(self.service.schemas.encode(ROUTED_TASK, task), attempt.source, error, attempt.number)
        if verdict == RETRY:
            # The tier's copy may come back before the head's tombstone is acknowledged: it
            # waits until the head is gone and the session place kept (_leave_or_keep, which
            # every caller of _conclude ends with).
            assert ckpt.run_id(task) not in self.parking, "one live run per run id: accepting, the head and looping"
            self.parking[ckpt.run_id(task)] = asyncio.Event()
            try:
                await self._park(task, attempt)
            except Exception as exc:  # RETRY all the same: the session's place is kept for the copy
                log.error("%s[%d]: task %s: its park write was refused (%s: %s); its tier copy takes the head left "
                          "behind", self.service.input_topic, attempt.partition, task["task_id"], type(exc).__name__, exc,
                          exc_info=exc)
            return RETRY
        message = outcome.error[1] if outcome.error else str(error)
        dead = AgentOutcome("FAILED", outcome.output, (DEAD_LETTERED, message), outcome.tools_used, outcome.usage, outcome.steps)
        await self._complete(task, dead, attempt, started)
        return DONE

    async def _park(self, task: Task, attempt: Attempt) -> None:
        """The task is away in a retry tier: its session waits, its records go."""
        run = ckpt.run_id(task)
        # The place before the head goes (in the same write), so a new owner after a crash
        # still keeps the session's later tasks behind this one while it waits in a tier.
        place = [] if self._stored(ckpt.place_key(run), attempt.partition) else [(ckpt.place_key(run), task["session_id"])]
        await self._forget(run, attempt.partition, attempt.steps, place)  # it comes back through the retry tier
        if attempt.number == 0:
            # Counted once the head is gone, not before: a checkpoint could commit the count
            # while the head stays (a kill before the write lands), and the run resumed from
            # that head, still attempt 0, would end without settling it, parking the
            # session's later tasks for good. Meanwhile its place holds them (_place).
            self.retrying[task["session_id"]] = self.retrying.get(task["session_id"], 0) + 1

    async def _complete(self, task: Task, outcome: AgentOutcome, attempt: Attempt, started: int) -> None:
        if outcome.tools_used:
            # One event naming them all, in first-use order (as ROUTED names its agents): the
            # run has ended, so one per tool told nothing more and cost a record each.
            self.service.progress(task, "TOOL_CALL", "RUNNING", ",".join(outcome.tools_used))
        result = self.agent.result(task, outcome, started)
        metrics.specialist_run(result, outcome.steps)
        settle = partial(self.retries.settled, task["session_id"]) if attempt.number > 0 else None  # back from a tier
        await self._finish(task, result, attempt.partition, attempt.steps, attempt.replay, settle)

    async def _finish(
        self, task: Task, result: dict[str, Any], partition: int, steps: RunSteps, replay: str | None = None,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Transcript and the run's last step record (its answer, sent without waiting:
        specialist/durable.py) acknowledged → result acknowledged (then ``settle``) → done marker, end of
        the session place the run held in the retry tiers, tombstones of its records (one
        write: see _forget). The transcript goes first: once a result is out, its transcript is
        readable (a replay right after the result finds it); the done marker after the
        result: a run marked done has sent its result. What is not acknowledged in time is sent again (run_end.py)."""
        transcript = partial(self.transcripts.write, task, result, steps.epochs, steps.records) if self.transcripts else None
        unsent = await answer_landed(steps.landed(), transcript() if transcript else None)  # the answer lands meanwhile
        run = ckpt.run_id(task)
        encoded = self.service.schemas.encode(SPECIALIST_RESULT, result)
        end = RunEnd(transcript if unsent is not None else None, partial(self._send_result, task, encoded, replay),
                     partial(self._forget, run, partition, steps, self._end_marks(run, partition)), settle)
        try:
            if unsent is not None:
                raise unsent
            await end.send()
        except CheckpointError as exc:
            if classify(exc) is not ErrorClass.TRANSIENT:
                raise  # refused for good: the task fails into the retry chain (run_end.py)
            log.warning("%s[%d]: task %s: %s; its %s sent again beside the partition", self.service.input_topic, partition,
                        task["task_id"], exc, "transcript and result are" if end.transcript else "result is")
            end.owe = partial(self._owe, task, owed(encoded, replay, transcript=end.transcript is not None), partition)
            self.ended_later.later(end.send_and_end, f"the end of task {run}", partition)
            return
        finally:
            del unsent  # raised, its traceback holds this frame: no cycle left for the collector
        # The result is out: a failed end write is retried here too, the head kept (run_end.py, _ended).
        await self.ended_later.run(end.end_write, f"the end write of task {run}", partition)

    def _end_marks(self, run: str, partition: int) -> list[tuple[str, Any]]:
        """What the end write puts before the tombstones: the done marker, and the end of the
        session place the run held in the retry tiers (if it is out of them)."""
        marks: list[tuple[str, Any]] = [(ckpt.done_key(run), now_ms())]
        if self._stored(ckpt.place_key(run), partition):
            marks.append((ckpt.place_key(run), None))
        return marks

    async def _owe(self, task: Task, owing: Owed, partition: int) -> None:
        """Write ``owing`` into the run's head (run_end.OWED), acknowledged, so that a new
        owner of the partition sends it and ends the run (_send_owed) instead of resuming it.
        Not once the partition is gone: the new owner's head may be newer."""
        key = ckpt.head_key(ckpt.run_id(task))
        raw = self.checkpoints.partition(partition).get(key.encode())
        if raw is not None and partition in self.app.assigned_partitions():
            await self.app.persist(self.checkpoints, key, {**self.checkpoints.decode_value(raw), OWED: owing},
                                   partition=partition)

    async def _send_owed(self, head: dict[str, Any], partition: int) -> None:
        """After an assignment: the run's answer had landed, but its previous owner could not
        send all of its end (OWED in its head): send what it owed, then the end write. No
        model is called and no step is replayed."""
        task, owing = head["task"], head[OWED]
        run = ckpt.run_id(task)
        tracing.adopt(head.get("trace"))
        log_context.bind(worker=self.app.name, **log_context.task_fields(task))  # no record to take them from
        steps = RunSteps.read(self.checkpoints.partition(partition), run, head["epochs"])
        log.info("%s[%d]: task %s had its answer; its previous owner could not send its %s, sent now",
                 self.service.input_topic, partition, task["task_id"], "transcript and result" if owing["transcript"] else "result")
        encoded = owed_result(owing)
        transcript = (partial(self.transcripts.write, task, self.service.schemas.decode_as(SPECIALIST_RESULT, encoded),
                              steps.epochs, steps.records) if owing["transcript"] and self.transcripts else None)
        settle = partial(self.retries.settled, task["session_id"]) if int(head.get("attempt", 0)) > 0 else None
        end = RunEnd(transcript, partial(self._send_result, task, encoded, owing["replay"]),
                     partial(self._forget, run, partition, steps, self._end_marks(run, partition)), settle)
        await self.ended_later.run(end.send_and_end, f"the end of task {run}", partition)

    async def _send_result(self, task: Task, encoded: bytes, replay: str | None) -> None:
        headers = [(REPLAY, replay.encode())] if replay else None  # lets the supervisor take it again
        await self.app.send_acked(self.supervisor_topic, encoded, task["session_id"], headers=headers)

    async def _forget(self, run: str, partition: int, steps: RunSteps, first: list[tuple[str, Any]]) -> None:
        """Write ``first``, then tombstone every step record of ``run`` and its head, in one
        acknowledged write. Produced in this order to one partition, so a kill leaves a
        prefix: ``first`` lands before any tombstone (the done marker before the head goes:
        a redelivered copy is never taken for a new task; a place before the head goes: a
        new owner keeps the session waiting for the task in a tier), and the head last (no
        step outlives its head). Those prefixes are the states the writes one after the
        other left too; a reader in this worker sees the whole write at once, once it is
        acknowledged."""
        tombstones = [(key, None) for key in [*steps.keys, ckpt.head_key(run)]]
        await self.app.persist_all(self.checkpoints, [*first, *tombstones], partition=partition)

    # -- session places ------------------------------------------------------------------
    def _place(self, run: str, session: str, partition: int) -> tuple[Place | None, Place]:
        """The place of ``run`` in its session's order (the one it kept, else the next).
        A task waiting for a decision keeps no place unless a task was queued behind it
        when it began to wait: before a task enters a session with no place in memory,
        the session's waiting run (from the checkpoints) takes the place it would hold."""
        if self.desk is not None and not self.places.has_places(session):
            waiting = self.desk.waiting_run(session, partition)
            if waiting is not None and waiting != run and not self.places.holds(waiting):
                self.places.restore(waiting, session)
        return self.places.take(run, session)

    def _leave_or_keep(self, task: Task, mine: Place, verdict: str) -> None:
        run = ckpt.run_id(task)
        self.looping.discard(run)
        try:
            if verdict == RETRY or (verdict == WAITING and self.places.followed(task["session_id"], mine)):
                # Keep the session's place: tasks queued behind this one wait for its retry
                # (or the decision), which takes the place over when it comes back.
                self.places.keep(run, mine)
            else:
                # A wait nothing follows holds no place (the next task of the session finds it: _place).
                self.places.leave(task["session_id"], mine)
        finally:
            # Only now: a tier's copy let go before the place is kept would queue behind it,
            # for a retry that has come back already. After a refused park write the head
            # is left: the copy takes that head's place (_succeeds) and this session place.
            if (parked := self.parking.pop(run, None)) is not None:
                parked.set()
        if verdict == WAITING and (early := self.decided_early.pop(run, None)) is not None:
            self.resume_decided(*early)

    def _restore_places(self, placed: dict[str, str], partition: int) -> None:
        """Take the session place of every task waiting in a retry tier (``placed``: task ->
        session), so the session's tasks resumed here wait until it comes back and ends
        (one with a head is back: it is resumed)."""
        for task_id, session in placed.items():
            if (not self.places.holds(task_id) and not self._stored(ckpt.head_key(task_id), partition)
                    and not self._stored(ckpt.done_key(task_id), partition)):
                self.places.restore(task_id, session)

    # -- checkpoint records --------------------------------------------------------------
    def _persist(self, key: str, value: Any) -> Awaitable[None]:
        return self.app.persist(self.checkpoints, key, value)

    def _stored(self, key: str, partition: int) -> bool:
        return self.checkpoints.partition(partition).get(key.encode()) is not None
