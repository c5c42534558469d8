"""One task of a session in the pipeline at a time: the router's gate.

A session's tasks form one conversation, so a later task must start after the earlier
one has its answer, whichever specialists handle each. The router lets a session's task
go (routes it) only when the session has no task open; a task that arrives meanwhile
waits in the session's record, in arrival order. The supervisor's result for the open
task (read back from the results topic, co-partitioned with the tasks) closes it: its
input and answer become a turn of the session's memory (agentstream.session_memory) and
the next waiting task goes, carrying that memory.

The record, one per session in the router's ``sessions`` table::

    {"open": Decided | None, "waiting": [Decided, ...], "turns": [...], "at": ms, "through": seen}

where Decided is a task with its routing, ``{"task", "route", "tier", "by"}``: kept whole,
so the router can send the open task again after a crash (see ``knows``/``missed``).
With a router model, route, tier and by stay None until the task leaves the gate (the
open entry is then decided and updated: router/app.py). Pure functions over that
record: the router's handlers do the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from agentstream.session_memory import remember, turn_from_result

Record = dict[str, Any]


class Admission(Enum):
    GO = "go"  # the session was idle: route it now
    WAIT = "wait"  # held behind the session's open task
    FULL = "full"  # too many waiting already: refuse it
    KNOWN = "known"  # already open or waiting: a repeat, nothing to do


def new_record() -> Record:
    return {"open": None, "waiting": [], "turns": [], "at": 0, "through": 0}


def admit(record: Record, decided: Mapping[str, Any], max_waiting: int, seen: int) -> Admission:
    """Let ``decided`` (a task with its routing: {"task", "route", "tier"}) in, in place;
    ``seen`` is the task's dedupe mark (strictly increasing per partition, see ``missed``)."""
    task_id = decided["task"]["task_id"]
    if task_id == open_task(record) or any(w["task"]["task_id"] == task_id for w in record["waiting"]):
        return Admission.KNOWN
    record["at"] = max(record["at"], seen)
    record["through"] = max(record.get("through", 0), seen)
    if record["open"] is None and not record["waiting"]:
        record["open"] = dict(decided)
        return Admission.GO
    if len(record["waiting"]) >= max_waiting:
        return Admission.FULL
    record["waiting"].append(dict(decided))
    return Admission.WAIT


def settle(record: Record, result: Mapping[str, Any], max_turns: int, now: int) -> dict[str, Any] | None:
    """Close the open task if ``result`` (a TaskResult) is its result, in place: remember
    the turn and open the next waiting task, which is returned (the caller routes it).
    None when ``result`` is not the open task's (a rejection, a repeat, another run)."""
    opened = record["open"]
    if opened is None or opened["task"]["task_id"] != result["task_id"]:
        return None
    record["turns"] = remember(record["turns"], turn_from_result(opened["task"]["input"], result), max_turns)
    record["at"] = now
    if not record["waiting"]:
        record["open"] = None
        return None
    following: dict[str, Any] = record["waiting"].pop(0)
    record["open"] = following
    return following


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


def idle_since(record: Any) -> int | None:
    """When an idle session was last active (its record may expire a retention later);
    None, never expire, while it has a task open or waiting."""
    if not isinstance(record, dict) or record.get("open") or record.get("waiting"):
        return None
    at = record.get("at")
    return at if isinstance(at, int) else None
