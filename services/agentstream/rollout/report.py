"""``agentstream rollout report``: per agent type with a candidate, per version, what the
last window of specialist results says, the current weight and why it was last set.

Read from the topics, not from a metrics store: the supervisor topic holds every live
and canary run's SpecialistResult, ``shadow_results`` every shadow run's, each with its
timings, usage, steps and tool errors, so the report needs nothing but the broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message

from agentstream.events import SPECIALIST_RESULT, now_ms
from agentstream.rollout.config import CANARY, LIVE, VARIANT_SUFFIX, CandidateSettings
from agentstream.rollout.rules import VersionStats, agreement, breach, by_variant, stats
from agentstream.rollout.window import TopicFollower
from agentstream.serde import SchemaSet, SerdeError
from agentstream.topology import Topology

READ_TIMEOUT_S = 60.0
Record = Mapping[str, Any]


@dataclass(frozen=True)
class AgentReport:
    agent_type: str
    mode: str
    weight: float
    control: Record | None  # the latest control record, None: the topology's weight holds
    versions: dict[str, VersionStats]  # live, candidate or shadow -> stats
    agreement: dict[str, tuple[float | None, int]]  # candidate or shadow -> (share, tasks both ran)
    breach: str | None  # what the rollback rules say now (canary only)


def result_topics(topology: Topology) -> list[str]:
    """Where specialist results are: the supervisor's input, and the shadows' topic."""
    shadows = [topology.topic("shadow_results")] if "shadow_results" in topology.topics else []
    return [topology.topic("supervisor"), *shadows]


def candidate_types(topology: Topology) -> list[str]:
    """The specialist types with a candidate, canary or shadow."""
    return [t for t in topology.specialist_types if topology.candidate_of(t) is not None]


def decode_results(messages: Iterable[Message], schemas: SchemaSet) -> list[dict[str, Any]]:
    """The SpecialistResults among ``messages`` (anything else on the topic is skipped)."""
    records = []
    for msg in messages:
        value = msg.value()
        if value is None:
            continue
        try:
            records.append(schemas.decode_as(SPECIALIST_RESULT, value))
        except SerdeError:
            continue
    return records


def read_window(bootstrap: str, topology: Topology, schemas: SchemaSet, window_s: float) -> list[dict[str, Any]]:
    """Every specialist result finished within the last ``window_s`` seconds."""
    since = now_ms() - int(window_s * 1000)
    follower = TopicFollower(bootstrap, result_topics(topology), since_ms=since)
    try:
        records = decode_results(follower.catch_up(READ_TIMEOUT_S), schemas)
    finally:
        follower.close()
    return [r for r in records if r["finished_at"] >= since]


def build_report(
    topology: Topology, agent_type: str, records: Sequence[Record], controls: Mapping[str, Record], judged_since: int = 0,
) -> AgentReport:
    """``agent_type``'s report; the rules judge the candidate's results since ``judged_since``
    (epoch ms), and at least since its weight was last set."""
    candidate = topology.candidate_of(agent_type)
    assert candidate is not None, f"{agent_type} has no candidate"  # callers pick types with one
    grouped = by_variant(records, agent_type)
    versions = {variant: stats(found) for variant, found in sorted(grouped.items())}
    live = grouped.get(LIVE, [])
    agree = {variant: agreement(live, found) for variant, found in grouped.items() if variant != LIVE}
    control = controls.get(agent_type)
    weight = current_weight(candidate, control)
    # At weight 0 there is nothing to roll back (the results still coming are of tasks it held).
    said = judge(candidate, grouped, control, judged_since) if weight > 0 else None
    return AgentReport(agent_type, candidate.mode, weight, control, versions, agree, said)


def current_weight(candidate: CandidateSettings, control: Record | None) -> float:
    return float(control["weight"]) if control is not None else candidate.weight


def judge(candidate: CandidateSettings, grouped: Mapping[str, Sequence[Record]], control: Record | None,
          judged_since: int = 0) -> str | None:
    """A canary's breach of its rollback rules (None for a shadow)."""
    if candidate.mode != CANARY:
        return None
    return breach(candidate.rollback, *judged(grouped, control, judged_since))


def judged(grouped: Mapping[str, Sequence[Record]], control: Record | None, judged_since: int = 0) -> tuple[VersionStats, VersionStats]:
    """What the rules compare: live over the window, and the canary's results since its
    weight was last set (an earlier, rolled-back run must not roll back a new one, and a
    step up is earned at the weight it leaves)."""
    since = max(judged_since, int(control["at"]) if control is not None else 0)
    recent = [r for r in grouped.get(VARIANT_SUFFIX[CANARY], []) if r["finished_at"] >= since]
    return stats(grouped.get(LIVE, [])), stats(recent)


def format_report(reports: Sequence[AgentReport], window_s: float) -> str:
    if not reports:
        return "No specialist in the topology declares a candidate."
    lines: list[str] = []
    for report in reports:
        lines += _section(report, window_s)
    return "\n".join(lines)


def _section(report: AgentReport, window_s: float) -> list[str]:
    set_how = "topology" if report.control is None else (
        f"{report.control['set_by'] or '?'} at {_when(report.control['at'])}: {report.control['reason'] or 'no reason given'}")
    lines = [f"{report.agent_type} ({report.mode}, weight {report.weight:g}; set by {set_how}) — last {window_s:g} s",
             f"  {'version':<10} {'behaviour':<13} {'tasks':>5} {'done':>6} {'p50 ms':>7} {'p95 ms':>7} "
             f"{'$/task':>10} {'steps':>5} {'tool err':>8} {'agree':>12}"]
    for variant, found in report.versions.items():
        share, both = report.agreement.get(variant, (None, 0))
        agree = "-" if variant == LIVE else ("n/a" if share is None else f"{share:.0%} of {both}")
        lines.append(f"  {variant:<10} {','.join(found.versions):<13} {found.tasks:>5} {found.completion:>6.0%} "
                     f"{found.p50_ms:>7.0f} {found.p95_ms:>7.0f} {found.cost_per_task:>10.6f} {found.steps:>5.1f} "
                     f"{found.tool_error_rate:>8.1%} {agree:>12}")
    if not report.versions:
        lines.append("  (no results in the window)")
    if report.breach:
        lines.append(f"  rollback rule breached: {report.breach}")
    if report.control is not None and report.control.get("last_rollback"):
        rolled = report.control["last_rollback"]
        texts = "; ".join(b["text"] for b in rolled["breaches"])
        lines.append(f"  last rollback: {_when(report.control['last_rollback_at'])}, candidate "
                     f"{rolled['candidate_version'] or '?'}: {texts} over {rolled['tasks']} tasks")
    return lines


def _when(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
