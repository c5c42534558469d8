"""The results the router published itself since its group's last commit, read back when
it is given partitions, so a task (or a cancel) it reads again is not answered twice.

The router answers some tasks itself: REJECTED (an invalid task, a full session, a
tenant's limit) and CANCELED (a task canceled before it was routed). Those results are
plain sends, while the task's dedupe mark and its session's record reach their changelogs
at the next checkpoint. A router killed between the two (or one that loses its
partitions) leaves the result on the topic and the task's offset uncommitted: its next
owner reads the task again, with none of the state that would tell it the task was
answered, and would decide it again (for a refusal, perhaps another way: the session's
queue may have room now).

Where to look: a checkpoint snapshots the committable source offsets and the buffered
table writes at one moment (runtime/checkpointing.py). A task handled after that moment
is read again after a crash, and its result was produced after it, so the result lies at
or past the position the same checkpoint committed on the results topic (co-partitioned
with the tasks: a task's result is on its partition). A task handled before it had its
mark and record flushed by that checkpoint: the dedupe check knows it. So reading the
results topic from the group's committed offset to its end, when a partition is
assigned and before any of its records is handled, finds every result the router may
publish again. A group that never committed reads its tasks from the start, and so
reads these from the start too.

What is found is written to the router's ``dedupe`` table, beside the marks (under a key
no task id can be: ``answer_key``), not kept in memory: the new owner commits the results
topic past these answers as it goes, maybe before it reads their tasks again, and a
second hand-over in between must still find them. The table's changelog is flushed by
the checkpoint that commits that offset. They expire with the marks
(``dedupe.retention_s``).

A task whose id no table may be keyed by (blank, a control character, too long:
router/decide.py ``is_usable_id``) is rejected as invalid, and its answer is kept under a
digest of what its result repeats of it (its task, session and tenant ids and its
submission time), with a count: copies of one submission cannot be told apart by their
results, so each read again takes one of the answers found. An answer left over (its task
was committed before its result was) is taken only by another copy of that submission.

Only the router's own answers are kept: a REJECTED result (only the router refuses), or
a CANCELED one naming no agent (the supervisor's results name the specialists that
answered). A supervisor's result for a task read again is the session gate's to settle,
as before (router/session_gate.py ``settle``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException

from agentstream.cancellation.records import CANCELED
from agentstream.events import TASK_RESULT, now_ms
from agentstream.router.decide import is_usable_id
from agentstream.runtime import Processor
from agentstream.runtime.context import current_context, in_partition
from agentstream.runtime.errors import ProcessorError, RestoreInterrupted
from agentstream.runtime.expiry import timestamp_value
from agentstream.runtime.table import Table
from agentstream.serde import SchemaSet, SerdeError

log = logging.getLogger(__name__)

REJECTED = "REJECTED"
# How long an assignment may spend reading its partitions' results back: the tail since the
# last commit takes a fetch or two; a group that never committed reads the partitions' whole
# retention. Past this, they go on without (and may answer a task twice).
READ_TIMEOUT_S = 120.0
# The dedupe table's key of a task's answer: a control character first, as the marks of
# unusable ids have (router/decide.py unusable_id_key, \x01), so no usable task id is one.
_ANSWER_PREFIX = "\x02answer:"
_ANSWER_PREFIX_BYTES = _ANSWER_PREFIX.encode()
# After the prefix, the key of a task whose id is not usable: a control character, which
# no usable id holds, then the digest of its ids.
_UNUSABLE_MARK = "\x03"
_HEAD_FIELDS = ("task_id", "session_id", "status", "error")
# What a TaskResult repeats of its task, for the digest of an unusable id (and the last
# field of the result read back for it: the decode stops there).
_SUBMISSION_FIELDS = ("task_id", "session_id", "tenant_id", "submitted_at")


def answer_key(task: Mapping[str, Any]) -> str:
    """The dedupe table's key of the router's answer to ``task`` (a TaskSubmitted, or the
    head of its TaskResult): its id; for an id the table may not be keyed by, a digest of
    what the result repeats of the task (a task read again has the same)."""
    if is_usable_id(task["task_id"]):
        return f"{_ANSWER_PREFIX}{task['task_id']}"
    submission = json.dumps([task.get(field) for field in _SUBMISSION_FIELDS])  # a list: where each id ends is kept
    return f"{_ANSWER_PREFIX}{_UNUSABLE_MARK}{hashlib.sha256(submission.encode()).hexdigest()}"


def own_answer(result: dict[str, Any]) -> bool:
    """Whether ``result`` (a TaskResult's head through ``agents``) is one the router published."""
    return result["status"] == REJECTED or (result["status"] == CANCELED and not result["agents"])


def dedupe_written_at(value: Any) -> int | None:
    """When a ``dedupe`` entry was written (its expiry clock): a mark is its own time; an
    answer entry (``{"answer": ..., "at": ms}``) says when it was read back."""
    if isinstance(value, dict):
        return timestamp_value(value.get("at"))
    return timestamp_value(value)


class OwnResults:
    """The router's own results since its last commit, read back into its dedupe table."""

    def __init__(self, app: Processor, schemas: SchemaSet, results_topic: str, tasks_topic: str, dedupe: Table) -> None:
        self._app = app
        self._schemas = schemas
        self._results_topic = results_topic
        self._tasks_topic = tasks_topic
        self._dedupe = dedupe

    def answer(self, task: Mapping[str, Any]) -> dict[str, Any] | None:
        """The result the router published itself for ``task`` and read back at an
        assignment, or None (the table of the partition at hand: a handler's, or
        ``in_partition``'s). Asked for every task: a partition that never held one answers
        without a read (may_hold)."""
        if not self._dedupe.partition(current_context.get().partition).may_hold(_ANSWER_PREFIX_BYTES):
            return None
        entry = self._dedupe.get(answer_key(task))
        if not isinstance(entry, dict):
            return None
        answer = entry.get("answer")
        if not isinstance(answer, dict):
            return None
        if "count" not in entry:  # a usable id: the key named the task, not its session
            return answer if answer.get("session_id") == task["session_id"] else None
        return {**answer, "task_id": task["task_id"], "session_id": task["session_id"]}  # the digest named both

    def forget(self, task: Mapping[str, Any]) -> None:
        """Drop the task's answer: it is used (the task's mark and its session's record now
        say what it said, and reach the changelog with this delete), or an operator replays
        the task, which is to be decided again. Of the answers to copies of one submission
        with an unusable id, one is used."""
        if not self._dedupe.partition(current_context.get().partition).may_hold(_ANSWER_PREFIX_BYTES):
            return
        key = answer_key(task)
        entry = self._dedupe.get(key)
        if entry is None:
            return
        left = entry.get("count", 1) - 1 if isinstance(entry, dict) else 0
        if left > 0:
            self._dedupe[key] = {**entry, "count": left}
        else:
            del self._dedupe[key]

    async def on_assign(self, partitions: list[int]) -> None:
        """Read back the newly assigned partitions' results from the group's committed
        offsets (a processor assignment hook: it runs before the partitions' records)."""
        if not partitions:
            return
        try:
            committed = await self._app.committed(self._results_topic, partitions)
            # A partition never committed: its tasks are read from the start, so are these.
            starts = {partition: committed.get(partition) or 0 for partition in partitions}
            read = await self._app.read_partitions_to_end(
                self._results_topic, starts, timeout=READ_TIMEOUT_S, keep=self._is_own)
        except RestoreInterrupted as exc:
            log.info("%s: not read back: %s", self._results_topic, exc)
            return
        except (KafkaException, ProcessorError) as exc:
            log.warning("%s: the router's own results since its last commit were not read back (%s); a task it "
                        "answered before a crash may be answered again", self._results_topic, exc)
            return
        at = now_ms()
        for partition in partitions:
            answers = [head for _, value, _ in read.get(partition, [])
                       if (head := self._head(value, through=_SUBMISSION_FIELDS[-1])) is not None]
            with in_partition(self._tasks_topic, partition):
                for key, entry in answer_entries(answers, at).items():
                    self._dedupe[key] = entry
            if answers:
                log.info("%s[%d]: %d results the router published after its last commit read back",
                         self._results_topic, partition, len(answers))

    def _is_own(self, value: bytes | None) -> bool:
        result = self._head(value)
        return result is not None and own_answer(result)

    def _head(self, value: bytes | None, through: str = "agents") -> dict[str, Any] | None:
        try:
            return self._schemas.decode_head(TASK_RESULT, value or b"", through=through)
        except SerdeError:
            return None  # not a TaskResult: the session gate logs it when it reads it


def answer_entries(answers: list[dict[str, Any]], at: int) -> dict[str, dict[str, Any]]:
    """The dedupe entries of answers read back (``at``: when). A usable id is one task: its
    latest answer. Unusable ids keep no ids (they may be huge), only how many answers."""
    entries: dict[str, dict[str, Any]] = {}
    for head in answers:
        key = answer_key(head)
        if is_usable_id(head["task_id"]):
            entries[key] = {"answer": {field: head.get(field) for field in _HEAD_FIELDS}, "at": at}
        else:
            count = entries[key]["count"] + 1 if key in entries else 1
            entries[key] = {"answer": {"status": head["status"], "error": head.get("error")}, "at": at, "count": count}
    return entries
