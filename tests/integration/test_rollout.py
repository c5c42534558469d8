"""Rolling out a candidate version on the real broker with real worker processes: a canary's
sticky split, its automatic rollback when it breaks, and a shadow run that reaches nobody."""

from __future__ import annotations

import math
import re
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from agentstream.client import new_task
from agentstream.events import ROLLOUT_CONTROL, SPECIALIST_RESULT, TASK_EVENT
from agentstream.rollout.split import takes_candidate
from agentstream.serde import SchemaSet
from agentstream.settings import SCRIPTED_FAILURE_RATE_ENV
from tests import support_desk

from .apps.refund_ledger import LEDGER_ENV
from .cli import cli_env, run
from .harness import read_all, wait_for
from .test_durable import DurableStack

SCHEMAS = SchemaSet.load()
LEDGER_TOOLS = Path(__file__).with_name("apps") / "refund_ledger.py"
CANDIDATE_PROMPT = "You are the billing agent, version 2: answer in one short paragraph."
LIVE_WORKERS = {"router": ["router"], "billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]}


def _app(tmp_path: Path, candidate: dict[str, Any], **billing: Any) -> Path:
    """The support desk with a candidate on billing (its own prompt, so its own behaviour
    version) and one quick retry tier, so a failing task ends within seconds."""
    topology = yaml.safe_load((support_desk.APP / "topology.yaml").read_text())
    (tmp_path / "app" / "prompts").mkdir(parents=True)
    (tmp_path / "app" / "prompts" / "billing_v2.md").write_text(CANDIDATE_PROMPT)
    model = {"models": {"standard": "scripted:default"}, "system_prompt_file": "prompts/billing_v2.md",
             "scripted": topology["agents"]["billing"]["model"]["scripted"]}
    topology["agents"]["billing"].update(billing)
    topology["agents"]["billing"]["candidate"] = {"model": model, **candidate}
    topology["retry"] = {"delays_s": [1], "max_attempts": 2}
    path = support_desk.copy_app(tmp_path / "app")
    path.write_text(yaml.safe_dump(topology))
    return path


def _records(stack: DurableStack, logical: str, schema: str) -> list[dict[str, Any]]:
    return [SCHEMAS.decode_as(schema, value) for _, value, _ in read_all(stack.bootstrap, stack.topology.topic(logical)) if value]


def _cli(stack: DurableStack, *args: str) -> str:
    env = cli_env(KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap, AGENTSTREAM_PREFIX=stack.prefix,
                  AGENTSTREAM_TOPOLOGY=str(stack.topology_path))
    done = run("rollout", *args, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _tasks(sessions: list[str], turn: int, text: str = "Please check invoice INV-1001") -> list[dict[str, Any]]:
    return [new_task(text, session, "it", task_id=f"{session}-t{turn}", requested_agent="billing") for session in sessions]


def test_a_canary_at_20_percent_gets_about_a_fifth_of_the_sessions_each_whole(bootstrap: str, tmp_path: Path) -> None:
    stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_app(tmp_path, {"mode": "canary", "weight": 0.2}))
    try:
        stack.start_all({**LIVE_WORKERS, "billing.candidate": ["specialist", "--type", "billing.candidate"]})
        run_id = uuid.uuid4().hex[:6]
        sessions = [f"s-{run_id}-{n}" for n in range(150)]
        tasks = _tasks(sessions, 1) + _tasks(sessions, 2)  # the second of a session goes once the first has its result
        stack.submit(tasks)
        results = stack.results({t["task_id"] for t in tasks}, timeout=240)
        assert all(len(found) == 1 and found[0]["status"] == "COMPLETED" for found in results.values())
        ran = [r for r in _records(stack, "supervisor", SPECIALIST_RESULT) if r["session_id"] in set(sessions)]
        variants: dict[str, set[str | None]] = defaultdict(set)
        for record in ran:
            variants[record["session_id"]].add(record["variant"])
        assert all(len(found) == 1 for found in variants.values()), "a session's tasks ran on two versions"
        on_candidate = {s for s, found in variants.items() if found == {"candidate"}}
        # Binomial(150, 0.2): mean 30, sd sqrt(150*0.2*0.8) = 4.9; 4.5 sd either side fails a fair split with p < 1e-5.
        sd = math.sqrt(150 * 0.2 * 0.8)
        assert 30 - 4.5 * sd < len(on_candidate) < 30 + 4.5 * sd, len(on_candidate)
        assert on_candidate == {s for s in sessions if takes_candidate("billing", s, 0.2)}  # the router's hash, exactly
        versions = {r["variant"]: r["behavior_version"] for r in ran}
        assert versions["candidate"] != versions[None]  # its own prompt: its own behaviour version
        for task_id, (result,) in results.items():
            session = task_id.rsplit("-t", 1)[0]
            assert result["behavior_versions"]["billing"] == versions["candidate" if session in on_candidate else None]
        # An operator's new weight reaches the running router: at 1 every session's next task goes to the candidate.
        assert "billing: canary weight 1" in _cli(stack, "set-weight", "billing", "1", "--reason", "all in", "--who", "ops")
        stack.workers["router"].wait_for_line(r"rollout: billing canary weight is now 1 \(all in, by ops\)", 60)
        third = _tasks(sessions[:20], 3)
        stack.submit(third)
        stack.results({t["task_id"] for t in third}, timeout=120)
        ran_third = {r["task_id"]: r["variant"] for r in _records(stack, "supervisor", SPECIALIST_RESULT)}
        assert {ran_third[t["task_id"]] for t in third} == {"candidate"}
    finally:
        stack.stop_all()


def test_a_broken_canary_is_rolled_back_by_its_rule_and_its_sessions_go_back_to_live(bootstrap: str, tmp_path: Path) -> None:
    candidate = {"mode": "canary", "weight": 0.5, "controls": {"retry": {"max_attempts": 1}},
                 "rollback": {"min_completion": 0.85, "min_tasks": 5}}
    stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_app(tmp_path, candidate))
    try:
        stack.start_all({**LIVE_WORKERS})
        broken = stack.start("billing.candidate", "specialist", "--type", "billing.candidate",
                             env={SCRIPTED_FAILURE_RATE_ENV: "1"})  # every call of its model fails with a 500
        broken.wait_for_line(r": assigned ", 60)
        watcher = stack.run("watch", "rollout", "watch", "--interval", "1", "--window", "600")
        watcher.wait_for_line(r"rollout watch: judging the canaries of \['billing'\]", 60)
        run_id = uuid.uuid4().hex[:6]
        sessions = [f"s-{run_id}-{n}" for n in range(40)]
        canaried = [s for s in sessions if takes_candidate("billing", s, 0.5)]
        first = _tasks(sessions, 1)
        stack.submit(first)
        line = watcher.wait_for_line(r"rollout: billing candidate \w+ set to weight 0, rolled back: completion 0% < 85%", 120)
        stack.workers["router"].wait_for_line(r"rollout: billing canary weight is now 0 \(rolled back: completion", 60)
        results = stack.results({t["task_id"] for t in first}, timeout=120)
        failed = {t["session_id"] for t in first if results[t["task_id"]][-1]["status"] == "FAILED"}
        assert failed == set(canaried), "exactly the canary's sessions failed"
        (control,) = [c for c in _records(stack, "rollout", ROLLOUT_CONTROL) if c["agent_type"] == "billing"]
        assert (control["weight"], control["set_by"]) == (0.0, "rollout-watch") and control["reason"] in line
        broke = control["last_rollback"]["breaches"][0]  # the rule, as data beside the words
        assert (broke["rule"], broke["value"], broke["limit"]) == ("min_completion", 0.0, 0.85)
        second = _tasks(canaried, 2)
        stack.submit(second)
        again = stack.results({t["task_id"] for t in second}, timeout=120)
        assert all(again[t["task_id"]][-1]["status"] == "COMPLETED" for t in second)
        ran = {r["task_id"]: r["variant"] for r in _records(stack, "supervisor", SPECIALIST_RESULT)}
        assert {ran[t["task_id"]] for t in second} == {None}, "after the rollback the canary's sessions run on live"
        shown = _cli(stack, "report", "--agent", "billing", "--window", "600")
        assert "billing (canary, weight 0; set by rollout-watch at" in shown and "rolled back: completion 0%" in shown
        assert re.search(rf"last rollback: [-\d: ]+ UTC, candidate {control['candidate_version']}: completion 0% < 85%", shown), shown
        assert any(row.split()[:1] == ["candidate"] and " 0% " in row for row in shown.splitlines()), shown
        watcher.terminate()
        assert watcher.wait(30) == 0, watcher.tail()  # SIGTERM stops the watcher cleanly
    finally:
        stack.stop_all()


def test_a_shadow_run_reaches_nobody_and_answers_side_effecting_calls_from_the_live_run(bootstrap: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    billing = {"tools_modules": [str(LEDGER_TOOLS)],
               "tools": ["lookup_invoice", "lookup_order", "search_kb", "refund_invoice", "refund_payment"]}
    # The candidate also voids the payment it refunds: a side-effecting call the live run never makes.
    path = _app(tmp_path, {"mode": "shadow", "weight": 1.0, "tools": [*billing["tools"], "void_payment"]}, **billing)
    topology = yaml.safe_load(path.read_text())
    refund = {"find": r"\brefund payment (INV-\d+)", "call": "refund_payment", "argument": "invoice_id", "case": "upper"}
    void = {**refund, "call": "void_payment"}
    live_model, candidate_model = topology["agents"]["billing"]["model"], topology["agents"]["billing"]["candidate"]["model"]
    candidate_model["scripted"] = [refund, void, *candidate_model["scripted"]]
    live_model["scripted"] = [refund, *live_model["scripted"]]
    path.write_text(yaml.safe_dump(topology))
    stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=path, env={LEDGER_ENV: str(ledger)})
    try:
        stack.start_all({**LIVE_WORKERS, "billing.shadow": ["specialist", "--type", "billing.shadow"]})
        run_id = uuid.uuid4().hex[:6]
        refunds = [new_task(f"Please refund payment INV-100{n}", f"s-{run_id}-r{n}", "it", task_id=f"r-{run_id}-{n}",
                            requested_agent="billing") for n in (1, 2, 3)]
        lookups = _tasks([f"s-{run_id}-l{n}" for n in range(3)], 1)
        tasks = refunds + lookups
        stack.submit(tasks)
        results = stack.results({t["task_id"] for t in tasks}, timeout=120)
        wanted = {t["task_id"] for t in tasks}

        def shadowed() -> list[dict[str, Any]]:
            return [r for r in _records(stack, "shadow_results", SPECIALIST_RESULT) if r["task_id"] in wanted]

        wait_for(lambda: len(shadowed()) == len(tasks), 60, "a shadow result of every task")
        shadow = {r["task_id"]: r for r in shadowed()}
        assert {r["variant"] for r in shadow.values()} == {"shadow"}
        assert all(len(found) == 1 for found in results.values())  # one result each, the live run's
        live = {r["task_id"]: r for r in _records(stack, "supervisor", SPECIALIST_RESULT) if r["task_id"] in wanted}
        assert {r["variant"] for r in live.values()} == {None}  # nothing of the shadow reached the supervisor
        shadow_version = next(iter(shadow.values()))["behavior_version"]
        assert shadow_version != next(iter(live.values()))["behavior_version"]
        assert all(found[0]["behavior_versions"]["billing"] != shadow_version for found in results.values())
        stages = {e["stage"] for e in _records(stack, "task_events", TASK_EVENT) if e["task_id"] in wanted}
        assert "billing" in stages and not any("shadow" in stage for stage in stages)
        # The live runs' refunds, and no other: the shadow ran neither refund_payment nor void_payment.
        assert sorted(line.split()[1:] for line in ledger.read_text().splitlines()) == [
            ["refund", f"INV-100{n}"] for n in (1, 2, 3)]
        for n, task in enumerate(refunds, start=1):
            ran = shadow[task["task_id"]]
            assert "refund_payment" in live[task["task_id"]]["tools_used"]
            assert ran["dry_run"] == [
                "refund_payment: answered from the live run's recorded result",
                f'void_payment: refused: the live run made no void_payment call with these arguments ({{"invoice_id": "INV-100{n}"}})']
            # The live run's recorded result reached the shadow's model: the scripted reply quotes it.
            assert ran["tool_errors"] == 1 and f"refund done for INV-100{n}" in (ran["output"] or "")
        assert all(shadow[t["task_id"]]["dry_run"] == [] for t in lookups)
        assert all(r["dry_run"] is None for r in live.values())
        shown = _cli(stack, "report", "--window", "600")
        (row,) = [row for row in shown.splitlines() if row.split()[:1] == ["shadow"]]
        assert row.endswith("50% of 6"), shown  # the lookups agree; the refunds, with the void refused, do not
    finally:
        stack.stop_all()
