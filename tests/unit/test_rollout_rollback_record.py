"""A rollback says which rules broke, with their figures, in words and as data, and a later
weight keeps the last rollback: the rule checks and the records the watcher writes."""

from __future__ import annotations

from agentstream.rollout.control import control_record, rollback_record
from agentstream.rollout.report import build_report, format_report
from agentstream.rollout.rules import breached, checks, stats

from .test_rollout import LIVE, RULES, _result, _topology

HEALTHY = stats([_result("candidate", n) for n in range(6)])


def test_every_rule_that_applies_is_checked_with_its_figures() -> None:
    found = checks(RULES, LIVE, stats([_result("candidate", n, status="FAILED" if n == 0 else "COMPLETED", ms=150)
                                       for n in range(4)]))
    assert [(c.rule, c.held) for c in found] == [("min_completion", False), ("max_error_rate", True),
                                                 ("max_p95_ratio", True), ("max_cost_ratio", True)]
    assert [c.text for c in found] == ["completion 75% < 85%", "tool error rate 0.0% <= 5.0%",
                                       "p95 150 ms is 1.5x live's 100 ms <= 2x", "cost per task $0.010000 is 1.0x live's <= 1.5x"]
    assert (found[0].value, found[0].limit) == (0.75, 0.85)
    assert checks(RULES, stats([]), HEALTHY)[2:] == []  # no live results: no ratio to take


def test_a_rollback_record_names_each_broken_rule_and_a_later_weight_keeps_it() -> None:
    broken = breached(checks(RULES, LIVE, stats([_result("candidate", n, status="FAILED", ms=900) for n in range(4)])))
    record = rollback_record("billing", "rollout-watch", "abc123", broken, 4)
    assert record["weight"] == 0 and record["reason"] == ("rolled back: completion 0% < 85%; "
                                                          "p95 900 ms is 9.0x live's 100 ms > 2x over 4 tasks")
    assert record["last_rollback_at"] == record["at"]
    assert record["last_rollback"] == {"candidate_version": "abc123", "tasks": 4, "breaches": [
        {"rule": "min_completion", "value": 0.0, "limit": 0.85, "text": "completion 0% < 85%"},
        {"rule": "max_p95_ratio", "value": 9.0, "limit": 2.0, "text": "p95 900 ms is 9.0x live's 100 ms > 2x"}]}
    later = control_record("billing", 0.2, "fixed, trying again", "ops", previous=record)
    assert (later["last_rollback_at"], later["last_rollback"]) == (record["at"], record["last_rollback"])
    topology = _topology({"billing": {"weight": 0.2}})
    shown = format_report([build_report(topology, "billing", [], {"billing": later})], 60)
    assert "last rollback: " in shown and "candidate abc123: completion 0% < 85%; p95 900 ms" in shown
    assert "last rollback" not in format_report([build_report(topology, "billing", [], {})], 60)
