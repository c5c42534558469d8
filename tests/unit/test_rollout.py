"""The pure parts of a rollout: the sticky split, the statistics and rollback rules, the
candidate section of the topology and the dry-run tools of a shadow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from agentstream.errors import ConfigurationError
from agentstream.rollout.config import RollbackRules
from agentstream.rollout.control import control_record
from agentstream.rollout.dry_run import LIVE_RESULTS, DryRunTools, LiveAnswers, answering, shadow_task, side_effecting
from agentstream.rollout.report import build_report, format_report
from agentstream.rollout.rules import agreement, breach, by_variant, percentile, same_answer, stats
from agentstream.rollout.shadow import mirrors
from agentstream.rollout.split import session_bucket, takes_candidate
from agentstream.tools.registry import ToolRegistry, ToolResult, tool
from agentstream.topology import DEFAULT_PATH, Topology, parse_topology

ROLLOUT_TOPICS = {
    "rollout": {"suffix": "rollout.v1", "per_session": False, "partitions": 1, "cleanup.policy": "compact"},
    "shadow_results": {"suffix": "shadow-results.v1"},
}


def _topology(candidates: dict[str, dict[str, Any]], topics: dict[str, Any] | None = None) -> Topology:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    for logical in ROLLOUT_TOPICS:  # the support desk declares them; a test may leave them out
        raw["topics"].pop(logical, None)
    raw["topics"].update(ROLLOUT_TOPICS if topics is None else topics)
    for agent_type, candidate in candidates.items():
        raw["agents"][agent_type]["candidate"] = candidate
    return parse_topology(yaml.safe_dump(raw), DEFAULT_PATH)


def _result(variant: str | None, task: int, *, status: str = "COMPLETED", ms: int = 100, cost: float = 0.01,
            tool_calls: int = 1, tool_errors: int = 0, output: str = "ok", at: int = 1_000) -> dict[str, Any]:
    return {"task_id": f"t{task}", "agent_type": "billing", "variant": variant, "status": status, "output": output,
            "started_at": at, "finished_at": at + ms, "behavior_version": variant or "live",
            "usage": {"cost_usd": cost, "tool_calls": tool_calls, "llm_calls": 2}, "steps": 2, "tool_errors": tool_errors}


# -- the split -----------------------------------------------------------------------------
def test_a_session_bucket_is_stable_and_depends_on_the_agent_type() -> None:
    assert session_bucket("billing", "s-1") == session_bucket("billing", "s-1")
    assert session_bucket("billing", "s-1") != session_bucket("technical", "s-1")
    assert 0 <= session_bucket("billing", "s-1") < 1


def test_raising_the_weight_only_adds_sessions_and_zero_takes_none() -> None:
    sessions = [f"s-{n}" for n in range(2000)]
    at = {w: {s for s in sessions if takes_candidate("billing", s, w)} for w in (0.0, 0.1, 0.2, 0.5, 1.0)}
    assert at[0.0] == set() and at[1.0] == set(sessions)
    assert at[0.1] <= at[0.2] <= at[0.5]
    # 2000 draws at p=0.2: mean 400, sd 17.9; 5 sd either side is a bound a fair hash misses with p < 1e-6.
    assert 310 < len(at[0.2]) < 490


# -- statistics and rules ----------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.95) == 0
    assert percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert percentile(list(range(1, 101)), 0.95) == 95


def test_stats_of_one_version() -> None:
    found = stats([_result("candidate", 1, ms=100, tool_calls=2, tool_errors=1),
                   _result("candidate", 2, ms=300, status="FAILED", cost=0.03, tool_calls=2)])
    assert (found.tasks, found.completion, found.p50_ms, found.p95_ms) == (2, 0.5, 100, 300)
    assert found.cost_per_task == pytest.approx(0.02) and found.tool_error_rate == 0.25 and found.steps == 2


RULES = RollbackRules(min_completion=0.85, max_p95_ratio=2, max_cost_ratio=1.5, max_error_rate=0.05, min_tasks=4)
LIVE = stats([_result(None, n) for n in range(10)])


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, None),
    ({"status": "FAILED"}, "completion 0% < 85%"),
    ({"ms": 201}, "p95 201 ms is 2.0x live's 100 ms > 2x"),
    ({"cost": 0.016}, "cost per task $0.016000 is 1.6x live's > 1.5x"),
    ({"tool_errors": 1, "tool_calls": 10}, "tool error rate 10.0% > 5.0%"),
])
def test_each_rule_breaches_alone(changes: dict[str, Any], expected: str | None) -> None:
    said = breach(RULES, LIVE, stats([_result("candidate", n, **changes) for n in range(4)]))
    assert said == (None if expected is None else f"{expected} over 4 tasks")


def test_nothing_is_judged_below_min_tasks_and_ratios_need_live_results() -> None:
    failing = stats([_result("candidate", n, status="FAILED", ms=900) for n in range(3)])
    assert breach(RULES, LIVE, failing) is None
    slow = stats([_result("candidate", n, ms=900) for n in range(4)])
    assert breach(RULES, stats([]), slow) is None


def test_agreement_compares_answers_of_the_same_tasks() -> None:
    assert same_answer("Refund  issued\n", "refund issued") and not same_answer("EUR 10", "EUR 12")
    live = [_result(None, n, output=f"answer {n}") for n in range(4)]
    shadow = [_result("shadow", n, output=f"ANSWER {n}" if n < 3 else "other") for n in range(2, 6)]
    assert agreement(live, shadow) == (0.5, 2)
    assert agreement(live, []) == (None, 0)


def test_the_report_judges_a_canary_only_since_its_weight_was_last_set() -> None:
    topology = _topology({"billing": {"weight": 0.2, "rollback": {"min_tasks": 4}}})
    records = [_result(None, n) for n in range(10)] + [_result("candidate", n, status="FAILED", at=1_000) for n in range(4)]
    assert "completion 0%" in (build_report(topology, "billing", records, {}).breach or "")
    control = {**control_record("billing", 0.3, "try again", "ops"), "at": 5_000}
    report = build_report(topology, "billing", records, {"billing": control})
    assert report.breach is None and report.weight == 0.3
    shown = format_report([report], 60)
    assert "billing (canary, weight 0.3; set by ops at" in shown and "try again" in shown
    assert "candidate" in shown and "live" in shown
    rolled_back = {**control_record("billing", 0.0, "rolled back", "rollout-watch"), "at": 500}
    assert build_report(topology, "billing", records, {"billing": rolled_back}).breach is None  # nothing left to roll back


def test_a_weight_outside_0_1_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="weight 1.5 is not a share"):
        control_record("billing", 1.5, "", "ops")


# -- the topology ------------------------------------------------------------------------------
def test_a_canary_has_its_own_topic_group_and_settings() -> None:
    topology = _topology({"billing": {"weight": 0.2, "max_steps": 3, "tools": ["lookup_invoice", "refund_invoice"],
                                      "model": {"models": {"standard": "scripted:default"}}}})
    canary = topology.agent("billing.candidate")
    assert topology.candidate_topic("billing") == "agents.specialist.billing.v1.candidate"
    assert topology.group("billing.candidate") == "agents.specialist.billing.candidate"
    assert (canary.max_steps, canary.tools, list(canary.approvals)) == (3, ("lookup_invoice", "refund_invoice"), ["refund_invoice"])
    assert topology.live_of("billing.candidate") == ("billing", "canary") and topology.live_of("billing") == ("billing", None)
    names = {spec.name for spec in topology.all_topics()}
    assert {"agents.specialist.billing.v1.candidate.retry-1", "agents.specialist.billing.candidate.checkpoints.changelog"} <= names
    assert sorted(topology.specialist_types) == ["account", "billing", "technical"]  # the router routes to types, not versions
    # A revision goes back to the version that ran the task.
    assert topology.version_topic("billing", "candidate") == "agents.specialist.billing.v1.candidate"
    assert topology.version_topic("billing", None) == "agents.specialist.billing.v1"
    assert topology.version_topic("technical", "candidate") == "agents.specialist.technical.v1"  # no canary (any more)


def test_a_shadow_reads_the_transcripts_in_its_own_group_and_asks_no_human() -> None:
    topology = _topology({"billing": {"mode": "shadow", "weight": 1}})
    shadow = topology.agent("billing.shadow")
    assert shadow.input == "transcripts" and shadow.approvals == {}
    assert topology.group("billing.shadow") == "agents.specialist.billing.shadow"
    # A failed shadow run is not retried: the transcripts get no retry tiers.
    assert not [spec.name for spec in topology.all_topics() if spec.name.startswith("agents.transcripts.v1.retry")]
    assert "agents.specialist.billing.shadow.checkpoints.changelog" in {spec.name for spec in topology.all_topics()}


def test_a_candidate_needs_the_rollout_topics_and_valid_settings() -> None:
    with pytest.raises(ConfigurationError, match=r"needs the topics \['rollout', 'shadow_results'\]"):
        _topology({"billing": {"mode": "shadow"}}, topics={})
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["topics"].pop("transcripts")
    raw["agents"]["billing"]["candidate"] = {"mode": "shadow"}
    with pytest.raises(ConfigurationError, match=r"needs the topics \['transcripts'\]"):
        parse_topology(yaml.safe_dump(raw), DEFAULT_PATH)
    with pytest.raises(ConfigurationError, match="weight"):
        _topology({"billing": {"weight": 2}})
    with pytest.raises(ConfigurationError, match="not in the agent's tools"):
        _topology({"billing": {"tools": ["search_kb"]}})  # billing's scripted rules call lookup_invoice
    with pytest.raises(ConfigurationError, match="unknown key 'wieght'"):
        _topology({"billing": {"wieght": 0.2}})


# -- dry run -----------------------------------------------------------------------------------
@tool(side_effects=True)
def pay(invoice_id: str) -> str:
    """Pay an invoice.

    Args:
        invoice_id: The invoice.
    """
    raise AssertionError("a dry run called a side-effecting tool")


@tool
def look(invoice_id: str) -> str:
    """Look an invoice up.

    Args:
        invoice_id: The invoice.
    """
    return f"found {invoice_id}"


@tool
def mail(to: str) -> str:
    """Send mail (held for approval in the topology).

    Args:
        to: The address.
    """
    raise AssertionError("a dry run called a tool held for approval")


def _live_steps() -> list[dict[str, Any]]:
    """A live run's transcript steps: one model step calling pay and look, their results."""
    calls = [{"id": "c0", "name": "pay", "arguments": {"invoice_id": "INV-1"}},
             {"id": "c1", "name": "look", "arguments": {"invoice_id": "INV-1"}}]
    return [{"kind": "model", "step": 0, "seq": 0, "text": None, "tool_calls": calls},
            {"kind": "tool", "step": 0, "index": 0, "seq": 1, "name": "pay", "ok": True, "content": "paid INV-1"},
            {"kind": "tool", "step": 0, "index": 1, "seq": 2, "name": "look", "ok": True, "content": "found INV-1"}]


def test_a_dry_run_answers_side_effecting_calls_from_the_live_run_and_refuses_the_others() -> None:
    registry = ToolRegistry([pay, look, mail])
    refused = side_effecting(registry, ["pay", "look", "mail"], held=["mail"])
    assert refused == ["mail", "pay"]
    dry = DryRunTools(registry, refused)
    assert dry.schemas(["pay", "look", "mail"]) == registry.schemas(["pay", "look", "mail"])
    task = shadow_task({"task_id": "t", "metadata": {"k": "v"}}, _live_steps(), refused)
    assert task["metadata"]["k"] == "v" and "found INV-1" not in task["metadata"][LIVE_RESULTS]  # only side-effecting results
    calls: list[tuple[str, object]] = [("pay", {"invoice_id": "INV-1"}), ("pay", {"invoice_id": "INV-2"}),
                                       ("look", {"invoice_id": "INV-3"}), ("mail", {"to": "a@b.c"})]

    async def shadow_run() -> tuple[list[ToolResult], list[str]]:
        with answering(LiveAnswers.of_task(task)) as answers:
            return await dry.call_many(calls, 5), answers.notes

    results, notes = asyncio.run(shadow_run())
    assert [(r.ok, r.content) for r in results] == [
        (True, "paid INV-1"),  # the live run's result; pay itself raises if called
        (False, 'Error: dry run: pay has side effects, and a shadow run calls no such tool; the live run made no '
                'pay call with these arguments ({"invoice_id": "INV-2"}).'),
        (True, "found INV-3"),  # read-only: runs for real
        (False, 'Error: dry run: mail has side effects, and a shadow run calls no such tool; the live run made no '
                'mail call with these arguments ({"to": "a@b.c"}).'),
    ]
    assert notes == ["pay: answered from the live run's recorded result",
                     'pay: refused: the live run made no pay call with these arguments ({"invoice_id": "INV-2"})',
                     'mail: refused: the live run made no mail call with these arguments ({"to": "a@b.c"})']
    # Outside a shadow run (no live record with the task): refused, saying so.
    (alone,) = asyncio.run(dry.call_many([("pay", {"invoice_id": "INV-1"})], 5))
    assert not alone.ok and alone.content.endswith("no record of the live run came with the task.")


def test_a_shadow_mirrors_the_live_runs_of_its_type_in_sampled_sessions_only() -> None:
    live = {"agent_type": "billing", "variant": None, "session_id": "s-1", "status": "COMPLETED", "error": None}
    assert mirrors(live, "billing", 1.0)
    assert not mirrors({**live, "variant": "candidate"}, "billing", 1.0)  # a canary's run is no live run
    assert not mirrors({**live, "agent_type": "account"}, "billing", 1.0)
    assert not mirrors(live, "billing", 0.0)
    assert not mirrors({**live, "status": "FAILED", "error": {"code": "CANCELED", "message": "x"}}, "billing", 1.0)


def test_a_canary_is_a_worker_of_its_own_in_the_deploy_files_scaled_on_its_own_topic() -> None:
    from agentstream.deploy.workers import workers

    topology = _topology({"billing": {"weight": 0.2}})
    (canary,) = [w for w in workers(topology) if w.agent == "billing.candidate"]
    assert (canary.name, canary.group, canary.input_topic) == (
        "specialist-billing-candidate", "agents.specialist.billing.candidate", "agents.specialist.billing.v1.candidate")
    assert canary.command == ["worker", "specialist", "--type", "billing.candidate"]


def test_canceled_runs_are_left_out_of_a_versions_figures() -> None:
    # A person stopped them: three canceled canary runs must not read as a 25 % completion.
    canceled = [{**_result("candidate", n, status="FAILED"), "error": {"code": "CANCELED", "message": "canceled by bob"}}
                for n in range(3)]
    grouped = by_variant([_result("candidate", 9), *canceled], "billing")
    assert [r["task_id"] for r in grouped["candidate"]] == ["t9"]
    assert stats(grouped["candidate"]).completion == 1.0
