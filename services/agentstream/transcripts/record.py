"""The Transcript record: a finished run's steps, as its checkpoint held them. Pure data.

The steps are the run's checkpoint records (specialist/checkpoint.py) in sequence order,
across every owner that ran it, so a resumed run's transcript is whole. They travel as a
JSON string (see the schema's doc: their shape follows the loop, not a stream contract).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agentstream import jsoncodec
from agentstream.specialist import checkpoint as ckpt
from agentstream.transcripts import TRANSCRIPTS  # re-exported: the topic and the record go together

TRANSCRIPT = "Transcript"  # the schema (schemas/Transcript.avsc)
MODEL = "model"
TOOL = "tool"


def ordered_steps(epochs: Sequence[Sequence[int]], records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The valid checkpoint steps of a run in sequence order (fenced as a resume fences them)."""
    chain = ckpt.rebuild(epochs, records)
    return sorted([*chain.models.values(), *chain.tools.values()], key=lambda step: int(step["seq"]))


def in_call_order(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Steps by model call, each reply before the results of the tools it called, those by
    call index. A step's tools run concurrently and are checkpointed as they finish, so
    sequence order among them is chance; this order is the same for every run alike."""
    return sorted(steps, key=lambda s: (int(s.get("step", 0)), s.get("kind") != MODEL, int(s.get("index", 0))))


def transcript(
    task: Mapping[str, Any], result: Mapping[str, Any], epochs: Sequence[Sequence[int]],
    steps: Sequence[Mapping[str, Any]], recorded_at: int,
) -> dict[str, Any]:
    """The Transcript of ``task``'s run that ended in the SpecialistResult ``result``."""
    return {
        "run_id": ckpt.run_id(task),
        "task_id": task["task_id"],
        "session_id": task["session_id"],
        "tenant_id": task["tenant_id"],
        "agent_type": result["agent_type"],
        "revision": int(task.get("revision") or 0),
        "behavior_version": result["behavior_version"],
        "variant": result.get("variant"),  # which version's settings an exact replay takes
        "model": result.get("model") or "",
        "tier": result.get("tier") or "standard",
        "task": jsoncodec.dumps(dict(task), sort_keys=True).decode(),
        "status": result["status"],
        "output": result.get("output"),
        "error": result.get("error"),
        "usage": dict(result["usage"]),
        "steps": jsoncodec.dumps(list(steps)).decode(),
        "owners": max(len(epochs), 1),
        "started_at": result["started_at"],
        "finished_at": result["finished_at"],
        "recorded_at": recorded_at,
    }


def steps_of(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The steps of a Transcript record."""
    steps: list[dict[str, Any]] = jsoncodec.loads(record["steps"])
    return steps


def task_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The routed task a Transcript record ran."""
    task: dict[str, Any] = jsoncodec.loads(record["task"])
    return task
