"""Sending a task back to a specialist for a revision (supervisor/revision.py): the
revising marker written through first, then the RoutedTask, acknowledged.

The marker first: a revised result can never arrive before the marker that says it is
awaited. The request second, and only once the broker has it may the specialist result
that completed the round be committed: a crash before that leaves the marker and the
result uncommitted, and the result, redelivered, makes the supervisor send the request
again (supervisor/app.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from agentstream.events import ROUTED_TASK, now_ms
from agentstream.runtime import Table
from agentstream.service import Service
from agentstream.supervisor.emitter import ResultEmitter
from agentstream.supervisor.review import Review
from agentstream.supervisor.revision import Round, revision_request, revising_marker, spent_after

log = logging.getLogger(__name__)

Record = dict[str, Any]


class Reviser:
    """Asks specialists for revisions on behalf of one supervisor."""

    def __init__(self, service: Service, markers: Table, pending: Table, emitter: ResultEmitter) -> None:
        self.service = service
        self.app = service.processor
        self.markers = markers
        self.pending = pending
        self.emitter = emitter

    async def request(self, final: Record, received: list[Record], review: Review, earlier: Round, partition: int) -> None:
        """Send the task of ``final`` back to ``review.agent_type`` as revision
        ``earlier.revisions + 1``; ``received`` are the round's results."""
        superseded = next(r for r in received if r["agent_type"] == review.agent_type)
        request = revision_request(superseded, review, earlier.revisions + 1, now_ms())
        marker = revising_marker(request, received, spent_after(earlier, superseded, review.usage))
        task_id = final["task_id"]
        await self.app.persist(self.markers, task_id, marker, partition=partition)
        # Awaited from now on: the revised result must find the marker, not an emission.
        self.emitter.emitting.discard(task_id)
        if task_id in self.pending:  # after the marker, as emitter.py does: it holds the results now
            del self.pending[task_id]
        await self.send(marker)
        self.app.release()  # the request is out: the specialist result that completed the round may be committed
        self.service.progress(final, "STATE", "WAITING_CHILD",
                              f"sent back to {review.agent_type} for revision {request['revision']}: {review.feedback}")

    async def send(self, marker: Mapping[str, Any]) -> None:
        """Send the revision request of the revising ``marker`` (again, after a crash: the
        specialist drops a revision it has already)."""
        request = marker["request"]
        # Back to the version that ran it: a canary's task is revised by the canary (rollout/).
        ran = next((r for r in marker["results"] if r["agent_type"] == request["agent_type"]), {})
        topic = self.service.topology.version_topic(request["agent_type"], ran.get("variant"))
        encoded = self.service.schemas.encode(ROUTED_TASK, request)
        await self.app.send_acked(topic, encoded, request["session_id"])
        log.info("task %s sent back to %s for revision %d", request["task_id"], request["agent_type"], request["revision"])
