"""Per-version statistics of specialist results, and the rollback rules over them.

Pure: the report (rollout/report.py) and the watcher (rollout/watch.py) read the
records from Kafka and hand them here. A record is a SpecialistResult (the supervisor
topic carries the live and canary runs, the shadow results topic the shadow's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentstream.cancellation.records import is_canceled
from agentstream.rollout.config import LIVE, RollbackRules

Record = Mapping[str, Any]
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class VersionStats:
    """What one version of an agent type did over a window."""

    tasks: int
    completion: float  # share of COMPLETED
    p50_ms: float
    p95_ms: float
    cost_per_task: float
    steps: float  # mean model turns per task
    tool_error_rate: float  # failed tool calls / tool calls (0 without calls)
    versions: tuple[str, ...]  # the behaviour versions seen


def variant_of(record: Record) -> str:
    return record.get("variant") or LIVE


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (0 for no values): a value that occurred, no interpolation."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(share * len(ordered)) - 1)])


def stats(records: Sequence[Record]) -> VersionStats:
    if not records:
        return VersionStats(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ())
    latencies = [max(0, r["finished_at"] - r["started_at"]) for r in records]
    tool_calls = sum(r["usage"]["tool_calls"] for r in records)
    tool_errors = sum(r.get("tool_errors") or 0 for r in records)
    count = len(records)
    return VersionStats(
        tasks=count,
        completion=sum(r["status"] == "COMPLETED" for r in records) / count,
        p50_ms=percentile(latencies, 0.5),
        p95_ms=percentile(latencies, 0.95),
        cost_per_task=sum(r["usage"]["cost_usd"] for r in records) / count,
        steps=sum(r.get("steps") or r["usage"]["llm_calls"] for r in records) / count,
        tool_error_rate=tool_errors / tool_calls if tool_calls else 0.0,
        versions=tuple(sorted({r["behavior_version"] for r in records})),
    )


def by_variant(records: Iterable[Record], agent_type: str) -> dict[str, list[Record]]:
    """``agent_type``'s records by variant (live, candidate, shadow), latest run per task
    (a task retried through the tiers counts once, as its final outcome)."""
    latest: dict[tuple[str, str], Record] = {}
    for record in records:
        # A canceled run says nothing of the version (a person stopped it): not counted, so
        # cancels on a canary's sessions cannot roll a healthy candidate back.
        if record["agent_type"] == agent_type and not is_canceled(record):
            latest[(variant_of(record), record["task_id"])] = record
    grouped: dict[str, list[Record]] = {}
    for (variant, _), record in latest.items():
        grouped.setdefault(variant, []).append(record)
    return grouped


def same_answer(left: str | None, right: str | None) -> bool:
    """Two answers agree when equal after folding case and runs of white space: strict on
    purpose, a number or a name that differs is a different answer."""
    if left is None or right is None:
        return False
    return _SPACE.sub(" ", left).strip().casefold() == _SPACE.sub(" ", right).strip().casefold()


def agreement(live: Sequence[Record], other: Sequence[Record]) -> tuple[float | None, int]:
    """Share of the tasks both ran whose answers agree, and how many both ran (None: none)."""
    answers = {r["task_id"]: r.get("output") for r in live}
    both = [r for r in other if r["task_id"] in answers]
    if not both:
        return None, 0
    return sum(same_answer(answers[r["task_id"]], r.get("output")) for r in both) / len(both), len(both)


@dataclass(frozen=True)
class RuleCheck:
    """One rollback rule applied to a candidate: its figure, the rule's bound, and whether
    it held. ``rule`` is the RollbackRules field, so a record of it names the setting."""

    rule: str
    value: float  # the candidate's figure: a share, or a ratio to live
    limit: float
    held: bool
    text: str  # the figures in words, e.g. "completion 0% < 85%"


def checks(rules: RollbackRules, live: VersionStats, candidate: VersionStats) -> list[RuleCheck]:
    """Every rule that applies to ``candidate``: none before ``min_tasks`` results, and the
    ratio rules only with live results to compare with."""
    if candidate.tasks < rules.min_tasks:
        return []
    done, errors = candidate.completion, candidate.tool_error_rate
    found = [
        RuleCheck("min_completion", done, rules.min_completion, done >= rules.min_completion,
                  f"completion {done:.0%} {'>=' if done >= rules.min_completion else '<'} {rules.min_completion:.0%}"),
        RuleCheck("max_error_rate", errors, rules.max_error_rate, errors <= rules.max_error_rate,
                  f"tool error rate {errors:.1%} {'<=' if errors <= rules.max_error_rate else '>'} {rules.max_error_rate:.1%}"),
    ]
    if live.tasks and live.p95_ms > 0:
        ratio = candidate.p95_ms / live.p95_ms
        found.append(RuleCheck("max_p95_ratio", ratio, rules.max_p95_ratio, ratio <= rules.max_p95_ratio,
                               f"p95 {candidate.p95_ms:.0f} ms is {ratio:.1f}x live's {live.p95_ms:.0f} ms "
                               f"{'<=' if ratio <= rules.max_p95_ratio else '>'} {rules.max_p95_ratio:g}x"))
    if live.tasks and live.cost_per_task > 0:
        ratio = candidate.cost_per_task / live.cost_per_task
        found.append(RuleCheck("max_cost_ratio", ratio, rules.max_cost_ratio, ratio <= rules.max_cost_ratio,
                               f"cost per task ${candidate.cost_per_task:.6f} is {ratio:.1f}x live's "
                               f"{'<=' if ratio <= rules.max_cost_ratio else '>'} {rules.max_cost_ratio:g}x"))
    return found


def breached(found: Sequence[RuleCheck]) -> list[RuleCheck]:
    return [check for check in found if not check.held]


def in_words(found: Sequence[RuleCheck], tasks: int) -> str:
    """The checks' figures as one line: "completion 0% < 85% over 7 tasks"."""
    return f"{'; '.join(check.text for check in found)} over {tasks} tasks"


def breach(rules: RollbackRules, live: VersionStats, candidate: VersionStats) -> str | None:
    """Why the candidate must be rolled back, or None."""
    broken = breached(checks(rules, live, candidate))
    return in_words(broken, candidate.tasks) if broken else None
