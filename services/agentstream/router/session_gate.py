"""One task of a session in the pipeline at a time: the router's gate.

A session's tasks form one conversation, so a later task must start after the earlier
one has its answer, whichever specialists handle each. The router lets a session's task
go (routes it) only when the session has no task open; a task that arrives meanwhile
waits in the session's record, in arrival order. The supervisor's result for the open
task (read back from the results topic, co-partitioned with the tasks) closes it: its
input and answer become a turn of the session's memory (agentstream.session_memory) and
the next waiting task goes, carrying that memory.

The record, one per session in the router's ``sessions`` table::

    {"open": Decided | None, "waiting": [Decided, ...], "turns": [...], "at": ms, "through": seen,
     "through_offset": offset, "early": {task_id: result summary}, "canceled": {task_id: {requested_by, reason}},
     "ended": [task_id, ...]}

where Decided is a task with its routing, ``{"task", "route", "tier", "by"}``: kept whole,
so the router can send the open task again after a crash (see ``missed`` and ``arrive``).
With a router model, route, tier and by stay None until the task leaves the gate (the
open entry is then decided and updated: router/app.py). Pure functions over that
record: the router's handlers do the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, NamedTuple

from agentstream import jsoncodec
from agentstream.cancellation.records import CANCELED, cancel_text
from agentstream.runtime.expiry import timestamp_value
from agentstream.session_memory import clip, remember, turn_from_result
from agentstream.topology import SessionSettings

Record = dict[str, Any]


# Results that came before their task, and cancels (kept per session, oldest dropped past this).
EARLY_KEPT = 50
CANCELS_KEPT = 50
# Ended tasks the record knows by id, turns included: a task read again after a crash is
# known as ended (``taken``) while among the latest ones. With fewer turns than this
# (``remember_turns`` below it, or turns given way to the record's size), the ids of the
# ended tasks beyond the turns are kept in ``ended``; with a full memory, none.
ENDED_KEPT = 10
# A record is one changelog message: well under Kafka's default 1 MB message limit, so
# a burst of large tasks for one session is refused (OVERSIZE) instead of stopping the
# router at its next checkpoint.
RECORD_MAX_BYTES = 512 * 1024


class Admission(Enum):
    GO = "go"  # the session was idle: route it now
    WAIT = "wait"  # held behind the session's open task
    FULL = "full"  # too many waiting already: refuse it
    KNOWN = "known"  # open or waiting already: a repeat; the record takes its mark (and is to be written)
    OVERSIZE = "oversize"  # the session's waiting tasks would outgrow its record: refuse it
    ANSWERED = "answered"  # its result is in already (see settle): remembered, not routed again
    CANCELED = "canceled"  # a cancel came before the task (see cancel): remembered, not routed


class Canceling(Enum):
    """What a cancel found in the session's record (see ``cancel``)."""

    DROPPED = "dropped"  # waiting, or open but not routed yet: canceled here, never started
    ROUTED = "routed"  # open and routed: its specialists stop it
    ENDED = "ended"  # remembered as ended: the cancel is ignored
    AHEAD = "ahead"  # not seen yet: kept, the task is canceled when it comes


def new_record() -> Record:
    return {"open": None, "waiting": [], "turns": [], "at": 0, "through": 0, "early": {}}


def admit(
    record: Record, decided: Mapping[str, Any], limits: SessionSettings, seen: int, offset: int | None, *,
    replay: bool = False,
) -> Admission:
    """Let ``decided`` (a task with its routing: {"task", "route", "tier"}) in, in place;
    ``seen`` is the task's dedupe mark (strictly increasing per partition, see ``missed``),
    ``offset`` its record's offset on the tasks topic (None: a retry tier's copy), and
    ``replay`` whether an operator replays it from the dead letters.

    A task open or waiting is KNOWN: a repeat; the record takes its mark even so (a crash
    may have kept the record and lost the task's mark), so a later copy is a repeat to the
    dedupe check as well. A replay is routed again even if a FAILED result of it came first
    (the router's own dead-lettering of it publishes one); a COMPLETED one answers it."""
    task = decided["task"]
    task_id = task["task_id"]
    passed(record, seen, offset)
    if task_id == open_task(record) or _waiting_index(record, task_id) is not None:
        return Admission.KNOWN
    if replay and record.get("early", {}).get(task_id, {}).get("status") == "FAILED":
        del record["early"][task_id]  # the router's own dead-lettering of it: no answer to the replay
    early = record.setdefault("early", {}).pop(task["task_id"], None)
    if early is not None:
        _remember(record, task["input"], early, limits)
        _fit(record)
        return Admission.ANSWERED
    canceled = record.get("canceled", {}).pop(task["task_id"], None)
    if canceled is not None:
        _remember(record, task["input"], _canceled_turn(task["task_id"], canceled), limits)
        return Admission.CANCELED
    if record["open"] is None and not record["waiting"]:
        record["open"] = dict(decided)
        return Admission.GO
    if len(record["waiting"]) >= limits.max_waiting:
        return Admission.FULL
    record["waiting"].append(dict(decided))
    if record_bytes(record) > RECORD_MAX_BYTES:
        record["waiting"].pop()
        return Admission.OVERSIZE
    return Admission.WAIT


def answered_before(
    record: Record, task: Mapping[str, Any], answer: Mapping[str, Any], limits: SessionSettings, seen: int,
    offset: int | None,
) -> None:
    """The router answered ``task`` itself before a crash, and its next owner reads it
    again (router/own_results.py): ``answer`` is that result's head, read back. In place,
    the record takes the task as that answer left it: passed, as a refused task is (a
    REJECTED one), and remembered as a CANCELED turn, as a task dropped here is."""
    passed(record, seen, offset)
    record.get("early", {}).pop(task["task_id"], None)  # the answer itself, read back before the task
    if answer["status"] == CANCELED:
        record.get("canceled", {}).pop(task["task_id"], None)
        _remember(record, task["input"], _answer_turn(answer), limits)
        _fit(record)


def close_answered(record: Record, answer: Mapping[str, Any], limits: SessionSettings) -> None:
    """The record's open task, about to go, was answered by the router itself before a
    crash (``answer``, read back: router/own_results.py), as a task dropped here by its
    cancel: closed as that answer, in place; the next waiting task opens."""
    closed = record["open"]["task"]
    record["open"] = record["waiting"].pop(0) if record["waiting"] else None
    _remember(record, closed["input"], _answer_turn(answer), limits)
    _fit(record)


def _answer_turn(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The turn of a task the router answered itself: its error's message is what a turn of
    a task canceled here says (``_canceled_turn``)."""
    message = (answer.get("error") or {}).get("message") or ""
    return {"task_id": answer["task_id"], "status": answer["status"], "output": message, "agents": []}


def passed(record: Record, seen: int, offset: int | None = None) -> None:
    """Move the record's marks past a task of the session (mark ``seen``, its record's
    ``offset`` on the tasks topic): every task that reaches the gate does, and so does one
    the router refuses before it (for its tenant's limits), so a repeat of either is known
    as one (``missed``, ``taken``)."""
    record["at"] = max(record["at"], seen)
    record["through"] = max(record.get("through", 0), seen)
    if offset is not None:
        record["through_offset"] = max(record.get("through_offset", -1), offset)


def taken(record: Record | None, task_id: str, offset: int | None) -> bool:
    """Whether the session's ``record`` took the task record at ``offset`` of the tasks
    topic already (at or below the last offset it took) and still knows the task (open,
    waiting, or among the latest ENDED_KEPT ended): the task is read again after a crash,
    whatever the dedupe table says. The dedupe marks and the session records are two
    changelogs; a kill in the middle of a checkpoint may keep the record and lose the
    task's mark, and the task, read again perhaps after its result, would be opened again
    and go to specialists that drop it as done: its session would wait for ever. (None: a
    retry tier's copy, whose offset is its tier's. The task must be held too, so a new task
    id on a recreated tasks topic, whose offsets start again, is not taken; an id re-used
    there while the record still knows it would be.)"""
    if record is None or not _took_offset(record, offset):
        return False
    return (task_id == open_task(record) or _waiting_index(record, task_id) is not None
            or _has_ended(record, task_id))


def record_bytes(record: Record) -> int:
    """The size of the record's changelog value: the table's own encoding (jsoncodec),
    measured on every admitted task and every result, so it is the fast one too."""
    return len(jsoncodec.dumps(record))


def settle(record: Record, result: Mapping[str, Any], limits: SessionSettings, now: int) -> dict[str, Any] | None:
    """Take in ``result`` (a TaskResult of a routed task), in place. The open task's result
    closes it: its turn is remembered and the next waiting task opens and is returned (the
    caller routes it). A result may also come before its task is known here: after a
    crash, the new owner restores a record older than the source offsets it re-reads and
    may read the result before the task it answers (two topics, no order between them);
    the task was answered, so the result waits in ``early`` for the task to be admitted
    (as ANSWERED, not routed: the specialists would drop it as done, and nothing would
    ever close it). A result for a waiting task closes that one in place."""
    record["at"] = max(record["at"], now)
    task_id = result["task_id"]
    following: dict[str, Any] | None = None
    if task_id == open_task(record):
        _remember(record, record["open"]["task"]["input"], result, limits)
        following = record["waiting"].pop(0) if record["waiting"] else None
        record["open"] = following
    elif (index := _waiting_index(record, task_id)) is not None:
        _remember(record, record["waiting"].pop(index)["task"]["input"], result, limits)
    elif not _has_ended(record, task_id):
        early = record.setdefault("early", {})
        early[task_id] = {**{key: result.get(key) for key in ("task_id", "status", "agents")}, "output": clip(result.get("output"))}
        for stale in list(early)[:-EARLY_KEPT]:
            del early[stale]
    _fit(record)
    return following


def cancel(record: Record, cancel: Mapping[str, Any], limits: SessionSettings, now: int) -> tuple[Canceling, dict[str, Any] | None, dict[str, Any] | None]:
    """Take in the TaskCancel ``cancel``, in place: (what it found, the canceled task when
    it was dropped here, the next task to route when the dropped one was open).

    A task dropped here is remembered as a CANCELED turn, so its result, read back from
    the results topic, finds it settled. A cancel of a task not seen yet (the cancel came
    first: two topics, no order between them) is kept under ``canceled`` for admit."""
    record["at"] = max(record["at"], now)
    task_id = cancel["task_id"]
    if task_id == open_task(record):
        if record["open"].get("route") is not None:
            return Canceling.ROUTED, None, None
        dropped = record["open"]["task"]
        record["open"] = record["waiting"].pop(0) if record["waiting"] else None
        _remember(record, dropped["input"], _canceled_turn(task_id, cancel), limits)
        return Canceling.DROPPED, dropped, record["open"]
    if (index := _waiting_index(record, task_id)) is not None:
        dropped = record["waiting"].pop(index)["task"]
        _remember(record, dropped["input"], _canceled_turn(task_id, cancel), limits)
        return Canceling.DROPPED, dropped, None
    if _has_ended(record, task_id):
        return Canceling.ENDED, None, None
    kept = record.setdefault("canceled", {})
    kept[task_id] = {key: cancel.get(key) for key in ("requested_by", "reason")}
    for stale in list(kept)[:-CANCELS_KEPT]:
        del kept[stale]
    _fit(record)
    return Canceling.AHEAD, None, None


def _canceled_turn(task_id: str, cancel: Mapping[str, Any]) -> dict[str, Any]:
    """The turn of a task canceled here (a TaskResult's fields, as turn_from_result reads them)."""
    return {"task_id": task_id, "status": CANCELED, "output": cancel_text(cancel), "agents": []}


def _fit(record: Record) -> None:
    """Keep the record within RECORD_MAX_BYTES: the oldest early results go first, then
    the oldest remembered turns (what is open or waiting is never dropped here; admit
    refuses what would not fit)."""
    while record_bytes(record) > RECORD_MAX_BYTES:
        if record.get("early"):
            del record["early"][next(iter(record["early"]))]
        elif record["turns"]:
            _keep_ended(record, [record["turns"].pop(0)["task_id"]])
        else:
            return


def _remember(record: Record, task_input: str, result: Mapping[str, Any], limits: SessionSettings) -> None:
    turn = turn_from_result(task_input, result)
    before = [*record["turns"], turn]
    record["turns"] = remember(record["turns"], turn, limits.remember_turns)
    kept = {kept_turn["task_id"] for kept_turn in record["turns"]}
    _keep_ended(record, [old["task_id"] for old in before if old["task_id"] not in kept])


def _keep_ended(record: Record, task_ids: list[str]) -> None:
    """Ended tasks' ids dropped from the turns: kept while the turns are fewer than ENDED_KEPT."""
    room = ENDED_KEPT - len(record["turns"])
    kept = [task_id for task_id in record.get("ended", []) if task_id not in task_ids]  # once each
    ended = [*kept, *task_ids][-room:] if room > 0 else []
    if ended or "ended" in record:
        record["ended"] = ended


def _took_offset(record: Record, offset: int | None) -> bool:
    """Whether the record took the tasks topic's record at ``offset`` (or a later one)."""
    return offset is not None and offset <= record.get("through_offset", -1)


def _has_ended(record: Record, task_id: str) -> bool:
    return task_id in record.get("ended", ()) or any(turn["task_id"] == task_id for turn in record["turns"])


def _waiting_index(record: Record, task_id: str) -> int | None:
    return next((i for i, waiting in enumerate(record["waiting"]) if waiting["task"]["task_id"] == task_id), None)


def holds(record: Record | None, task_id: str) -> bool:
    """Whether the session's ``record`` holds the task: open or waiting."""
    return record is not None and (task_id == open_task(record) or _waiting_index(record, task_id) is not None)


def open_task(record: Record) -> str | None:
    return record["open"]["task"]["task_id"] if record["open"] else None


def missed(record: Record | None, seen: int) -> bool:
    """Whether a task the router marked as seen (mark ``seen``) never reached its
    session's record: a crash lost the record's update but not the mark (two tables, two
    changelogs: a checkpoint cut short may deliver one and not the other). Every task
    that reaches the gate moves the record's ``through`` to its mark, and marks only
    grow, so a record that took the task has ``through >= seen``. Otherwise the mark
    is right and the task a repeat."""
    if record is None:
        return True  # the session's first task: its record never reached the changelog
    return bool(record.get("through", 0) < seen)


class Arrival(NamedTuple):
    """How a task reaches the gate (see ``arrive``)."""

    mark: int  # its dedupe mark
    recovering: bool  # seen before, but its session's record never took it
    new_mark: bool  # the mark is new: the dedupe table is to hold it


def arrive(
    record: Record | None, entry: Any, fresh: Callable[[], int], *, replay: bool = False, offset: int | None = None,
) -> Arrival | None:
    """A task reaches the gate: None when it is a repeat its session's ``record`` took
    already; else the mark it is admitted with. ``entry`` is the task's dedupe entry (None:
    never seen); ``fresh`` gives a new mark (called only when one is needed: marks are
    strictly increasing per partition); ``replay``: an operator replays it, so it is no
    repeat, unless the record took this very record (``offset`` on the tasks topic at or
    below its ``through_offset``: the replay read again after a crash).

    A task whose record never took it (``missed``) keeps the mark it has, not a new one. A
    crash may keep the marks of several tasks of a session and lose the record's updates
    of them; the new owner re-reads the tasks in their partition's order, and each must
    still find ``through`` below its mark. A new mark for the first would move ``through``
    past the others, which would then pass for repeats and never run. (Tasks re-read from
    the retry tiers come in another order: see the README, "Sessions".)"""
    if entry is None:
        return Arrival(fresh(), recovering=False, new_mark=True)
    first_mark = timestamp_value(entry)  # None: an entry of an older router, without a mark
    lost = missed(record, first_mark or 0)
    if replay and not lost and record is not None and _took_offset(record, offset):
        return None
    if replay:  # its entry is this replay's own mark when the record lost the replay
        if lost and first_mark is not None:
            return Arrival(first_mark, recovering=False, new_mark=False)
        return Arrival(fresh(), recovering=False, new_mark=True)
    if not lost:
        return None
    if first_mark is not None:
        return Arrival(first_mark, recovering=True, new_mark=False)
    return Arrival(fresh(), recovering=True, new_mark=True)


def idle_since(record: Any) -> int | None:
    """When an idle session was last active (its record may expire a retention later);
    None, never expire, while it has a task open or waiting."""
    if not isinstance(record, dict) or record.get("open") or record.get("waiting"):
        return None
    at = record.get("at")
    return at if isinstance(at, int) else None
