"""The supervisor's stream processor: gather each task's specialist results, combine
them (supervisor/combine.py) — or, with a ``supervision`` section in the topology, have a
model review them (supervisor/review.py), sending a task back to one specialist when the
review says revise (supervisor/revision.py), holding it for a human when the review says
escalate (supervisor/escalation.py) — and publish exactly one TaskResult per task
(supervisor/emitter.py). A specialist that reports a cancel (error code CANCELED, see
specialist/canceling.py) decides its task at once: the one result is CANCELED, and the
other specialists' answers, coming later, find it published.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from agentstream.cancellation.records import is_canceled
from agentstream.events import APPROVAL_DECISION, SPECIALIST_RESULT, TASK_CANCEL, task_result
from agentstream.retry.chain import RetryChain
from agentstream.retry.headers import REPLAY
from agentstream.runtime import MessageContext, Table
from agentstream.serde import SchemaSet
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.supervisor.combine import COMPLETED, canceled, combine, is_complete
from agentstream.supervisor.emitter import ResultEmitter, marker_stamp, marker_written_at
from agentstream.supervisor.escalation import is_escalated
from agentstream.supervisor.escalator import Escalator
from agentstream.supervisor.review import describe, reviewed
from agentstream.supervisor.reviewer import Reviewer
from agentstream.supervisor.reviser import Reviser
from agentstream.supervisor.revision import Round, asks_revision, is_awaited, is_revising, revised_results, round_of, with_spent
from agentstream.topology import Topology

log = logging.getLogger(__name__)

AGENT = "supervisor"


def build_supervisor(settings: WorkerSettings, topology: Topology, schemas: SchemaSet) -> Service:
    service = Service.build(AGENT, settings, topology, schemas)
    app = service.processor
    pending = service.table("pending")  # task_id -> specialist results received so far
    # task_id -> {state, result, results_from | offset, at} (emitter.py), or a revising
    # marker (revision.py): written through
    markers = service.table("dedupe")
    app.expire(markers, topology.dedupe.retention_s, marker_written_at, stamp=marker_stamp, write_through=True)
    emitter = ResultEmitter(service, markers, pending)
    reviewer = Reviewer.from_settings(topology.agent(AGENT).supervision, topology.app_dir())
    reviser = Reviser(service, markers, pending, emitter)
    app.on_assign(emitter.recover)
    escalator = _escalator(service, markers, pending, emitter)
    if reviewer is not None:
        async def share_quotas(_: list[int]) -> None:  # this member's share of the model quotas
            reviewer.assigned(len(app.assigned_partitions()), app.partition_count)

        app.on_assign(share_quotas)

    async def on_result(result: dict[str, Any], ctx: MessageContext) -> None:
        task_id = result["task_id"]
        replay = (ctx.header(REPLAY) or b"").decode() or None
        marker = markers.get(task_id)  # read once: a point-get decodes the whole marker
        if emitter.is_unfinished(task_id, marker):  # its emission failed: finish it now
            emitter.finish(marker, [result], ctx)
            return
        if is_revising(marker) and task_id not in emitter.emitting:
            on_revision(marker, result, ctx)
            return
        if escalator is not None and is_escalated(marker) and replay is None:
            log.info("%s: task %s waits for a human; its approval request is sent again", ctx.where, task_id)
            emitter.spawn_guarded(escalator.resend(marker, ctx.partition), [result], ctx)
            return
        # A replayed task (an operator re-ran its dead letter) may publish once more.
        if task_id in emitter.emitting or (marker is not None and (replay is None or marker.get("replay") == replay)):
            log.info("%s: task %s already has its result; repeat from %s ignored", ctx.where, task_id, result["agent_type"])
            return
        received = [r for r in pending.get(task_id, []) if r["agent_type"] != result["agent_type"]]
        received.append(result)
        # A canceled specialist decides the task now: the others' answers would come too late.
        if not is_canceled(result) and not is_complete(result["route"], {r["agent_type"] for r in received}):
            pending[task_id] = received
            service.progress(result, "STATE", "WAITING_CHILD", f"{len(received)}/{len(result['route'])} specialists done")
            return
        # The earlier results of a replayed task ended in the dead letter being replayed.
        final = final_result(received, [result] if replay is not None and marker is not None else received)
        # pending[task_id] is deleted once the decided result's marker is written (emitter.py).
        decide(final, received, Round(), ctx, replay)

    def on_revision(marker: dict[str, Any], result: dict[str, Any], ctx: MessageContext) -> None:
        """A result of a task sent back for a revision: the revision awaited decides the
        task; any other (late, redelivered) means the request may not be out: again."""
        if not is_awaited(marker, result):
            log.info("%s: task %s awaits revision %d of %s; %s's result of run %d: revision request sent again",
                     ctx.where, result["task_id"], marker["request"]["revision"], marker["request"]["agent_type"],
                     result["agent_type"], result.get("revision") or 0)
            emitter.spawn_guarded(reviser.send(marker), [result], ctx)
            return
        received = revised_results(marker, result)
        decide(final_result(received, received), received, round_of(marker), ctx, None)

    def decide(final: dict[str, Any], received: list[dict[str, Any]], earlier: Round, ctx: MessageContext,
               replay: str | None) -> None:
        final = with_spent(final, earlier)
        stopped = canceled(final, received)
        if stopped is None and escalator is not None:  # a cancel recorded before the review
            stopped = escalator.canceled(final, ctx.partition)
        if stopped is not None:  # nothing to review
            emitter.start(stopped, received, ctx, replay)
        elif reviewer is not None and final["status"] == COMPLETED:
            reviewing = review(reviewer, reviser, service, final, received, earlier, ctx.partition)
            if escalator is not None:  # an escalate verdict waits for a human
                reviewing = escalator.after_review(reviewing, final, received, ctx.partition, replay)
            emitter.start(reviewing, received, ctx, replay)
        else:  # nothing to review when every specialist failed: the failure is the answer
            emitter.start(final, received, ctx, replay)

    emitter.retries = RetryChain(service, partial(schemas.decode_as, SPECIALIST_RESULT), on_result)
    return service


def _escalator(service: Service, markers: Table, pending: Table, emitter: ResultEmitter) -> Escalator | None:
    """The escalator of a supervisor whose escalate verdicts wait for a human
    (``supervision.escalate: approval``): it consumes the decisions and control topics
    (co-partitioned with the input) and, after an assignment, re-arms deadlines and finishes decided
    escalations. None when there is no supervision, or escalations are results."""
    supervision = service.topology.agent(AGENT).supervision
    if supervision is None or service.topology.escalation(AGENT) != "approval":
        return None
    escalator = Escalator(service, markers, pending, emitter, supervision.approval)
    app = service.processor
    app.handler(service.topology.topic("approval_decisions"), partial(service.schemas.decode_as, APPROVAL_DECISION))(
        escalator.on_decision)
    app.handler(service.topology.topic("control"), partial(service.schemas.decode_as, TASK_CANCEL))(escalator.on_cancel)
    app.on_assign(escalator.recover)
    return escalator


async def review(reviewer: Reviewer, reviser: Reviser, service: Service, final: dict[str, Any],
                 received: list[dict[str, Any]], earlier: Round, partition: int) -> dict[str, Any] | None:
    """``final`` (the combine) as the supervisor's model reviews it; the combine itself,
    when the model is unavailable or its answer invalid (the event says which and why);
    None when the review sent the task back for a revision."""
    answer = await reviewer.review(final["task_id"], received, earlier.note)
    service.progress(final, "MODEL_CALL", "RUNNING", describe(answer, reviewer.model_id))
    if isinstance(answer, str):
        log.warning("task %s %s", final["task_id"], describe(answer, reviewer.model_id))
        return final
    if asks_revision(answer, earlier.revisions, reviewer.settings.max_revisions):
        await reviser.request(final, received, answer, earlier, partition)
        return None
    decided = reviewed(final, answer, reviewer.model_id, earlier.revisions)
    return {**decided, "models": {**final["models"], AGENT: reviewer.model_id}}


def final_result(received: list[dict[str, Any]], models_of: list[dict[str, Any]]) -> dict[str, Any]:
    """The TaskResult of the specialist results ``received`` (the last one completed the
    task), naming the models of ``models_of``."""
    result = received[-1]
    combined = combine(received)
    final = task_result(
        result,
        combined["status"],
        output=combined["output"],
        error=combined["error"],
        agents=combined["agents"],
        usage=combined["usage"],
        behavior_versions=combined["behavior_versions"],
    )
    final["tier"] = result.get("tier")
    final["models"] = {r["agent_type"]: r.get("model", "") for r in models_of}
    return final
