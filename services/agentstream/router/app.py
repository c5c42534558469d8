"""The router's stream processor: validate, dedupe, classify and fan a task out, one
task of a session at a time.

Only fast deterministic work happens in the handlers: the rules (router/decide.py)
decide at admission. With a router model (``routing.model``), a task's route is decided
when it leaves the session gate instead, by spawned work beside the partition
(router/model_route.py, falling back to the rules): no model call in the commit path, and
the source offset is held until the decision is sent, so a crash repeats at most the
classification in flight. The router also reads the results topic (co-partitioned with
the tasks, so partition p of both is on the same member): a session's next task goes
only once the previous one has its result, carrying the session's memory
(router/session_gate.py). With a tenants file, a task of an unknown tenant, or of one over
its daily budget or its cap of tasks in flight, is refused before the gate
(router/tenant_guard.py).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from typing import Any

from agentstream import metrics
from agentstream.cancellation.records import CANCELED, cancel_error, cancel_text
from agentstream.events import ROUTED_TASK, TASK_CANCEL, TASK_RESULT, TASK_SUBMITTED, call_usage, now_ms, task_result
from agentstream.errors import ConfigurationError, UnknownAgentTypeError
from agentstream.router.classifier import Decision, choose
from agentstream.router.decide import Rules, is_usable_id, unusable_id_key, validate_task
from agentstream.router.model_route import ModelClassifier
from agentstream.retry.chain import RetryChain
from agentstream.retry.classify import ErrorClass, ValidationFailed
from agentstream.retry.headers import REPLAY
from agentstream.rollout.control import WeightBoard, canary_types
from agentstream.rollout.pinning import pin, pinned_variant
from agentstream.router.own_results import OwnResults, dedupe_written_at
from agentstream.router.session_gate import (
    RECORD_MAX_BYTES, Admission, Canceling, Record, admit, answered_before, arrive, close_answered, holds, idle_since,
    missed, new_record, open_task, passed, settle, taken,
)
from agentstream.router.session_gate import cancel as cancel_in_session
from agentstream.router.tenant_guard import TenantGuard
from agentstream.router.tier import TierRules, tier_hint
from agentstream.runtime import MessageContext
from agentstream.runtime.context import current_context, in_partition
from agentstream.runtime.expiry import stamp_now, timestamp_value
from agentstream.serde import SchemaSet, SerdeError
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.telemetry import tracing
from agentstream.telemetry.logs import task_line_level
from agentstream.tenancy.admission import Refusal
from agentstream.topology import RoutingSettings, Topology

log = logging.getLogger(__name__)

AGENT = "router"
SESSION_BUSY = "SESSION_BUSY"  # the error code of a task refused because its session has too many waiting


def build_router(settings: WorkerSettings, topology: Topology, schemas: SchemaSet) -> Service:
    service = Service.build(AGENT, settings, topology, schemas)
    app = service.processor
    seen = service.table("dedupe")  # task_id -> its mark: when it was seen (epoch ms, strictly increasing)
    app.expire(seen, topology.dedupe.retention_s, dedupe_written_at, stamp=stamp_now)
    sessions = service.table("sessions")  # session -> its open task, waiting tasks and memory (session_gate.py)
    app.expire(sessions, topology.sessions.idle_retention_s, idle_since)
    known_types = topology.specialist_types
    routing = _routing(topology)
    rules = Rules.from_settings(routing)
    tiers = TierRules.from_settings(routing.tiers)
    classifier = ModelClassifier.from_settings(routing, known_types)
    last_mark: dict[int, int] = {}  # partition -> the latest mark given there
    # What it answered itself since its last commit, read back into ``seen`` at an assignment.
    own = OwnResults(app, schemas, topology.topic("results"), service.input_topic, seen)
    app.on_assign(own.on_assign)  # before any record of a new partition is handled
    guard = TenantGuard.build(AGENT, settings, topology, schemas)  # None without a tenants file
    if guard is not None:
        app.on_assign(guard.on_assign)  # before any task of a new partition is decided
        app.on_stop(guard.stop)
    # Canary weights, from the topology and then the rollout topic (rollout/control.py).
    canaries = canary_types(topology)
    weights = WeightBoard(settings.bootstrap, topology, schemas).start() if canaries else None
    if weights is not None:
        app.on_stop(weights.stop)  # its reader closes with the worker, not at interpreter exit

    def pin_open(record: Record) -> None:
        """Pin the versions of the record's newly opened task, before the record is written
        and the task sent, so a re-send after a rebalance goes where this send goes
        (rollout/pinning.py)."""
        if weights is not None and record["open"] is not None:
            pin(record["open"], canaries, weights.weight)

    destinations: dict[tuple[str, str | None], tuple[str, str]] = {}  # the topology is immutable: looked up once

    def destination(decided: dict[str, Any], agent_type: str) -> tuple[str, str]:
        """The topic of the version the task's copy for ``agent_type`` goes to (its pin), and
        how the event names it."""
        variant = pinned_variant(decided, agent_type)
        found = destinations.get((agent_type, variant))
        if found is None:
            topic = topology.version_topic(agent_type, variant)
            named = agent_type if topic == topology.specialist_topic(agent_type) else f"{agent_type}({variant})"
            found = destinations[agent_type, variant] = (topic, named)
        return found

    def mark(partition: int) -> int:
        """Now, but later than every earlier mark of the partition (session_gate.missed)."""
        last_mark[partition] = max(now_ms(), last_mark.get(partition, 0) + 1)
        return last_mark[partition]

    def mark_at_least(partition: int, given: int) -> None:
        """Later marks of the partition come after ``given``, a mark another owner gave
        (whose clock may run ahead of this host's)."""
        last_mark[partition] = max(last_mark.get(partition, 0), given)

    async def on_task(task: dict[str, Any], ctx: MessageContext) -> None:
        if validate_task(task, settings.max_input_bytes) is None and keyed_elsewhere(task, ctx):
            return  # an invalid task is refused where it is: it never reaches a session's state
        task_id, session_id = task["task_id"], task["session_id"]
        # A blank id is no id, and an over-long one no key: validate_task rejects both, and
        # neither may shadow the next such task (or outgrow a changelog message).
        dedupable = is_usable_id(task_id)
        record = sessions.get(session_id) if is_usable_id(session_id) else None  # read once per task
        offset = ctx.offset if ctx.topic == service.input_topic else None  # a tier's copy has its own topic's
        # Such a task is known by its place instead, so one read again (its offset not
        # committed before a rebalance) is not rejected twice.
        key = task_id if dedupable else unusable_id_key(ctx.partition, offset, ctx.timestamp_ms)
        entry = seen.get(key) if key is not None else None
        if taken(record, task_id, offset):
            assert record is not None  # taken() holds it
            if dedupable:
                keep_mark(task_id, session_id, record, entry, ctx.partition)
            log.info("%s: task %s was taken by its session already; read again, ignored", ctx.where, task_id)
            return
        arrival = arrive(record, entry, partial(mark, ctx.partition), replay=ctx.header(REPLAY) is not None, offset=offset)
        if arrival is None:
            log.info("%s: task %s already routed, duplicate ignored", ctx.where, task_id)
            return
        seen_at, recovering = arrival.mark, arrival.recovering
        if not arrival.new_mark:
            mark_at_least(ctx.partition, seen_at)  # kept from the previous owner, whose clock may run ahead
        elif key is not None:
            seen[key] = seen_at
        replayed = ctx.header(REPLAY) is not None
        if replayed:
            own.forget(task)  # decided again, also by let_go and drop
        earlier = own.answer(task) if not replayed else None
        if earlier is not None and not holds(record, task_id):  # a held one closes as it goes (let_go)
            keep_answer(task, ctx, record, earlier, (seen_at, offset))
            return
        decided, reason = decide(task)
        if decided is None:
            if recovering:
                log.info("%s: task %s was rejected before; repeat ignored", ctx.where, task_id)
                return
            reject(task, ctx, reason)
            return
        if recovering:
            log.warning("%s: task %s was seen but is missing from session %s; admitting it again",
                        ctx.where, task_id, session_id)
        elif guard is not None and (refused := guard.refusal(task)) is not None:
            refuse_for_tenant(task, ctx, refused, record or new_record(), (seen_at, offset))
            return
        admit_to_session(decided, ctx, record or new_record(), (seen_at, offset))

    def keep_mark(task_id: str, session_id: str, record: Record, entry: Any, partition: int) -> None:
        """The record took the task: a later copy must be a repeat to the dedupe check too.
        A crash may have lost the task's mark (mark it again) or kept a mark the record
        lacks (the record takes it)."""
        kept = timestamp_value(entry)
        if kept is None:
            seen[task_id] = kept = mark(partition)
        elif not missed(record, kept):
            return
        else:
            mark_at_least(partition, kept)
        passed(record, kept)
        sessions[session_id] = record

    def keep_answer(
        task: dict[str, Any], ctx: MessageContext, record: Record | None, answer: dict[str, Any],
        at: tuple[int, int | None],
    ) -> None:
        """The router answered the task itself before a crash (router/own_results.py): that
        answer stands, and the session's record takes the task as it left it (``at``: the
        task's mark and source offset). No second result, not even the same one."""
        reason = validate_task(task, settings.max_input_bytes)
        if reason is None:
            record = record or new_record()
            answered_before(record, task, answer, topology.sessions, *at)
            sessions[task["session_id"]] = record
        else:  # an invalid task never enters a session; its dead letter went out beside the result,
            #     which does not prove the letter landed: sent again under its id (its source
            #     position), so the DLQ shows it once (retry/dlq_ops.py keeps the latest of an id)
            dead_letter_invalid(task, ctx, reason)
        own.forget(task)
        log.info("%s: task %s was answered %s here before a restart; that result stands", ctx.where, task["task_id"],
                 answer["status"])

    def keyed_elsewhere(task: dict[str, Any], ctx: MessageContext) -> bool:
        """A task not keyed by its session (no key, another key) may sit on a partition
        other than its session's, whose record, results and memory this partition never
        sees: send it again keyed by the session, to its session's partition, and skip it
        here. (It assumes Kafka's default murmur2 partitioner, as every producer here uses.)"""
        session_id = task["session_id"]
        if ctx.key == session_id.encode():
            return False
        app.send(service.input_topic, schemas.encode(TASK_SUBMITTED, task), session_id, headers=list(ctx.headers) or None)
        log.warning("%s: task %s was keyed %r, not by its session; sent again keyed by session %s",
                    ctx.where, task.get("task_id"), ctx.key, session_id)
        return True

    def decide(task: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The task with its routing ({"task", "route", "tier", "by"}), or None and why not.
        With a router model and no requested agent, route and tier stay None: the model
        decides when the task leaves the session gate (``let_go``)."""
        reason = validate_task(task, settings.max_input_bytes)
        if reason is not None:
            return None, reason
        try:
            decision = by_rules(task, "")
        except UnknownAgentTypeError as exc:
            return None, str(exc)
        if classifier is not None and decision.by != "request":
            return {"task": task, "route": None, "tier": None, "by": None}, ""
        return {"task": task, **_fields(decision)}, ""

    def by_rules(task: dict[str, Any], why: str) -> Decision:
        route_to = rules.route(task["input"], task.get("requested_agent"), known_types)
        tier = tiers.tier(task["input"], task.get("metadata") or {})
        return Decision(route_to, tier, "request" if task.get("requested_agent") is not None else "rules", why)

    def reject(task: dict[str, Any], ctx: MessageContext, reason: str) -> None:
        """An invalid task is refused where it was read, which need not be its session's
        partition (keyed_elsewhere): its result goes to that partition of the results topic
        too, where an owner that reads the task again reads the answer back (own_results.py)."""
        log.warning("%s: task %s rejected: %s", ctx.where, task["task_id"], reason)
        service.progress(task, "STATE", "REJECTED", reason)
        service.result(task_result(task, "REJECTED", error=("INVALID_TASK", reason)), partition=ctx.partition)
        dead_letter_invalid(task, ctx, reason)

    def dead_letter_invalid(task: dict[str, Any], ctx: MessageContext, reason: str) -> None:
        """An invalid task on record in the DLQ (its REJECTED result stands; no FAILED one is added)."""
        raw = schemas.encode(TASK_SUBMITTED, task)
        chain.dead_letter(raw, ctx, ValidationFailed(reason), ErrorClass.PERMANENT, 1, result=False)

    def admit_to_session(decided: dict[str, Any], ctx: MessageContext, record: Record, at: tuple[int, int | None]) -> None:
        """Route the task now if its session is idle, else hold it behind the open task.
        ``record``: its session's; ``at``: the task's mark and source offset."""
        task = decided["task"]
        tracing.keep(decided)  # the task's trace, for when a later result lets it go
        canceled = record.get("canceled", {}).get(task["task_id"])  # its cancel came first (session_gate.cancel)
        admission = admit(record, decided, topology.sessions, *at, replay=ctx.header(REPLAY) is not None)
        if admission is Admission.KNOWN:
            sessions[task["session_id"]] = record  # its mark taken: a later copy is a repeat too
            log.info("%s: task %s is open or waiting in its session already; repeat ignored", ctx.where, task["task_id"])
            return
        if admission is Admission.GO:
            pin_open(record)
        sessions[task["session_id"]] = record
        if admission is Admission.ANSWERED:
            log.info("%s: task %s has its result already; remembered, not routed again", ctx.where, task["task_id"])
        elif admission is Admission.GO:
            let_go(record)
        elif admission is Admission.WAIT:
            detail = f"waiting for task {open_task(record)} of its session ({len(record['waiting'])} waiting)"
            service.progress(task, "STATE", "QUEUED", detail)
        elif admission is Admission.CANCELED:
            drop(task, canceled or {}, ctx, "its cancel came before it")
        elif admission is Admission.FULL:
            refuse(task, ctx, f"session {task['session_id']} already has {len(record['waiting'])} tasks waiting behind "
                              f"task {open_task(record)}; submit more once earlier ones have results, or raise "
                              "sessions.max_waiting in the topology")
        else:
            refuse(task, ctx, f"session {task['session_id']}'s waiting tasks would outgrow the {RECORD_MAX_BYTES} bytes "
                              f"its record may hold ({len(record['waiting'])} wait behind task {open_task(record)}); "
                              "submit more once earlier ones have results")

    def refuse(task: dict[str, Any], ctx: MessageContext, reason: str, code: str = SESSION_BUSY) -> None:
        """Refused for now because of its session's queue or its tenant's limits (the task
        itself is valid, so it is not dead-lettered)."""
        log.warning("%s: task %s rejected: %s", ctx.where, task["task_id"], reason)
        service.progress(task, "STATE", "REJECTED", reason)
        service.result(task_result(task, "REJECTED", error=(code, reason)))

    def refuse_for_tenant(
        task: dict[str, Any], ctx: MessageContext, refused: Refusal, record: Record, at: tuple[int, int | None],
    ) -> None:
        assert guard is not None
        passed(record, *at)  # a repeat of the task is one, not a task a crash lost (session_gate.missed, taken)
        sessions[task["session_id"]] = record
        refuse(task, ctx, refused.reason, refused.code)
        key, value = guard.audit(task, refused, AGENT)
        app.send(guard.audit_topic, value, key)

    def drop(task: dict[str, Any], cancel: dict[str, Any], ctx: MessageContext, why: str) -> None:
        """The task is canceled before it was routed: its CANCELED result, from here (unless
        it was answered here before a restart: own_results.py)."""
        if own.answer(task) is not None:
            log.info("%s: task %s was canceled here before a restart; that result stands", ctx.where, task["task_id"])
            own.forget(task)
            return
        log.info("%s: task %s canceled at the router (%s): %s", ctx.where, task["task_id"], why, cancel_text(cancel))
        service.progress(task, "STATE", CANCELED, f"canceled before it started ({why}): {cancel_text(cancel)}")
        service.result(task_result(task, CANCELED, error=cancel_error(cancel)))

    async def on_cancel(cancel: dict[str, Any], ctx: MessageContext) -> None:
        """A TaskCancel: drop the task if it waits here; a routed one is its specialists' to
        stop; a cancel of an ended task is recorded (the event) and ignored."""
        if not (is_usable_id(cancel["session_id"]) and is_usable_id(cancel["task_id"])):
            log.warning("%s: a cancel without a usable task or session id ignored: %r", ctx.where, cancel)
            return
        if ctx.key != cancel["session_id"].encode():
            # Another partition holds the session: send it again keyed by session (as a task's).
            app.send(ctx.topic, schemas.encode(TASK_CANCEL, cancel), cancel["session_id"])
            log.warning("%s: the cancel of task %s was keyed %r, not by its session; sent again keyed by session %s",
                        ctx.where, cancel["task_id"], ctx.key, cancel["session_id"])
            return
        record = sessions.get(cancel["session_id"]) or new_record()
        was_open = open_task(record) == cancel["task_id"]
        found, dropped, following = cancel_in_session(record, cancel, topology.sessions, now_ms())
        if following is not None:
            pin_open(record)
        sessions[cancel["session_id"]] = record
        if dropped is not None:
            drop(dropped, cancel, ctx, "not routed yet" if was_open else "queued behind its session's open task")
        if following is not None:
            let_go(record)
        if found is Canceling.ENDED:
            service.progress(cancel, "TEXT", CANCELED, f"cancel ignored: the task has ended ({cancel_text(cancel)})")
        log.info("%s: cancel of task %s: %s", ctx.where, cancel["task_id"], found.value)

    def let_go(record: Record, partition: int | None = None) -> None:
        """Route the session's open task: at once when its route is decided, else decide it
        beside the partition (the handler's, or ``partition`` after an assignment). An open
        task answered here before a restart (a cancel dropped it) is closed as it was, and the
        next one goes instead."""
        session_id = record["open"]["task"]["session_id"]
        while (answer := own.answer(open_task_of := record["open"]["task"])) is not None:
            log.info("%s: task %s was answered %s here before a restart; closed as it was, not routed",
                     current_context.get().where, answer["task_id"], answer["status"])
            close_answered(record, answer, topology.sessions)
            own.forget(open_task_of)
            pin_open(record)
            sessions[session_id] = record
            if record["open"] is None:
                return
        opened = record["open"]
        if opened.get("route") is not None:
            send_routed(opened, record["turns"])
        elif partition is None:
            app.spawn(decide_open(opened["task"], opened.get("trace")))
        else:
            app.spawn_resumed(decide_open(opened["task"], opened.get("trace")), service.input_topic, partition)

    async def decide_open(task: dict[str, Any], kept_trace: str | None = None) -> None:
        """Ask the model for the open ``task``'s route (the rules when it cannot say), record
        the route in the session's open entry, then send the task."""
        tracing.adopt(kept_trace)  # the model call belongs to the task's trace, not the record's at hand
        session_id, task_id = task["session_id"], task["task_id"]
        decision = await model_decision(task, (sessions.get(session_id) or new_record())["turns"])
        record = sessions.get(session_id)
        where = current_context.get().where
        if record is None or open_task(record) != task_id or record["open"].get("route") is not None:
            # Its result came meanwhile (a previous owner had routed it before a crash).
            log.info("%s: task %s was settled or routed meanwhile; route %s dropped", where, task_id, decision.route)
            return
        record["open"].update(_fields(decision))
        pin_open(record)
        sessions[session_id] = record
        # The rules deciding for a configured model is worth a warning; the model's own
        # route is the routine case (and is in the task's ROUTED event).
        level = task_line_level(routine=True) if decision.by == "model" else logging.WARNING
        log.log(level, "%s: task %s routed to %s tier=%s %s", where, task_id, ",".join(decision.route), decision.tier,
                decision.describe())
        send_routed(record["open"], record["turns"])

    async def model_decision(task: dict[str, Any], turns: list[dict[str, Any]]) -> Decision:
        fallback = by_rules(task, "")
        if classifier is None:  # undecided entries from a run that had a router model
            return Decision(fallback.route, fallback.tier, "rules", "no router model is configured now")
        classified = await classifier.classify(task["task_id"], task["input"], turns)
        decision = choose(classified.answer, (fallback.route, fallback.tier), routing.min_confidence, classifier.model_id)
        hinted = tier_hint(task.get("metadata") or {})
        # The call's cost goes with the task to the supervisor, which adds it to the result once.
        usage = call_usage(classified.usage) if classified.usage is not None else None
        return replace(decision, tier=hinted or decision.tier, usage=usage)

    def send_routed(decided: dict[str, Any], turns: list[dict[str, Any]]) -> None:
        with tracing.resumed(decided.get("trace")):  # its own trace, also when a result or an assignment sends it
            emit_routed(decided, turns)

    def emit_routed(decided: dict[str, Any], turns: list[dict[str, Any]]) -> None:
        task, route_to, tier = decided["task"], decided["route"], decided["tier"]
        routed_at = now_ms()
        named = []
        for agent_type in route_to:
            routed = {
                "task_id": task["task_id"],
                "session_id": task["session_id"],
                "tenant_id": task["tenant_id"],
                "input": task["input"],
                "submitted_at": task["submitted_at"],
                "agent_type": agent_type,
                "route": route_to,
                "metadata": task.get("metadata") or {},
                "routed_at": routed_at,
                "tier": tier,
                "budget_usd": task.get("budget_usd"),
                "history": turns,
                "router_usage": decided.get("usage"),
            }
            topic, name = destination(decided, agent_type)
            named.append(name)
            service.emit_to(topic, ROUTED_TASK, routed)
        metrics.stage_done(AGENT, "ROUTED", task["submitted_at"], routed_at)
        service.progress(task, "ROUTED", "QUEUED", f"{','.join(named)} tier={tier} {decided.get('by') or 'by rules'}")

    async def on_result(raw: bytes, ctx: MessageContext) -> None:
        """A result on the results topic: if it answers its session's open task, remember
        the turn and let the session's next task go."""
        try:
            # Only the head of the record: the gate reads ids, status, output and agents,
            # which precede a TaskResult's usage, versions and the rest (see decode_head).
            result = schemas.decode_head(TASK_RESULT, raw, through="agents")
        except SerdeError as exc:
            log.warning("%s: not a TaskResult, ignored by the session gate: %s", ctx.where, exc)
            return
        if result["status"] == "REJECTED" or not (is_usable_id(result["session_id"]) and is_usable_id(result["task_id"])):
            return  # the router's own refusal of a task that never entered the gate, or a
            #         task or session id no task of the gate can have (validate_task refuses them)
        record = sessions.get(result["session_id"]) or new_record()
        following = settle(record, result, topology.sessions, now_ms())
        if following is not None:
            pin_open(record)
        sessions[result["session_id"]] = record
        if following is not None:
            let_go(record)

    async def resend_open(partitions: list[int]) -> None:
        """Send each open task of these partitions again: the routed records of a task
        opened just before a crash may not have reached the broker while the session's
        record did. The specialists and the supervisor drop a task they have already.
        Each copy goes to the version pinned when the task was first let go, not to the
        one the weights pick now (rollout/pinning.py). An open task whose route was not
        decided yet (a crash between opening and deciding) is decided now."""
        if classifier is not None:
            classifier.assigned(len(app.assigned_partitions()), app.partition_count)
        for partition in partitions:
            if app.draining(service.input_topic, partition):
                return  # stopping (maybe before its answers were read back): the next owner resends
            with in_partition(service.input_topic, partition):  # let_go may close a task answered here
                resend_partition(partition)

    def resend_partition(partition: int) -> None:
        opened, latest = [], 0  # one pass: an idle session's record is not kept (up to 512 KB each)
        for _, record in sessions.items_of(partition):
            if isinstance(record, dict):
                latest = max(latest, record.get("through", 0))
                if record.get("open"):
                    opened.append(record)
        mark_at_least(partition, latest)  # later marks follow every one the records took, whatever clock gave it
        for record in opened:
            let_go(record, partition)
        if opened:
            log.info("%s[%d]: sent %d open session tasks again after the assignment", service.input_topic, partition, len(opened))

    app.handler(topology.topic("results"))(on_result)
    app.handler(topology.topic("control"), partial(schemas.decode_as, TASK_CANCEL))(on_cancel)
    app.on_assign(resend_open)
    chain = RetryChain(service, partial(schemas.decode_as, TASK_SUBMITTED), on_task)
    return service


def _routing(topology: Topology) -> RoutingSettings:
    routing = topology.agent(AGENT).routing
    if routing is None:  # the topology refuses a router without one; this is for the type checker
        raise ConfigurationError(f"Agent {AGENT!r} has no routing section; add one to the topology (README 'Routing').")
    return routing


def _fields(decision: Decision) -> dict[str, Any]:
    """A decision as the session record keeps it in a task's entry (usage only when a model
    answered: the record of a session is bounded, RECORD_MAX_BYTES)."""
    fields = {"route": decision.route, "tier": decision.tier, "by": decision.describe()}
    return fields if decision.usage is None else {**fields, "usage": decision.usage}
