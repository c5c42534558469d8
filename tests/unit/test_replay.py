"""Transcripts and replay without a broker: the Transcript record, the divergence finder,
the recorded model and tools, and exact and other-version replays of an in-process run."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentstream.errors import ConfigurationError
from agentstream.models import Message
from agentstream.serde import SchemaSet
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.app import build_agent
from agentstream.specialist.inprocess import InProcessRun, eval_task, run_in_process, version_worker
from agentstream.tools.registry import ToolResult
from agentstream.transcripts.divergence import first_divergence
from agentstream.transcripts.record import TRANSCRIPT, ordered_steps, steps_of, task_of, transcript
from agentstream.topology import DEFAULT_PATH, parse_topology
from agentstream.transcripts.read import TranscriptNotFound, find_transcript, pick, runs_of
from agentstream.transcripts.recorded import OffTheRecord, RecordedModel, RecordedTools, call_key
from agentstream.transcripts.replay import replay, report
from tests import support_desk

TEXT = "I was charged twice for invoice INV-1002 on order 5002."


def _model(step: int, text: str | None, calls: Sequence[tuple[str, dict[str, Any]]] = (), seq: int = 0) -> dict[str, Any]:
    return {"kind": "model", "step": step, "seq": seq, "epoch": 0, "text": text, "model": "scripted:default",
            "usage": {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0},
            "tool_calls": [{"id": f"c{step}_{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(calls)]}


def _tool(step: int, index: int, name: str, content: str, seq: int = 0) -> dict[str, Any]:
    return {"kind": "tool", "step": step, "index": index, "seq": seq, "epoch": 0, "name": name, "ok": True, "content": content}


def _recorded_run() -> tuple[dict[str, Any], InProcessRun, dict[str, Any]]:
    agent = build_agent("billing", support_desk.topology())
    task = eval_task("t1", TEXT, "billing")
    run = asyncio.run(run_in_process(agent, task))
    return task, run, transcript(task, agent.result(task, run.outcome, 1), [[0, 0]], run.steps, 2)


# -- the divergence finder ------------------------------------------------------------

def test_the_same_steps_do_not_diverge_whatever_their_timing_or_call_ids() -> None:
    mine = [_model(0, None, [("lookup", {"id": 1})]), _tool(0, 0, "lookup", "x"), _model(1, "done")]
    theirs = [{**step, "at": 5, "latency_ms": 9} for step in mine]
    theirs[0] = {**theirs[0], "tool_calls": [{"id": "other", "name": "lookup", "arguments": {"id": 1}}]}
    assert first_divergence(mine, theirs) is None


def test_the_first_differing_step_is_found_with_both_sides() -> None:
    mine = [_model(0, None, [("lookup", {"id": 1})]), _tool(0, 0, "lookup", "x"), _model(1, "done")]
    theirs = [mine[0], _tool(0, 0, "lookup", "y"), _model(1, "other")]
    found = first_divergence(mine, theirs)
    assert found is not None and found.position == 1
    assert (found.recorded or {})["content"] == "x" and (found.replayed or {})["content"] == "y"
    described = found.describe()
    assert "runs diverge at step 2 (content differ)" in described and '"content": "y"' in described


def test_a_run_that_ends_earlier_diverges_where_the_other_goes_on() -> None:
    mine = [_model(0, None, [("lookup", {"id": 1})]), _tool(0, 0, "lookup", "x"), _model(1, "done")]
    found = first_divergence(mine, mine[:1])
    assert found is not None and found.position == 1 and found.replayed is None
    assert "(no step: this run had ended)" in found.describe()
    other_arguments = [_model(0, None, [("lookup", {"id": 2})])]
    assert (first_divergence(mine, other_arguments) or pytest.fail("no divergence")).position == 0


# -- the record ----------------------------------------------------------------------

def test_a_transcript_encodes_as_its_schema_and_keeps_the_steps_in_order() -> None:
    task, run, record = _recorded_run()
    schemas = SchemaSet.load()
    name, decoded = schemas.decode(schemas.encode(TRANSCRIPT, record))
    assert name == TRANSCRIPT and decoded["run_id"] == task["task_id"] and decoded["output"] == run.outcome.output
    assert steps_of(decoded) == run.steps and task_of(decoded)["input"] == TEXT
    assert [s["kind"] for s in run.steps] == ["model", "tool", "tool", "tool", "model"]
    first = run.steps[0]
    assert first["request"]["messages"] == 2 and first["request"]["newest"] == {"role": "user", "content": TEXT}
    assert isinstance(first["at"], int) and first["latency_ms"] >= 0


def test_ordered_steps_follow_the_sequence_across_owners_and_drop_a_zombies_late_step() -> None:
    epochs = [[0, 0], [1, 2]]
    records = [_model(0, None, [("a", {})], seq=0), _tool(0, 0, "a", "x", seq=1),
               {**_model(1, "late", seq=2), "epoch": 0},  # written by the first owner after it lost the task
               {**_model(1, "done", seq=2), "epoch": 1}]
    assert [s.get("text") for s in ordered_steps(epochs, records)] == [None, None, "done"]


def test_readers_keep_one_transcript_per_run_and_pick_the_agents_latest_revision() -> None:
    base = {"task_id": "t", "agent_type": "billing", "revision": 0, "run_id": "t"}
    records = [base, {**base, "output": "again"}, {**base, "revision": 1, "run_id": "t#rev1"},
               {**base, "agent_type": "account", "run_id": "t"}]
    runs = runs_of(records[:3], "t")
    assert len(runs) == 2 and runs["t"]["output"] == "again"
    assert pick(runs, "t", None)["run_id"] == "t#rev1"
    with pytest.raises(TranscriptNotFound, match="by 'technical'; it has transcripts by"):
        pick(runs, "t", "technical")
    with pytest.raises(TranscriptNotFound, match="choose one with --agent"):
        pick({"a": records[0], "b": {**records[3], "run_id": "b"}}, "t", None)


# -- the recorded model and tools ------------------------------------------------------

def test_recorded_tools_answer_the_same_call_and_refuse_any_other() -> None:
    steps = [_model(0, None, [("lookup", {"id": 1, "x": "a"}), ("lookup", {"id": 1, "x": "a"})]),
             _tool(0, 0, "lookup", "first"), _tool(0, 1, "lookup", "second")]
    tools = RecordedTools(support_desk.registry(), steps)

    async def calls() -> list[ToolResult]:
        same = {"x": "a", "id": 1}  # key order does not matter
        return [await tools.call("lookup", same), await tools.call("lookup", same), await tools.call("lookup", same),
                await tools.call("lookup", {"id": 2})]

    first, second, third, other = asyncio.run(calls())
    assert (first.content, second.content, third.content) == ("first", "second", "second")
    assert not other.ok and "was not called in the recorded run" in other.content
    assert tools.refused == [call_key("lookup", {"id": 2})]
    assert sorted(tools.names()) == sorted(support_desk.registry().names())


def test_the_recorded_model_replies_in_order_and_says_when_the_record_ends() -> None:
    model = RecordedModel([_model(1, "second"), _model(0, "first")])
    messages = [Message("user", "hi")]
    assert asyncio.run(model.complete(messages, [])).text == "first"
    assert asyncio.run(model.complete(messages, [])).text == "second"
    with pytest.raises(OffTheRecord, match="model reply 3; the transcript has 2"):
        asyncio.run(model.complete(messages, []))


# -- replays ---------------------------------------------------------------------------

def test_an_exact_replay_reproduces_the_answer_byte_for_byte() -> None:
    _, run, record = _recorded_run()
    done = asyncio.run(replay(record, support_desk.topology()))
    assert done.rerun.outcome.output == run.outcome.output and done.divergence is None and done.reproduced
    out = io.StringIO()
    assert report(done, out) == 0
    assert "the runs agree on all 5 steps" in out.getvalue() and "identical, byte for byte" in out.getvalue()


def test_an_exact_replay_of_a_record_missing_a_tool_result_fails_and_shows_where() -> None:
    _, _, record = _recorded_run()
    steps = steps_of(record)
    del steps[2]  # the second tool result of the first model step
    done = asyncio.run(replay({**record, "steps": json.dumps(steps)}, support_desk.topology()))
    assert done.divergence is not None and done.divergence.position == 2 and not done.reproduced
    assert "was not called in the recorded run" in (done.divergence.replayed or {})["content"]
    out = io.StringIO()
    assert report(done, out) == 1
    assert "runs diverge at step 3" in out.getvalue()


def test_another_version_runs_its_own_model_and_gets_only_recorded_tool_results(tmp_path: Path) -> None:
    _, _, record = _recorded_run()
    topology_file = support_desk.copy_app(tmp_path)
    # This version also looks accounts up by e-mail address: a call the recorded run never made.
    text = topology_file.read_text(encoding="utf-8").replace(
        "        - {call: search_kb, argument: query, args: {category: billing}}",
        "        - {call: search_kb, argument: query, args: {category: billing}}\n"
        "        - {call: search_kb, argument: query, args: {category: refunds}}", 1)
    topology_file.write_text(text, encoding="utf-8")
    done = asyncio.run(replay(record, support_desk.topology(), str(topology_file)))
    assert done.divergence is not None and done.divergence.position == 0
    refusals = [s for s in done.rerun.steps if s.get("kind") == "tool" and not s["ok"]]
    assert len(refusals) == 1 and "was not called in the recorded run" in refusals[0]["content"]
    out = io.StringIO()
    assert report(done, out) == 0  # a divergence from another version is a finding
    assert "runs diverge at step 1 (tool_calls differ)" in out.getvalue()



def test_a_version_is_live_a_topology_path_or_a_declared_candidate(tmp_path: Path) -> None:
    live = support_desk.topology()
    assert version_worker(live, "billing", "live") == (live, "billing")
    other, worker = version_worker(live, "billing", str(support_desk.copy_app(tmp_path)))
    assert other.app_dir() == tmp_path and other.prefix == live.prefix and worker == "billing"
    with pytest.raises(ConfigurationError, match="declares no candidate version of 'billing'"):
        version_worker(live, "billing", "candidate")
    with pytest.raises(ConfigurationError, match="neither 'live', 'candidate' nor an existing topology"):
        version_worker(live, "billing", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigurationError, match="Unknown agent type 'nobody'"):
        version_worker(live, "nobody", "live")


@pytest.mark.parametrize(("mode", "worker"), [("canary", "billing.candidate"), ("shadow", "billing.shadow")])
def test_the_candidate_version_is_the_candidate_worker_of_the_same_topology(mode: str, worker: str) -> None:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["agents"]["billing"]["candidate"] = {"mode": mode, "weight": 0.2, "max_steps": 3}
    live = parse_topology(yaml.safe_dump(raw), DEFAULT_PATH)
    topology, name = version_worker(live, "billing", "candidate")
    assert topology is live and name == worker
    agent = build_agent(name, topology)
    assert agent.agent_type == "billing" and agent.max_steps == 3  # the candidate's own settings, the live type's name


def test_an_exact_replay_of_a_canarys_run_takes_the_candidates_settings() -> None:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    # Live stops after one model step; the canary may take eight. Its recorded run (a tool
    # step, then the answer) replays only under its own settings.
    raw["agents"]["billing"]["max_steps"] = 1
    raw["agents"]["billing"]["candidate"] = {"mode": "canary", "weight": 0.2, "max_steps": 8}
    topology = parse_topology(yaml.safe_dump(raw), DEFAULT_PATH)
    canary = build_agent("billing.candidate", topology)
    task = eval_task("t1", TEXT, "billing")
    run = asyncio.run(run_in_process(canary, task))
    assert run.outcome.status == "COMPLETED"
    record = transcript(task, canary.result(task, run.outcome, 1), [[0, 0]], run.steps, 2)
    schemas = SchemaSet.load()
    record = schemas.decode_as(TRANSCRIPT, schemas.encode(TRANSCRIPT, record))
    assert record["variant"] == "candidate"
    done = asyncio.run(replay(record, topology))
    assert done.reproduced and done.rerun.outcome.output == run.outcome.output
    out = io.StringIO()
    assert report(done, out) == 0 and "tool results, candidate settings)" in out.getvalue()
    # The same record taken for a live run replays under live's one-step limit: it stops
    # after the first reply's three tool results, where the record has the answer.
    as_live = asyncio.run(replay({**record, "variant": None}, topology))
    assert not as_live.reproduced and as_live.divergence is not None
    assert (as_live.divergence.position, as_live.divergence.replayed) == (4, None)
    # A canary's run whose candidate the topology no longer declares: said so, not replayed as live.
    raw["agents"]["billing"].pop("candidate")
    with pytest.raises(ConfigurationError, match="run by billing's canary candidate .* declares no candidate"):
        asyncio.run(replay(record, parse_topology(yaml.safe_dump(raw), DEFAULT_PATH)))


def test_a_request_digest_changes_with_the_conversation_and_only_with_it() -> None:
    tools = [{"name": "b"}, {"name": "a"}]
    one = ckpt.request_summary([Message("system", "s"), Message("user", "hi")], tools)
    assert one == ckpt.request_summary([Message("system", "s"), Message("user", "hi")], list(reversed(tools)))
    assert one["digest"] != ckpt.request_summary([Message("system", "t"), Message("user", "hi")], tools)["digest"]
    assert one["tools"] == ["a", "b"] and one["newest"] == {"role": "user", "content": "hi"}


def test_a_topology_without_the_transcripts_topic_says_none_were_written(tmp_path: Path) -> None:
    text = (support_desk.APP / "topology.yaml").read_text(encoding="utf-8")
    start = text.index("  transcripts:")
    without = text[:start] + text[text.index("  dlq:", start):]
    topology = parse_topology(without, tmp_path / "topology.yaml")
    with pytest.raises(TranscriptNotFound, match="declares no 'transcripts' topic"):
        find_transcript("127.0.0.1:1", topology, SchemaSet.load(), "t", None)  # refused before any broker is asked


def test_tool_results_that_finished_in_another_order_are_the_same_run() -> None:
    reply = _model(0, None, [("a", {"n": 1}), ("b", {"n": 2})], seq=0)
    first, second = _tool(0, 0, "a", "x"), _tool(0, 1, "b", "y")
    checkpointed = [reply, {**second, "seq": 1}, {**first, "seq": 2}, _model(1, "done", seq=3)]  # b finished first
    replayed = [reply, first, second, _model(1, "done")]
    assert first_divergence(checkpointed, replayed) is None
    assert first_divergence(checkpointed, [reply, first, _tool(0, 1, "b", "z"), _model(1, "done")]) is not None
