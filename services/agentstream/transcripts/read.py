"""Finding a task's transcript on the ``transcripts`` topic (read whole, group-less)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agentstream.approvals.ops import read_records  # every record of one schema on a topic, group-less
from agentstream.errors import AgentStreamError
from agentstream.serde import SchemaSet
from agentstream.topology import Topology
from agentstream.transcripts.record import TRANSCRIPT, TRANSCRIPTS


class TranscriptNotFound(AgentStreamError):
    """No transcript of the asked task (and agent) is on the topic."""


def runs_of(records: Iterable[Mapping[str, Any]], task_id: str) -> dict[str, dict[str, Any]]:
    """The transcripts of ``task_id``, one per run id: a run written twice (its worker died
    between the transcript and the tombstone) counts once, the latest copy winning."""
    return {str(r["run_id"]): dict(r) for r in records if r["task_id"] == task_id}


def pick(runs: Mapping[str, Mapping[str, Any]], task_id: str, agent: str | None) -> dict[str, Any]:
    """The run to replay: ``agent``'s (or the only agent's), its latest revision."""
    mine = [r for r in runs.values() if agent is None or r["agent_type"] == agent]
    agents = sorted({str(r["agent_type"]) for r in mine})
    if not mine:
        had = sorted({str(r["agent_type"]) for r in runs.values()})
        where = f" by {agent!r}; it has transcripts by {had}" if agent and had else ""
        raise TranscriptNotFound(f"No transcript of task {task_id!r}{where}. Transcripts are written when a "
                                 "specialist finishes a run, if the topology declares the transcripts topic.")
    if len(agents) > 1:
        raise TranscriptNotFound(f"Task {task_id!r} was run by {agents}; choose one with --agent.")
    return dict(max(mine, key=lambda r: int(r["revision"])))


def find_transcript(bootstrap: str, topology: Topology, schemas: SchemaSet, task_id: str, agent: str | None) -> dict[str, Any]:
    """The transcript of ``task_id`` (by ``agent``) on the topology's transcripts topic."""
    if TRANSCRIPTS not in topology.topics:
        raise TranscriptNotFound(f"The topology declares no {TRANSCRIPTS!r} topic, so no run left a transcript; "
                                 "declare it (see examples/support_desk/topology.yaml) to record them.")
    records = read_records(bootstrap, topology.topic(TRANSCRIPTS), TRANSCRIPT, schemas)
    return pick(runs_of(records, task_id), task_id, agent)
