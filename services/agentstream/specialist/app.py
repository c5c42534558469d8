"""A specialist's stream processor: accept a routed task durably, run its agent loop
beside the partition with every step checkpointed, and emit the specialist result.

- The handler only checks for duplicates and schedules; the loop runs as spawned work.
- Acceptance is a write-through checkpoint head; once the broker has it, the source
  offset is released, so offsets keep advancing while long loops run.
- Every model reply and tool result is checkpointed before the loop goes on
  (specialist/durable.py); after a kill -9 or a rebalance, the new owner of the
  partition resumes every task it finds in the checkpoints, replaying finished steps.
- One task at a time per session, in arrival order (specialist/order.py).
- At the end: the result is sent and acknowledged, a done marker is written and the
  task's checkpoint records are tombstoned.
- A task whose models were all unavailable, or whose work crashed (a bug, a checkpoint
  the broker refused), goes to the retry chain at once: the next tier, or the DLQ with a
  FAILED result.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from functools import partial
from pathlib import Path
from typing import Any

from agentstream import __version__
from agentstream.events import ROUTED_TASK, SPECIALIST_RESULT, now_ms
from agentstream.models.base import Model
from agentstream.controls.rate_limit import members_from_assignment
from agentstream.controls.registry import ModelControls
from agentstream.controls.settings import ControlSettings
from agentstream.models.config import ModelSettings
from agentstream.models.pricing import cost_usd
from agentstream.retry.chain import RETRY, RetryChain
from agentstream.retry.classify import TransientStageError, ValidationFailed
from agentstream.retry.headers import ATTEMPT, REPLAY, decode_headers
from agentstream.runtime import MessageContext
from agentstream.runtime.expiry import stamp_now, timestamp_value
from agentstream.serde import SchemaSet
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.behavior import behavior_version
from agentstream.specialist.durable import DurableModel, DurableRun, DurableTools
from agentstream.specialist.history import HistoryCompressor
from agentstream.specialist.loop import AgentOutcome, default_system_prompt, run_agent
from agentstream.specialist.model_chains import ModelChains
from agentstream.specialist.order import SessionOrder
from agentstream.tools.demo import demo_registry
from agentstream.tools.registry import ToolRegistry
from agentstream.topology import Topology

log = logging.getLogger(__name__)

MAX_REDELIVERIES = 3  # owners in a row that died at the same step before the task fails
REDELIVERY_LIMIT = "REDELIVERY_LIMIT"


def build_specialist(
    agent_type: str,
    settings: WorkerSettings,
    topology: Topology,
    schemas: SchemaSet,
    *,
    model: Model | None = None,
    tools: ToolRegistry | None = None,
) -> Service:
    agent = topology.agent(agent_type)
    if agent.kind != "specialist":
        raise ValueError(f"Agent {agent_type!r} is a {agent.kind}, not a specialist; choose one of {topology.specialist_types}.")
    service = Service.build(agent_type, settings, topology, schemas)
    app = service.processor
    checkpoints = service.table("checkpoints")
    # Done markers hold their write time; they expire (the rest of a task's records are
    # tombstoned when it ends). Written through, so deleted through too.
    app.expire(checkpoints, topology.dedupe.retention_s, timestamp_value, stamp=stamp_now,
               prefix=ckpt.DONE.encode(), write_through=True)
    model_settings = agent.model or ModelSettings()
    models = ModelChains(model_settings, ModelControls(agent.controls or ControlSettings()), fixed=model)
    registry = tools or demo_registry()
    allowlist = list(agent.tools)
    max_steps = agent.max_steps or 8
    prompt = model_settings.system_prompt(topology_dir(settings)) or default_system_prompt(agent_type)
    version = behavior_version(
        agent_type, prompt, registry.schemas(allowlist), ",".join(models.model_ids()), __version__
    )
    service.behavior_version = version
    order = SessionOrder()
    accepting: set[str] = set()  # accepted here, head write not yet acknowledged
    places: dict[str, asyncio.Future[None]] = {}  # task in a retry tier -> its place in the session order
    supervisor_topic = topology.topic("supervisor")
    retrying = service.table("retrying")  # shared with the retry chain below

    def persist(key: str, value: Any) -> Any:
        return app.persist(checkpoints, key, value)

    def stored(key: str, partition: int) -> bool:
        return checkpoints.partition(partition).get(key.encode()) is not None

    def specialist_result(task: dict[str, Any], outcome: AgentOutcome, started: int) -> dict[str, Any]:
        return {
            "task_id": task["task_id"],
            "session_id": task["session_id"],
            "tenant_id": task["tenant_id"],
            "agent_type": agent_type,
            "route": task["route"],
            "status": outcome.status,
            "output": outcome.output,
            "error": {"code": outcome.error[0], "message": outcome.error[1]} if outcome.error else None,
            "tools_used": outcome.tools_used,
            "usage": {key: outcome.usage.get(key, 0) for key in USAGE_FIELDS},
            "behavior_version": version,
            "tier": task.get("tier") or "standard",
            "model": models.model_id(task.get("tier")),
            "submitted_at": task["submitted_at"],
            "started_at": started,
            "finished_at": now_ms(),
        }

    async def finish(task: dict[str, Any], result: dict[str, Any], partition: int, replay: str | None = None) -> None:
        """Result acknowledged → done marker → tombstones of the task's checkpoint records."""
        headers = [(REPLAY, replay.encode())] if replay else None  # lets the supervisor take it again
        await app.send_acked(supervisor_topic, schemas.encode(SPECIALIST_RESULT, result), task["session_id"], headers=headers)
        await persist(ckpt.done_key(task["task_id"]), now_ms())
        if stored(ckpt.place_key(task["task_id"]), partition):  # out of the tiers: its session place goes
            await persist(ckpt.place_key(task["task_id"]), None)
        await forget(task["task_id"], partition)

    async def forget(task_id: str, partition: int) -> None:
        """Tombstone every checkpoint record of the task (head last)."""
        store = checkpoints.partition(partition)
        keys = [key.decode() for key, _ in store.scan(ckpt.step_prefix(task_id).encode())]
        await asyncio.gather(*(persist(key, None) for key in keys))
        await persist(ckpt.head_key(task_id), None)

    async def run_loop(
        task: dict[str, Any], epochs: list[list[int]], chain: ckpt.Chain, partition: int, where: str,
    ) -> tuple[AgentOutcome, int]:
        """The task's agent loop, every step checkpointed; its outcome and start time."""
        started = now_ms()
        run = DurableRun(task["task_id"], epochs[-1][0], chain, persist, draining=lambda: app.draining(service.input_topic, partition))
        begun = f"resumed at step {chain.length}" if chain.length else "started"
        service.progress(task, "STATE", "RUNNING", f"{agent_type} {begun} tier={task.get('tier')} model={models.model_id(task.get('tier'))}")
        durable_model = DurableModel(models.for_tier(task.get("tier")), run)
        history = None
        if model_settings.history_max_tokens:
            # The summary call goes through the same controls and is checkpointed like any step.
            history = HistoryCompressor(model_settings.history_max_tokens, model_settings.history_keep_recent, durable_model)
        outcome = await run_agent(
            task, agent_type, durable_model, DurableTools(registry, run),
            allowlist, max_steps, prompt,
            timeout_s=model_settings.timeout_s, budget_usd=task.get("budget_usd") or model_settings.budget_usd,
            price=cost_usd, history=history,
        )
        log.info(
            "%s: task %s %s by %s (epoch %d: %d model calls made, %d replayed)", where, task["task_id"], outcome.status,
            agent_type, run.epoch, run.new_model_calls, run.replayed_model_calls,
        )
        return outcome, started

    async def conclude(
        task: dict[str, Any], source: MessageContext, attempt: int, partition: int, replay: str | None,
        work: Awaitable[tuple[AgentOutcome, int] | None],
    ) -> str:
        """Run ``work`` (the task's loop; None when it finished the task itself) and end the
        task: done, into the next retry tier, or dead-lettered. A crash of the work — a bug,
        a checkpoint the broker refused — fails the task into the retry chain at once, as a
        transient model outage does, instead of leaving it for the next owner."""
        started = now_ms()
        try:
            ran = await work
            if ran is None:
                return DONE
            outcome, started = ran
            if not (outcome.error and outcome.error[0] in TRANSIENT_CODES):
                await complete(task, outcome, partition, attempt, replay, started)
                return DONE
            error: Exception = TransientStageError(outcome.error[1])
        except Exception as exc:  # CancelledError is not one: a drained loop resumes elsewhere
            log.error("%s[%d]: task %s crashed: %s: %s", service.input_topic, partition, task["task_id"],
                      type(exc).__name__, exc, exc_info=exc)
            error, outcome = exc, AgentOutcome("FAILED", None, (CRASHED, f"{type(exc).__name__}: {exc}"), [], {}, 0)
        return await fail(task, error, outcome, source, attempt, partition, replay, started)

    async def fail(
        task: dict[str, Any], error: Exception, outcome: AgentOutcome, source: MessageContext, attempt: int,
        partition: int, replay: str | None, started: int,
    ) -> str:
        """The task failed with ``error``: on to the next retry tier, or a dead letter and a
        FAILED result (error DEAD_LETTERED) so nothing waits for it."""
        verdict = retries.failed(schemas.encode(ROUTED_TASK, task), source, error, attempt)
        if verdict == RETRY:
            if attempt == 0:
                retrying[task["session_id"]] = retrying.get(task["session_id"], 0) + 1
            if not stored(ckpt.place_key(task["task_id"]), partition):
                # Durable before the head goes, so a new owner after a crash still keeps the
                # session's later tasks behind this one while it waits in a tier.
                await persist(ckpt.place_key(task["task_id"]), task["session_id"])
            await forget(task["task_id"], partition)  # it comes back through the retry tier
            return RETRY
        message = outcome.error[1] if outcome.error else str(error)
        dead = AgentOutcome("FAILED", outcome.output, (DEAD_LETTERED, message), outcome.tools_used, outcome.usage, outcome.steps)
        await complete(task, dead, partition, attempt, replay, started)
        return DONE

    async def complete(
        task: dict[str, Any], outcome: AgentOutcome, partition: int, attempt: int, replay: str | None, started: int,
    ) -> None:
        for tool_name in outcome.tools_used:
            service.progress(task, "TOOL_CALL", "RUNNING", tool_name)
        await finish(task, specialist_result(task, outcome, started), partition, replay)
        if attempt > 0:  # it came through the tiers: the session's parked tasks may go now
            await retries.settled(task["session_id"])

    async def accept_and_run(task: dict[str, Any], ctx: MessageContext, previous: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
        verdict = ""
        try:
            seen = decode_headers(ctx.headers)
            attempt = int(seen.get(ATTEMPT, "0") or 0)
            replay = seen.get(REPLAY) or None
            verdict = await conclude(task, ctx, attempt, ctx.partition, replay, accept(task, ctx, previous, attempt, replay))
        finally:
            if verdict == RETRY:
                # Keep the session's place: tasks queued behind this one wait for its retry,
                # which takes the place over when it comes back from the tier.
                places[task["task_id"]] = mine
            else:
                order.leave(task["session_id"], mine)

    async def accept(
        task: dict[str, Any], ctx: MessageContext, previous: asyncio.Future[None] | None, attempt: int, replay: str | None,
    ) -> tuple[AgentOutcome, int]:
        epochs = [[0, 0]]
        try:
            head = {"task": task, "epochs": epochs, "offset": ctx.offset, "attempt": attempt, "replay": replay}
            await persist(ckpt.head_key(task["task_id"]), head)
        finally:
            accepting.discard(task["task_id"])
        app.release()  # the task is durable now: its source offset may be committed
        await SessionOrder.wait(previous)
        return await run_loop(task, epochs, ckpt.Chain(), ctx.partition, ctx.where)

    async def resume(head: dict[str, Any], chain: ckpt.Chain, partition: int, previous: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
        task = head["task"]
        source = MessageContext(service.input_topic, partition, -1, task["session_id"].encode(), (), 0)
        verdict = ""
        try:
            work = resume_loop(head, chain, partition, previous)
            verdict = await conclude(task, source, int(head.get("attempt", 0)), partition, head.get("replay"), work)
        finally:
            if verdict == RETRY:
                places[task["task_id"]] = mine  # as in accept_and_run
            else:
                order.leave(task["session_id"], mine)

    async def resume_loop(
        head: dict[str, Any], chain: ckpt.Chain, partition: int, previous: asyncio.Future[None] | None,
    ) -> tuple[AgentOutcome, int] | None:
        task = head["task"]
        epochs = head["epochs"]
        await persist(ckpt.head_key(task["task_id"]), head)
        await SessionOrder.wait(previous)
        where = f"{service.input_topic}[{partition}] task {task['task_id']}"
        if ckpt.resumes_at_same_step(epochs) > MAX_REDELIVERIES:
            reason = f"{MAX_REDELIVERIES} workers in a row stopped at step {epochs[-1][1]} of this task; it is not retried again."
            log.error("%s: %s", where, reason)
            failed = AgentOutcome("FAILED", None, (REDELIVERY_LIMIT, reason), [], {}, 0)
            await finish(task, specialist_result(task, failed, now_ms()), partition)
            return None
        return await run_loop(task, epochs, chain, partition, where)

    async def resume_in_flight(partitions: list[int]) -> None:
        """After an assignment: take this member's share of the rate quotas, and resume
        every task whose checkpoint head is still there."""
        owned = len(app.assigned_partitions())
        models.controls.set_members(members_from_assignment(owned, app.partition_count))
        for partition in partitions:
            store = checkpoints.partition(partition)
            heads = [json.loads(value) for _, value in store.scan(ckpt.HEAD.encode())]
            placed = {key.decode()[len(ckpt.PLACE):]: json.loads(value) for key, value in store.scan(ckpt.PLACE.encode())}
            restore_places(placed, {head["task"]["task_id"] for head in heads}, partition)
            # A retried task that was running goes first: it holds its session's place.
            for head in sorted(heads, key=lambda h: (h["task"]["task_id"] not in placed, h.get("offset", 0))):
                task_id = head["task"]["task_id"]
                records = [json.loads(value) for _, value in store.scan(ckpt.step_prefix(task_id).encode())]
                chain = ckpt.rebuild(head["epochs"], records)
                head["epochs"].append([max(e for e, _ in head["epochs"]) + 1, chain.length])
                previous, mine = order.enter(head["task"]["session_id"])
                app.spawn_resumed(resume(head, chain, partition, previous, mine), service.input_topic, partition)
                log.info("%s[%d]: resuming task %s at step %d", service.input_topic, partition, task_id, chain.length)

    def restore_places(placed: dict[str, str], resumed: set[str], partition: int) -> None:
        """Take the session place of every task waiting in a retry tier (``placed``: task ->
        session), so the session's tasks resumed here wait until it comes back and ends."""
        for task_id, session in placed.items():
            if task_id not in resumed and task_id not in places and not stored(ckpt.done_key(task_id), partition):
                places[task_id] = order.enter(session)[1]

    app.on_assign(resume_in_flight)

    async def on_routed(task: dict[str, Any], ctx: MessageContext) -> None:
        task_id = task["task_id"]
        if task["agent_type"] != agent_type:
            # Not skipped: a record that ends nowhere is lost. The chain dead-letters it.
            raise ValidationFailed(
                f"RoutedTask {task_id!r} is for agent type {task['agent_type']!r} but arrived on the {agent_type} "
                f"specialist's topic; produce it to that type's topic instead (the router does)."
            )
        replayed = ctx.header(REPLAY) is not None  # an operator replays a dead letter: run it again
        done = ckpt.done_key(task_id) in checkpoints and not replayed
        if task_id in accepting or ckpt.head_key(task_id) in checkpoints or done:
            log.info("%s: task %s already accepted; duplicate ignored", ctx.where, task_id)
            return
        accepting.add(task_id)
        held = places.pop(task_id, None)
        previous, mine = (None, held) if held is not None else order.enter(task["session_id"])
        app.spawn(accept_and_run(task, ctx, previous, mine))

    # A retried task settles when it finishes (above), not when the tier hands it back.
    retries = RetryChain(
        service, partial(schemas.decode_as, ROUTED_TASK), on_routed, emit_failed_results=False,
        settle_on_return=False, tables=(retrying, None),
    )
    return service


# Outcomes worth another attempt later: every model of the chain failed transiently.
TRANSIENT_CODES = frozenset({"MODEL_UNAVAILABLE"})
DEAD_LETTERED = "DEAD_LETTERED"
CRASHED = "CRASHED"  # the task's work raised; replaced by DEAD_LETTERED when it is not retried
DONE = "done"

USAGE_FIELDS = ("input_tokens", "output_tokens", "cost_usd", "llm_calls", "tool_calls", "retries")


def topology_dir(settings: WorkerSettings) -> Path | None:
    return settings.topology_path.parent if settings.topology_path else None
