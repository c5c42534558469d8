"""Tiny runs of the benchmarks in bench/ (a checkout's package, not installed): they start,
measure, name their broker and write their JSON report. Figures are not checked."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentstream.apache_kafka import java_and_maven_present
from agentstream.broker import KAFKA, TANSU, broker_to_start
from agentstream.settings import BOOTSTRAP_ENV, BROKER_ENV, GROUP_PROTOCOL_ENV

REPO = Path(__file__).resolve().parents[2]


def this_pass_broker() -> str:
    """The kind of broker this run of the suite starts (tests/conftest.py's choice). The
    benchmarks that start their own broker start that kind: CI's two passes cover both
    without starting (and measuring for a minute) a Tansu in the Apache Kafka pass too."""
    return broker_to_start(KAFKA if java_and_maven_present() else TANSU)


def run_bench(module: str, *args: str, bootstrap: str | None = None, timeout: float = 300) -> dict[str, Any]:
    """Run ``python -m bench.<module> args``; return its JSON report (removed afterwards)."""
    env = {k: v for k, v in os.environ.items() if k not in (BOOTSTRAP_ENV, BROKER_ENV, GROUP_PROTOCOL_ENV)}
    if bootstrap:
        env[BOOTSTRAP_ENV] = bootstrap
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    found = re.search(r"^wrote (bench/out/\S+\.json)", done.stdout, re.MULTILINE)
    assert found, output[-4000:]
    path = REPO / found.group(1)
    try:
        return dict(json.loads(path.read_text()))
    finally:
        path.unlink(missing_ok=True)
        path.with_suffix(".png").unlink(missing_ok=True)  # the plot some benchmarks draw beside it


def test_relay_on_the_broker_it_starts() -> None:
    broker = this_pass_broker()
    report = run_bench("relay", "--broker", broker, "--events", "300", "--trials", "1", "--quiet-wait", "0")
    assert report["broker_kind"] == broker
    assert {t["variant"] for t in report["trials"]} == {"raw", "runtime"}
    for trial in report["trials"]:
        assert trial["error"] is None and trial["received"] == 300
        assert "broker" in trial["cpu_s"]  # the broker's pid (Kafka: the JVM) is metered
        if broker == "kafka":  # Tansu may relay 300 events in under a clock tick (10 ms) of CPU
            assert trial["cpu_s"]["broker"] > 0


@pytest.mark.kafka_only
def test_group_protocol_compares_both_protocols(kafka_bootstrap: str) -> None:
    report = run_bench("group_protocol", "--trials", "1", "--scenarios", "scaleup", "--quiet-wait", "0",
                       bootstrap=kafka_bootstrap)
    trials = {t["protocol"]: t for t in report["trials"]}
    assert set(trials) == {"classic", "consumer"}
    for protocol, trial in trials.items():
        assert not trial["errors"], trial["errors"]
        assert math.isfinite(trial["scaleup_assigned_s"]) and math.isfinite(trial["incumbent_pause_s"])
        assert trial["co_partitioned"] is True
        assert trial["group_types"][0].startswith(protocol)
    # Eager classic takes everything back from the incumbent; KIP-848 only what moves.
    assert trials["classic"]["incumbent_revoked"] == 12
    assert trials["consumer"]["incumbent_revoked"] == 6


@pytest.mark.kafka_only
@pytest.mark.slow
def test_recovery_with_kip848_workers(kafka_bootstrap: str) -> None:
    report = run_bench("recovery", "--quick", "--tasks", "4", "--latency", "0.5", "--group-protocol", "consumer",
                       bootstrap=kafka_bootstrap)
    assert report["group_protocol"] == "consumer"
    (baseline,), (trial,) = report["baseline"], report["trials"]
    assert baseline["error"] is None and trial["error"] is None, (baseline, trial)
    assert trial["group_type"].startswith("consumer")
    assert trial["lost"] == 0 and trial["duplicate_results"] == 0
    assert math.isfinite(trial["to_first_resumed_call_s"])


def test_store_memory_runs_both_variants() -> None:
    report = run_bench("store_memory", "--sessions", "50", "--updates", "600", "--sample-every", "300")
    trials = {t["variant"]: t for t in report["trials"]}
    assert set(trials) == {"per-store-cache", "runtime"}
    for trial in trials.values():
        assert trial["error"] is None, trial["error"]
        assert [update for update, _ in trial["samples"]] == [0, 300, 600]
        assert trial["block_cache_bytes"] > 0  # the churn read through a cache


def test_store_scan_compares_the_bounded_scan_with_the_unbounded_walk() -> None:
    result = run_bench("store_scan", "--runs", "400", "--scans", "400", "--open-every", "100")["result"]
    trials = {t["variant"]: t for t in result["trials"]}
    assert set(trials) == {"bounded", "unbounded"}
    assert result["tombstones"] == 396 * 4
    # Four of the 400 runs stay open, three steps each: both scans find exactly those.
    assert trials["bounded"]["keys_found"] == trials["unbounded"]["keys_found"] == 12
    assert all(t["us_per_scan"] > 0 for t in trials.values())


def test_expiry_schedule_compares_the_paced_schedule_with_the_rules_before() -> None:
    # 2,500 marks a partition: the dedupe walk takes three passes (1,000 keys each); the 20
    # sessions a partition fit in one. Both tables' intervals are 60 s. In 130 s the older
    # rules walk the marks twice (passes at 0-2 s, 62-64 s, 124-126 s: three walks), the
    # paced one walks them once at the commit pace (0-2 s), then a pass a minute (62, 122).
    result = run_bench("expiry_schedule", "--partitions", "2", "--sessions", "20", "--marks", "2500",
                       "--turns", "2", "--seconds", "130")["result"]
    trials = {t["variant"]: t for t in result["trials"]}
    assert set(trials) == {"one schedule", "per table", "paced"}
    assert trials["one schedule"]["decoded"] == {"dedupe": 3 * 5000, "sessions": 9 * 40}
    assert trials["per table"]["decoded"] == {"dedupe": 3 * 5000, "sessions": 3 * 40}
    assert trials["paced"]["decoded"] == {"dedupe": 5000 + 2 * 2000, "sessions": 3 * 40}
    assert all(t["cpu_s"] > 0 for t in trials.values())


def test_waiting_memory_measures_the_idle_and_the_waiting_worker(bootstrap: str) -> None:
    report = run_bench("waiting_memory", "--tasks", "20", "--settle", "1", bootstrap=bootstrap)
    result = report["result"]
    assert result["error"] is None, result["error"]
    assert result["waiting"] == 20 and result["ended"] == 20
    phases = (result["idle_rss"], result["waiting_rss"], result["restarted_rss"], result["decided_rss"])
    assert min(phases) > 0 and result["peak_rss"] >= max(phases)
    assert result["restarted_growth"] == result["restarted_rss"] - result["idle_rss"]


def test_checkpoint_cost_runs_its_specialist_launcher(bootstrap: str) -> None:
    """bench.checkpoint_cost starts its worker through ``python -m bench._procs specialist``
    (an injected model and tools), which other benchmarks use too."""
    report = run_bench("checkpoint_cost", "--quick", "--steps", "2", bootstrap=bootstrap)
    result = report["result"]
    assert result["error"] is None, result["error"]
    assert len(result["per_step_bytes"]) == 2 and result["changelog_records"] > 0


def test_run_cost_measures_this_tree_against_a_revision_in_pairs() -> None:
    """No broker: each round is a process running the billing task in-process; the
    revision is checked out in a worktree that is gone afterwards."""
    worktrees_before = _worktrees()
    report = run_bench("run_cost", "--tasks", "20", "--concurrency", "5", "--rounds", "2", "--against", "HEAD")
    sides = report["sides"]
    assert set(sides) == {"this tree", "HEAD"}
    for side in sides.values():
        assert len(side["us_per_run"]) == 2 and min(side["us_per_run"]) > 0
        assert side["runs"] == 25, "20 runs rounded up to whole batches of 5 in each of the 5 parts"
        assert side["routed_task_bytes"] > 2000, "the task carries the session's 10 remembered turns"
    # Each side ran its own tree's code: the checkout's here, the worktree's for HEAD.
    assert Path(sides["this tree"]["package"]) == REPO / "services" / "agentstream"
    assert Path(sides["HEAD"]["package"]).parts[-2:] == ("services", "agentstream")
    assert not Path(sides["HEAD"]["package"]).is_relative_to(REPO)
    assert sides["this tree"]["ratio_to_against"]["pairs"] == 2
    assert _worktrees() == worktrees_before


def test_run_cost_counts_instructions_per_run_under_cachegrind() -> None:
    report = run_bench("run_cost", "--instructions", "--tasks", "5", "--concurrency", "5")
    side = report["sides"]["this tree"]
    assert side["runs"] == 25, "5 runs rounded up to a batch of 5 in each of the 5 parts"
    first, second = side["instructions"]
    assert second > first > 0, "the round with 25 more runs executed more instructions"
    assert side["instructions_per_run"] == (second - first) / 25
    assert Path(side["package"]) == REPO / "services" / "agentstream"


def _worktrees() -> list[str]:
    listed = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True)
    return [line for line in listed.stdout.splitlines() if line.startswith("worktree ")]


def test_idle_measures_each_fetch_wait_on_the_broker_it_starts() -> None:
    broker = this_pass_broker()
    report = run_bench("idle", "--broker", broker, "--smoke")
    rows = report["rows"]
    assert [(r["broker"], r["fetch_wait_ms"], r["quiet_pause_s"]) for r in rows] == [
        (broker, 0, 0), (broker, 20, 1), (broker, 500, 0)]
    for row in rows[1:]:
        assert row["workers_cores"] > 0 and row["fetches_per_s"] > 0, row
        assert 0 < row["p50_ms"] <= row["p95_ms"], row
        assert row["first_task_ms"] > 0 and row["next_task_ms"] > 0, row  # each task got its result


def _assert_ordered_times(phase: dict[str, Any]) -> None:
    """Each task's first event comes no later than its result, so the medians are ordered too.
    Its submit time comes before its first event only over HTTP (the stream is opened after
    the 202): straight on Kafka the reader thread may see the router's first event before
    the producer's acknowledgement reaches the event loop."""
    assert 0 < phase["submit"]["p50_ms"] and phase["first_event"]["p50_ms"] <= phase["result"]["p50_ms"]
    if phase["path"] == "gateway":
        assert phase["submit"]["p50_ms"] <= phase["first_event"]["p50_ms"]


def test_gateway_load_follows_tasks_over_http_and_straight_on_kafka(bootstrap: str) -> None:
    report = run_bench("gateway_load", "--clients", "3", "--rounds", "2", "--latency", "0", "--ramp", "0.5",
                       bootstrap=bootstrap)
    for phase in (report["baseline"], report["gateway"]):
        assert phase["errors"] == 0 and phase["tasks"] == 6, report["errors"]
        _assert_ordered_times(phase)
    assert report["streams"] == {"streams": 6, "lost": 0, "repeated": 0, "out_of_order": 0, "unseen_on_topic": 0,
                                 "streams_with_faults": 0}
    assert all(sample["events"] > 0 for sample in report["samples"]["gateway"])  # progress came before the result
    assert report["gateway"]["gateway_cpu_ms_per_task"] > 0


def test_scaleout_splits_the_partitions_and_counts_every_process(bootstrap: str) -> None:
    report = run_bench("scaleout", "--processes", "1,2", "--loads", "wait", "--latency", "0.2", "--max-inflight", "8",
                       "--window", "3", "--ramp", "2", "--quiet-wait", "0", "--stop-timeout", "10", bootstrap=bootstrap)
    trials = {t["processes"]: t for t in report["trials"]}
    assert set(trials) == {1, 2}
    for n, trial in trials.items():
        assert trial["error"] is None, trial["error"]
        assert trial["rebalances_in_window"] == 0
        owned = [p["partitions"] for p in trial["per_process"]]
        assert len(owned) == n and sorted(sum(owned, [])) == list(range(trial["partitions"]))  # each partition once
        assert all(p["tasks"] > 0 and p["cores"] > 0 for p in trial["per_process"]), trial["per_process"]
        assert trial["completed_in_window"] > 0
        # After the drain every submitted task has exactly one specialist result and one final result.
        assert trial["specialist_results"] == trial["final_results"] == trial["submitted"]
        assert trial["duplicate_results"] == 0
        assert trial["cpu_ms_per_task"]["specialists"] > 0
    # The figure, not a speed (a 3-s window on a loaded CI machine is no measurement): two
    # processes' tasks/s over twice one's.
    assert trials[2]["scaling"] == pytest.approx(trials[2]["tasks_per_s"] / (2 * trials[1]["tasks_per_s"])), trials[2]
    paper = report["on_paper"]["wait"]
    assert paper["from_processes"] == 2 and paper["tasks_per_s"] > 0


def test_gateway_load_steady_rate_with_watcher_streams(bootstrap: str) -> None:
    """Issue 16's shape at a tiny size: 5 tasks/s for 3 s on a clock, each followed on its
    own SSE stream, while 10 watcher streams stay open all along."""
    report = run_bench("gateway_load", "--rate", "5", "--duration", "3", "--clients", "10", "--latency", "0",
                       bootstrap=bootstrap)
    for phase in (report["baseline"], report["gateway"]):
        assert phase["errors"] == 0 and phase["tasks"] == 15, report["errors"]
        _assert_ordered_times(phase)
        schedule = phase["schedule"]
        assert 0 <= schedule["behind_p50_ms"] <= schedule["behind_max_ms"]
        assert schedule["achieved_per_s"] > 0
    gateway_tasks = report["samples"]["gateway"]
    assert len({sample["task_id"] for sample in gateway_tasks}) == 15  # every task its result (only then a sample)
    assert all(sample["events"] > 0 and sample["repeated"] == 0 for sample in gateway_tasks)
    # 15 task streams and 10 watchers, each against task-events: nothing lost, repeated or out of order.
    assert report["streams"] == {"streams": 25, "lost": 0, "repeated": 0, "out_of_order": 0, "unseen_on_topic": 0,
                                 "streams_with_faults": 0}, report["lacked"]
    # How long after its result each task's last event came, per phase (every task has its result).
    assert all(0 <= report["after_result"][path]["p50_ms"] <= report["after_result"][path]["max_ms"]
               for path in ("kafka", "gateway")), report["after_result"]
    assert report["open_streams"]["min"] >= 10  # the watchers held open the whole phase, by the gateway's count
    assert report["gateway"]["gateway_cpu_ms_per_task"] > 0


def test_pipeline_compares_the_runtime_with_the_raw_and_faust_relays(bootstrap: str) -> None:
    report = run_bench("pipeline", "--quick", "--levels", "20", "--seconds", "1", "--broker-warm-up", "40",
                       "--paced-warm-up", "1", "--quiet-wait", "0", bootstrap=bootstrap, timeout=420)
    levels = {level["variant"]: level for level in report["levels"]}
    assert set(levels) == {"pipeline", "raw", "faust"}
    for name, level in levels.items():
        assert level["error"] is None and level["complete"], level
        assert level["received"] == level["tasks"] and level["duplicates"] == 0, level
        assert report["variants"][name]["broker_warm_up"]["received"] == 40  # not counted in the level
    pipeline = report["variants"]["pipeline"]
    assert levels["pipeline"]["sampled_chains"] > 0
    assert all(levels["pipeline"]["hops_ms"][hop]["p50"] > 0 for hop in ("router", "billing", "supervisor"))
    # Every task writes its checkpoints, events and results: far more records than the relays' 4.
    assert pipeline["records_per_task"]["all topics"] > 10
    assert levels["pipeline"]["cpu_s"]["billing"] > 0
    # Counted by the workers (agentstream_kafka_requests_total): at 20 tasks/s few writes of
    # one task share a request with another's, and a billing task writes its head, steps and result.
    requests = levels["pipeline"]["requests_per_task"]
    assert set(requests) == {"router", "billing", "supervisor", "all"}, requests
    assert requests["billing"]["Produce"] >= 3 and requests["router"]["Fetch"] > 0, requests
    assert report["config"]["request_stats_s"] == 1
    assert pipeline["paced_warm_up"]["received"] == 20  # 1 s at the first level's 20/s, not in the level


def test_pipeline_runs_on_topics_of_the_partitions_asked_for(bootstrap: str) -> None:
    report = run_bench("pipeline", "--quick", "--variants", "pipeline", "--partitions", "2", "--levels", "20",
                       "--seconds", "1", "--broker-warm-up", "40", "--quiet-wait", "0", bootstrap=bootstrap)
    level = report["levels"][-1]  # a level that saturated on a busy machine is tried again: the last one counts
    assert level["error"] is None and level["complete"] and level["received"] == level["tasks"], level
    assert report["variants"]["pipeline"]["partitions"] == 2  # the results topic, as the broker lists it
    assert report["config"]["pipeline_partitions"] == 2


def test_concurrency_keeps_loops_in_flight_and_finishes_tasks(bootstrap: str) -> None:
    report = run_bench("concurrency", "--caps", "8", "--latency", "0.2", "--window", "2", "--ramp", "1",
                       "--quiet-wait", "0", "--stop-timeout", "10", "--broker-warm-up", "1", bootstrap=bootstrap)
    (trial,) = report["trials"]  # the warm-up trial is apart, not among the reported ones
    assert report["broker_warm_up"]["submitted"] > 0 and report["broker_warm_up"]["window_s"] == 1
    assert trial["error"] is None, trial["error"]
    assert trial["inflight_mean"] > 0 and trial["completed_in_window"] > 0 and trial["calls_per_task"] == 2
    assert trial["specialist_cpu_ms_per_task"] > 0
    # The specialist's own histograms over the window: it waited for acknowledged writes.
    # (NaN would mean no observation in the window: the lag timer samples ten times a second.)
    assert trial["acked_write_ms"]["p50"] > 0 and math.isfinite(trial["loop_lag_ms"]["p50"])
    # Its commits (beside its polls), one a second, also while every slot is taken, and their
    # offset commits, during which it takes in no task.
    assert trial["checkpoint_ms"]["p50"] > 0 and 0 < trial["checkpoint_share"] < 1
    assert trial["offset_commit_ms"]["p50"] > 0 and 0 < trial["offset_commit_share"] < 1


def test_restore_reads_every_session_back_into_a_fresh_worker(bootstrap: str) -> None:
    report = run_bench("restore", "--sessions", "200", "--quiet-wait", "0", bootstrap=bootstrap)
    (result,) = report["results"]
    assert result["error"] is None, result["error"]
    assert result["sessions"] == 200 and result["restored_keys"] == 200 and result["restored_records"] == 200
    assert all(read.get("records", 0) >= 200 for read in result["raw"])
