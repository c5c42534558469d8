"""A shadow worker: the candidate runs the live version's tasks after it, unseen.

Its own consumer group reads the ``transcripts`` topic, not the live input: every live run
of the agent type that finishes writes its transcript there (the routed task and every
step), and the shadow runs that task again (of the sessions its weight samples). Why after
the live run rather than beside it: a shadow answers its side-effecting calls from the
live run's recorded results (rollout/dry_run.py), and those exist only once the live run
has finished. Reading the routed topic, the shadow would start at the same time as the
live run and have to hold each such call until the live transcript came, or a bound
passed — a wait of unknown length (a live call held for a human's approval takes hours),
a follower of the transcripts topic beside the input, and a record that could be lost
in a crash between the two. Reading the transcripts, the record is in hand before the run
starts and goes into the shadow's own checkpoint with the task. The cost: a shadow result
comes after the live one (its latency is its own run's, as before), and a shadow needs the
topology's ``transcripts`` topic. The transcripts topic is keyed by session like the live
input, so the shadow's tables are co-partitioned with it as any worker's are.

What it produces goes to ``shadow_results`` only: no task events, no approvals, nothing
to the supervisor, so nothing reaches a result downstream. A failed shadow run is not
retried: a shadow failure is a finding to report, not work to finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from agentstream.cancellation.records import is_canceled
from agentstream.retry.chain import DEAD, RetryChain
from agentstream.rollout.dry_run import DryRunTools, LiveAnswers, answering, shadow_task
from agentstream.rollout.split import takes_candidate
from agentstream.runtime import MessageContext
from agentstream.service import Service
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.agent import SpecialistAgent
from agentstream.specialist.durable import DurableRun
from agentstream.specialist.lifecycle import TaskLifecycle
from agentstream.specialist.loop import AgentOutcome
from agentstream.transcripts.record import TRANSCRIPT, steps_of, task_of


class _NoRetries:
    """Stands in for the retry chain: every failure is final (a FAILED shadow result)."""

    def failed(self, raw: bytes, source: MessageContext, error: Exception, attempt: int) -> str:
        return DEAD

    async def settled(self, session_id: str) -> None:
        return None


@dataclass
class ShadowAgent(SpecialistAgent):
    """The candidate's loop with its side-effecting calls answered from the live run's
    record (or refused), and each such call's fate in the result (``dry_run``)."""

    _notes: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)  # run -> what its calls got

    async def run(self, task: dict[str, Any], run: DurableRun) -> AgentOutcome:
        answers = LiveAnswers.of_task(task)
        # Kept by run until the result is built (a resumed run notes only the calls it makes anew).
        self._notes[ckpt.run_id(task)] = answers.notes
        with answering(answers):
            return await super().run(task, run)

    def result(self, task: dict[str, Any], outcome: AgentOutcome, started: int) -> dict[str, Any]:
        return {**super().result(task, outcome, started), "dry_run": self._notes.pop(ckpt.run_id(task), [])}


def mirrors(record: dict[str, Any], live_type: str, weight: float) -> bool:
    """Whether the shadow runs the task of this transcript: a live run (not a canary's) of
    its agent type, in a session its weight samples, that no one canceled."""
    return (record["agent_type"] == live_type and record.get("variant") is None and not is_canceled(record)
            and takes_candidate(live_type, record["session_id"], weight))


def bind_shadow(service: Service, lifecycle: TaskLifecycle, live_type: str, weight: float) -> None:
    """Point the lifecycle's output at ``shadow_results`` and run the task of every live
    transcript the shadow mirrors, with the live run's side-effecting results."""
    service.quiet = True  # no task events: the task's progress is the live run's
    lifecycle.supervisor_topic = service.topology.topic("shadow_results")
    lifecycle.retries = cast(RetryChain, _NoRetries())  # the two methods the lifecycle calls
    tools = lifecycle.agent.tools
    refused = tools.refused if isinstance(tools, DryRunTools) else frozenset()

    async def mirror(record: dict[str, Any], ctx: MessageContext) -> None:
        if mirrors(record, live_type, weight):
            await lifecycle.on_routed(shadow_task(task_of(record), steps_of(record), refused), ctx)

    service.processor.handler(service.input_topic, partial(service.schemas.decode_as, TRANSCRIPT))(mirror)
