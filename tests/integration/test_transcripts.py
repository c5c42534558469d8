"""Transcripts on a real broker with real worker processes: a finished task leaves one
transcript, its replay reproduces the answer byte for byte, and a specialist killed with
SIGKILL after the transcript but before its checkpoint is tombstoned still leaves one
(its successor writes the same run again: readers keep one per run id)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from agentstream.client import new_task
from agentstream.clients import admin_config
from agentstream.errors import AgentStreamError
from agentstream.serde import SchemaSet
from agentstream.specialist import checkpoint as ckpt
from agentstream.topology_admin import apply
from agentstream.transcripts.divergence import first_divergence
from agentstream.transcripts.read import find_transcript, runs_of
from agentstream.transcripts.record import TRANSCRIPT, TRANSCRIPTS, steps_of
from agentstream.transcripts.replay import replay

from tests import support_desk

from .harness import REPO, latest_by_key, read_all, wait_for
from .test_durable import DurableStack

SCHEMAS = SchemaSet.load()
BILLING = ["specialist", "--type", "billing"]
TEXT = "I was charged twice for invoice INV-1002 on order 5002; please explain."


def _transcripts(stack: DurableStack, task_id: str) -> list[dict[str, Any]]:
    found = []
    for _, value, _ in read_all(stack.bootstrap, stack.topology.topic(TRANSCRIPTS)):
        record = SCHEMAS.decode_as(TRANSCRIPT, value) if value is not None else None
        if record is not None and record["task_id"] == task_id:
            found.append(record)
    return found


def _replay_cli(stack: DurableStack, task_id: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {"KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "AGENTSTREAM_PREFIX": stack.prefix,
           "AGENTSTREAM_STATE_DIR": str(stack.base / "cli"), "PATH": "/usr/bin:/bin",
           # The code under test, where a checkout runs on another checkout's installed package.
           **{key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}}
    return subprocess.run([sys.executable, "-m", "agentstream", "replay", task_id, *options], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_a_finished_task_leaves_one_transcript_and_its_replay_reproduces_the_answer(bootstrap: str, tmp_path: Path) -> None:
    stack = DurableStack(bootstrap, tmp_path, latency="0")
    task = new_task(TEXT, "sess-transcript-1", "it", requested_agent="billing")
    try:
        stack.start_all({"router": ["router"], "billing": BILLING, "supervisor": ["supervisor"]})
        stack.submit([task])
        result = stack.results({task["task_id"]}, timeout=90)[task["task_id"]]
    finally:
        codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    assert len(result) == 1 and result[0]["status"] == "COMPLETED", result
    transcripts = _transcripts(stack, task["task_id"])
    assert len(transcripts) == 1, transcripts
    recorded = transcripts[0]
    assert recorded["run_id"] == task["task_id"] and recorded["agent_type"] == "billing" and recorded["owners"] == 1
    assert recorded["output"] == result[0]["output"]
    assert recorded["behavior_version"] == result[0]["behavior_versions"]["billing"]
    steps = steps_of(recorded)
    assert [s["kind"] for s in steps] == ["model", "tool", "tool", "tool", "model"]
    assert recorded["usage"]["llm_calls"] == 2 and recorded["usage"]["tool_calls"] == 3
    assert all(isinstance(s["at"], int) and s["latency_ms"] >= 0 for s in steps)
    assert steps[0]["request"]["newest"] == {"role": "user", "content": TEXT}

    found = find_transcript(stack.bootstrap, stack.topology, SCHEMAS, task["task_id"], None)
    done = asyncio.run(replay(found, stack.topology))
    assert done.rerun.outcome.output == result[0]["output"]  # byte for byte
    assert done.divergence is None and done.reproduced
    cli = _replay_cli(stack, task["task_id"])
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "the runs agree on all 5 steps" in cli.stdout and "answer: identical, byte for byte" in cli.stdout

    # Another version: it does not look orders up; its run parts from the record at the first reply.
    topology_file = support_desk.copy_app(tmp_path / "other")
    rules = topology_file.read_text(encoding="utf-8")
    order_rule = next(line for line in rules.splitlines() if "call: lookup_order" in line)
    topology_file.write_text(rules.replace(order_rule + "\n", ""), encoding="utf-8")
    other = _replay_cli(stack, task["task_id"], "--version", str(topology_file))
    assert other.returncode == 0, other.stdout + other.stderr
    assert "runs diverge at step 1 (tool_calls differ)" in other.stdout and "answer: differs" in other.stdout


def _delete_topic(admin: AdminClient, topic: str) -> None:
    for future in admin.delete_topics([topic]).values():
        future.result(30)
    wait_for(lambda: topic not in admin.list_topics(timeout=10).topics, 30, f"{topic} to be deleted")


def _recreate(admin: AdminClient, stack: DurableStack) -> bool:
    """Create the missing topics again (False while the broker still deletes one)."""
    try:
        apply(admin, stack.topology)
    except (AgentStreamError, KafkaException):  # TOPIC_ALREADY_EXISTS while the deletion runs
        return False
    return True


def test_a_specialist_killed_between_its_transcript_and_its_tombstones_still_leaves_a_transcript(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    """The supervisor topic is deleted once the workers run (Apache Kafka here creates no topic by itself),
    so the specialist's result waits for it while librdkafka looks for the topic: the
    specialist stops after its transcript is acknowledged and before anything of the run is
    tombstoned. There it is killed; the topic comes back, and the next owner resumes the run
    from its checkpoint without a model call and writes the transcript again."""
    stack = DurableStack(kafka_bootstrap, tmp_path, latency="0")
    admin = AdminClient(admin_config(kafka_bootstrap))
    changelog = stack.topology.changelog_topic("billing", "checkpoints")
    task = new_task(TEXT, "sess-transcript-2", "it", requested_agent="billing")
    try:
        stack.start_all({"router": ["router"], "billing-a": BILLING})  # workers check their topics at start
        _delete_topic(admin, stack.topology.topic("supervisor"))
        stack.submit([task])
        wait_for(lambda: len(_transcripts(stack, task["task_id"])) == 1, 60, "the first owner's transcript")
        # The point of the kill: the transcript is acknowledged, the checkpoint is whole.
        assert ckpt.head_key(task["task_id"]) in latest_by_key(read_all(kafka_bootstrap, changelog))
        stack.workers["billing-a"].kill()
        assert stack.workers["billing-a"].wait(30) == -9
        wait_for(lambda: _recreate(admin, stack), 60, "the supervisor topic to be created again")
        calls_before = len(stack.calls())
        stack.start_all({"billing-b": BILLING, "supervisor": ["supervisor"]})
        result = stack.results({task["task_id"]}, timeout=90)[task["task_id"]]
    finally:
        codes = stack.stop_all()
    assert codes["billing-a"] == -9 and all(code == 0 for name, code in codes.items() if name != "billing-a"), codes
    assert len(result) == 1 and result[0]["status"] == "COMPLETED", result
    assert len(stack.calls()) == calls_before == 2  # the new owner replayed both model steps, calling nothing
    copies = _transcripts(stack, task["task_id"])
    assert len(copies) == 2 and [c["owners"] for c in copies] == [1, 2]
    first, second = copies
    assert first_divergence(steps_of(first), steps_of(second)) is None and first["output"] == second["output"]
    assert second["output"] == result[0]["output"]
    assert len(runs_of(copies, task["task_id"])) == 1  # one run, written twice
    # Its checkpoint is gone now that the run finished.
    assert ckpt.head_key(task["task_id"]) not in latest_by_key(read_all(kafka_bootstrap, changelog))
