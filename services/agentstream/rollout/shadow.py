"""A shadow worker: the candidate runs the live version's tasks beside it, unseen.

Its own consumer group reads the live input topic, so it sees exactly the routed tasks
the live version sees (of the sessions its weight samples) while the live group's
offsets, lag and scaling stay untouched. What it produces goes to ``shadow_results``
only: no task events, no approvals, nothing to the supervisor, so nothing reaches a
result downstream. Side-effecting tools are refused (rollout/dry_run.py). A failed
shadow run is not retried: the live topic's retry tiers belong to the live group, and
a shadow failure is a finding to report, not work to finish.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from agentstream.events import ROUTED_TASK
from agentstream.retry.chain import DEAD, RetryChain
from agentstream.rollout.split import takes_candidate
from agentstream.runtime import MessageContext
from agentstream.service import Service
from agentstream.specialist.lifecycle import TaskLifecycle


class _NoRetries:
    """Stands in for the retry chain: every failure is final (a FAILED shadow result)."""

    def failed(self, raw: bytes, source: MessageContext, error: Exception, attempt: int) -> str:
        return DEAD

    async def settled(self, session_id: str) -> None:
        return None


def bind_shadow(service: Service, lifecycle: TaskLifecycle, live_type: str, weight: float) -> None:
    """Point the lifecycle's output at ``shadow_results`` and read the live topic, mirroring
    the sessions ``weight`` samples (by the same hash as a canary split)."""
    service.quiet = True  # no task events: the task's progress is the live run's
    lifecycle.supervisor_topic = service.topology.topic("shadow_results")
    lifecycle.retries = cast(RetryChain, _NoRetries())  # the two methods the lifecycle calls

    async def mirror(task: dict[str, Any], ctx: MessageContext) -> None:
        if takes_candidate(live_type, task["session_id"], weight):
            await lifecycle.on_routed(task, ctx)

    service.processor.handler(service.input_topic, partial(service.schemas.decode_as, ROUTED_TASK))(mirror)
