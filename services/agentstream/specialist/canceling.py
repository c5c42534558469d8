"""A specialist's cancels: the handler of the ``control`` topic and the ``c/<task_id>``
records of its checkpoints table.

A cancel is recorded first, written through, so it survives a restart of the worker; the
running loop reads that record, not memory. Then it is acted on:

- a task waiting for approval: its pending approvals are closed (a later decision is
  answered "already decided (canceled by ...)"), its wait ends and it is resumed, which
  ends it before any step;
- a running loop finds the record at its next step boundary (before a new model call or
  a step's tool calls: specialist/durable.py) and stops; a task not started yet, or
  routed after the cancel came, stops before its first step.

Either way the task ends through the lifecycle as any task does (result acknowledged,
done marker, checkpoint tombstones, session place handed on) with a SpecialistResult
FAILED, error code CANCELED, which the supervisor turns into the one CANCELED TaskResult.
A cancel of a task this specialist finished changes nothing. The records expire like
done markers (``dedupe.retention_s``), long after any task they can name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from agentstream.cancellation.records import CANCELED, cancel_text
from agentstream.events import now_ms
from agentstream.runtime import MessageContext, Table
from agentstream.service import Service
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.waiting import ApprovalDesk

log = logging.getLogger(__name__)

CANCEL = "c/"
_CANCEL_PREFIX = CANCEL.encode()

Resume = Callable[[dict[str, Any], int], None]  # (task head, partition)


def cancel_key(task_id: str) -> str:
    return f"{CANCEL}{task_id}"


def is_run_of(run: str, task_id: str) -> bool:
    """Whether ``run`` (ckpt.run_id) is the task's first run or one of its revisions."""
    return run == task_id or run.startswith(f"{task_id}{ckpt.REVISION_MARK}")


class Cancellations:
    """The cancels of one specialist's partitions (see the module docstring)."""

    resume: Resume  # bound by the lifecycle: resume a task from its head

    def __init__(self, service: Service, checkpoints: Table, desk: ApprovalDesk | None) -> None:
        self.service = service
        self.checkpoints = checkpoints
        self.desk = desk

    def requested(self, task_id: str, partition: int) -> Mapping[str, Any] | None:
        """The TaskCancel recorded for ``task_id``, or None. Asked at every step boundary: a
        partition that holds no cancel at all answers without a read (may_hold)."""
        store = self.checkpoints.partition(partition)
        if not store.may_hold(_CANCEL_PREFIX):
            return None
        raw = store.get(cancel_key(task_id).encode())
        return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]

    async def on_cancel(self, cancel: dict[str, Any], ctx: MessageContext) -> None:
        """The handler of TaskCancel records."""
        task_id = cancel["task_id"]
        heads = self._heads(task_id, ctx.partition)
        if not heads and ckpt.done_key(task_id) in self.checkpoints:
            log.info("%s: task %s has ended here; its cancel is ignored", ctx.where, task_id)
            return
        await self.service.processor.persist(self.checkpoints, cancel_key(task_id), {**cancel, "at": now_ms()})
        for head in heads:
            await self._drop_wait(head, ctx.partition, cancel)
        log.info("%s: cancel of task %s recorded (%d run(s) here)", ctx.where, task_id, len(heads))

    async def end_new_wait(self, task: Mapping[str, Any], partition: int) -> None:
        """The task has just begun to wait: if its cancel came while the wait was being
        recorded (after the handler found no wait to drop), drop it now."""
        cancel = self.requested(task["task_id"], partition)
        raw = self.checkpoints.partition(partition).get(ckpt.head_key(ckpt.run_id(task)).encode())
        if cancel is not None and raw is not None:
            await self._drop_wait(json.loads(raw), partition, cancel)

    async def _drop_wait(self, head: dict[str, Any], partition: int, cancel: Mapping[str, Any]) -> None:
        if self.desk is not None and await self.desk.close(ckpt.run_id(head["task"]), partition, cancel):
            self.service.progress(head["task"], "TEXT", CANCELED, f"wait for approval dropped: {cancel_text(cancel)}")
            self.resume(head, partition)  # it ends at once: the record is there

    def _heads(self, task_id: str, partition: int) -> list[dict[str, Any]]:
        store = self.checkpoints.partition(partition)
        heads = (json.loads(value) for _, value in store.scan(ckpt.head_key(task_id).encode()))
        return [head for head in heads if is_run_of(ckpt.run_id(head["task"]), task_id)]
