"""Checkpoint cost benchmark: bytes a specialist writes to its checkpoint changelog per
step as a conversation grows to 50 steps, against a full-history snapshot per step.

    python -m bench.checkpoint_cost [--steps 50] [--tasks 3] [--tool-bytes 400] [--quick]

A real billing specialist process (``python -m bench._procs specialist`` with an injected
model and tool registry; a temporary copy of the topology raises billing's ``max_steps``
above ``--steps``, allows the bench tool and turns history compression off) runs
``--tasks`` tasks, each in its own session, produced straight to its input topic as
RoutedTask records. The model
(:class:`GrowingModel`, no latency) calls the tool ``lookup_record`` once per turn for
``--steps`` turns, then answers; each tool result is a JSON document of about
``--tool-bytes`` bytes. So every step adds the same amount to the conversation.

Measured: every record of ``<prefix>.specialist.billing.checkpoints.changelog`` (read to
its end after the tasks finished), key + value bytes, attributed to its step from the
step key ``s/<task>/<epoch>/<seq>`` and the record's ``step`` field; step n = the n-th
model turn and its tool result(s). The head (``t/<task>``), done marker and tombstones are
reported per task. Kafka's own per-record and per-batch framing is not counted.

Baseline (same run): the size of the whole conversation after each step — what a
checkpoint that snapshots the full history would write at that step — logged by the
model from the messages it is given (compact JSON of role, content, tool calls, tool
call id, name). Reported: bytes per step for steps 1..N and the least-squares slope
(bytes per step, per step) of both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, TopicPartition

from agentstream.clients import reader_config
from agentstream.events import ROUTED_TASK, now_ms
from agentstream.models.base import Message, ModelResponse, ToolCall, Usage, current_task_key
from agentstream.settings import LOG_LEVEL_ENV
from agentstream.tools.registry import ToolRegistry
from agentstream.topology import DEFAULT_PATH
from tests.support_desk import copy_app
from bench._procs import REPO, OUT_DIR, AgentStack, broker, linear_fit, machine, source_state, write_report
from bench.relay import add_broker_argument, broker_kind

AGENT = "billing"
TOOL = "lookup_record"
HISTORY_LOG_ENV = "BENCH_CHECKPOINT_HISTORY_LOG"
STEPS_ENV = "BENCH_CHECKPOINT_STEPS"
TOOL_BYTES_ENV = "BENCH_CHECKPOINT_TOOL_BYTES"


# -- what the worker process runs (imported there by bench._procs --model/--tools) -------
def history_bytes(messages: Sequence[Message]) -> int:
    """The conversation as a full snapshot would store it: compact JSON of every message."""
    return len(json.dumps([
        {"role": m.role, "content": m.content,
         "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls],
         "tool_call_id": m.tool_call_id, "name": m.name}
        for m in messages
    ], separators=(",", ":")).encode())


class GrowingModel:
    """Calls ``lookup_record`` once per turn for ``steps`` turns, then answers; logs the
    full-history size it was given on each call (the naive-snapshot baseline)."""

    model_id = "scripted:bench-growing"

    def __init__(self, steps: int, history_log: Path | None) -> None:
        self.steps = steps
        self.history_log = history_log

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        step = sum(1 for m in messages if m.role == "assistant")
        size = history_bytes(messages)
        if self.history_log is not None:
            with self.history_log.open("a") as out:
                out.write(f"{current_task_key()} {step} {size}\n")
        usage = Usage(input_tokens=size // 4, output_tokens=24)
        if step < self.steps:
            call = ToolCall(f"call_{step}", TOOL, {"record_id": f"R-{step:04d}"})
            return ModelResponse(f"Step {step + 1}: looking up record R-{step:04d} next.", (call,), usage, self.model_id)
        return ModelResponse(f"Done after {step} lookups: every record is consistent.", (), usage, self.model_id)


def growing_model() -> GrowingModel:
    log = os.environ.get(HISTORY_LOG_ENV)
    return GrowingModel(int(os.environ.get(STEPS_ENV, "50")), Path(log) if log else None)


def record_tools() -> ToolRegistry:
    size = int(os.environ.get(TOOL_BYTES_ENV, "400"))

    def lookup_record(record_id: str) -> str:
        """Look up one record by id.

        Args:
            record_id: the record id, e.g. R-0001
        """
        doc = {"id": record_id, "status": "ok", "owner": "ACME GmbH", "notes": ""}
        doc["notes"] = "x" * max(0, size - len(json.dumps(doc)))
        return json.dumps(doc)

    return ToolRegistry([lookup_record])


# -- the benchmark ---------------------------------------------------------------------
@dataclass
class Result:
    steps: int
    tasks: int
    tool_bytes: int
    per_step_bytes: list[float] = field(default_factory=list)  # ours, steps 1..N (mean over tasks)
    per_step_records: list[float] = field(default_factory=list)
    naive_bytes: list[float] = field(default_factory=list)  # whole history after step n
    final_step_bytes: float = 0.0  # the answer turn (step N+1)
    slope: float = 0.0
    naive_slope: float = 0.0
    head_bytes: list[int] = field(default_factory=list)  # every head write of a task
    done_bytes: float = 0.0
    tombstones_per_task: float = 0.0
    tombstone_bytes_per_task: float = 0.0  # their keys (a tombstone has no value)
    total_ours_per_task: float = 0.0
    total_naive_per_task: float = 0.0
    changelog_records: int = 0
    error: str | None = None


def write_topology(path: Path, steps: int) -> None:
    raw = yaml.safe_load(Path(DEFAULT_PATH).read_text())
    billing = raw["agents"][AGENT]
    billing["max_steps"] = steps + 5
    billing["tools"] = [TOOL]
    billing.pop("approvals", None)  # they name the app's tools, which this billing does not have
    # History compression would rewrite the conversation this model counts its turns in
    # (and shrink the baseline); the question here is what a checkpoint of one step costs.
    (billing.get("model") or {}).pop("history_max_tokens", None)
    (billing.get("model") or {}).pop("scripted", None)  # the app's planning rules call tools not allowed here
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def read_changelog(bootstrap: str, topic: str, partitions: int) -> list[tuple[bytes | None, bytes | None]]:
    reader = Consumer(reader_config(bootstrap, {"group.id": f"bench-ckpt-{uuid.uuid4().hex[:6]}"}))
    reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records: list[tuple[bytes | None, bytes | None]] = []
    open_partitions = set(range(partitions))
    deadline = time.monotonic() + 60
    try:
        while open_partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within 60 s")
            msg = reader.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(msg.partition())
                continue
            records.append((msg.key(), msg.value()))
    finally:
        reader.close()
    return records


def run(bootstrap: str, steps: int, tasks: int, tool_bytes: int) -> Result:
    result = Result(steps, tasks, tool_bytes)
    base = Path(tempfile.mkdtemp(prefix="checkpoint-cost-"))
    topology_path = copy_app(base)  # the app's prompt files, next to the edited topology
    write_topology(topology_path, steps)
    history_log = base / "history.log"
    history_log.touch()
    # DEBUG: the wait below reads each task's line, which a routine run logs at DEBUG.
    stack = AgentStack(bootstrap, base, topology_path=topology_path,
                       env={HISTORY_LOG_ENV: str(history_log), STEPS_ENV: str(steps), TOOL_BYTES_ENV: str(tool_bytes),
                            LOG_LEVEL_ENV: "DEBUG"})
    worker = stack.start(AGENT, "specialist", model="bench.checkpoint_cost:growing_model", tools="bench.checkpoint_cost:record_tools")
    try:
        worker.wait_for_line(r": assigned .*\[\d\]", 90)
        run_id = uuid.uuid4().hex[:6]
        ids = [f"c-{run_id}-{i}" for i in range(tasks)]
        producer = stack.producer()
        for task_id in ids:
            routed = {"task_id": task_id, "session_id": f"s-{task_id}", "tenant_id": "bench", "input": "Check every record.",
                      "submitted_at": now_ms(), "agent_type": AGENT, "route": [AGENT], "metadata": {},
                      "routed_at": now_ms(), "tier": "standard", "budget_usd": None}
            producer.produce(stack.topology.specialist_topic(AGENT), stack.schemas.encode(ROUTED_TASK, routed), routed["session_id"])
        producer.flush(30)
        for task_id in ids:
            _, line = worker.wait_for_line(rf"task {task_id} (COMPLETED|FAILED) by", 300)
            if " FAILED " in line:
                raise RuntimeError(f"task {task_id} failed: {line}")
        time.sleep(0.5)
        topic = stack.topology.changelog_topic(AGENT, "checkpoints")
        partitions = stack.topology.topic_spec(stack.topology.agent(AGENT).input).partitions
        records = read_changelog(bootstrap, topic, partitions)
        result.changelog_records = len(records)
        summarize(result, records, ids, history_log)
    except (TimeoutError, RuntimeError) as exc:
        result.error = str(exc)
    finally:
        stack.stop_all(60)
        stack.delete_topics()
        shutil.rmtree(base, ignore_errors=True)
    return result


_STEP_KEY = re.compile(r"^s/(.+)/(\d{6})/(\d{6})$")


def summarize(result: Result, records: list[tuple[bytes | None, bytes | None]], ids: list[str], history_log: Path) -> None:
    per_task_step: dict[str, dict[int, list[int]]] = {t: defaultdict(list) for t in ids}  # task → step → record sizes
    heads: list[int] = []
    done: list[int] = []
    tombstones = tombstone_bytes = 0
    for key_raw, value in records:
        key = (key_raw or b"").decode()
        size = len(key_raw or b"") + len(value or b"")
        if value is None:
            tombstones += 1
            tombstone_bytes += size
            continue
        if key.startswith("t/"):
            heads.append(size)
        elif key.startswith("d/"):
            done.append(size)
        elif (m := _STEP_KEY.match(key)) and m.group(1) in per_task_step:
            record = json.loads(value)
            per_task_step[m.group(1)][int(record["step"]) + 1].append(size)  # model turn k is step k+1
    naive: dict[str, dict[int, int]] = {t: {} for t in ids}
    for line in history_log.read_text().splitlines():
        task, call, size = line.split()
        if task in naive:
            naive[task][int(call)] = int(size)  # the history given to call k = everything after step k
    n = result.steps
    result.per_step_bytes = [statistics.fmean(sum(per_task_step[t][s]) for t in ids) for s in range(1, n + 1)]
    result.per_step_records = [statistics.fmean(len(per_task_step[t][s]) for t in ids) for s in range(1, n + 1)]
    result.final_step_bytes = statistics.fmean(sum(per_task_step[t][n + 1]) for t in ids)
    result.naive_bytes = [statistics.fmean(naive[t][s] for t in ids) for s in range(1, n + 1)]
    xs = list(range(1, n + 1))
    result.slope = linear_fit(xs, result.per_step_bytes)[0]
    result.naive_slope = linear_fit(xs, result.naive_bytes)[0]
    result.head_bytes = heads
    result.done_bytes = statistics.fmean(done) if done else 0.0
    result.tombstones_per_task = tombstones / len(ids)
    result.tombstone_bytes_per_task = tombstone_bytes / len(ids)
    result.total_ours_per_task = (sum(result.per_step_bytes) + result.final_step_bytes + sum(heads) / len(ids)
                                  + result.done_bytes + result.tombstone_bytes_per_task)
    result.total_naive_per_task = sum(result.naive_bytes)


def print_report(r: Result) -> None:
    print(f"\n{'step':>5}{'ours B':>9}{'records':>9}{'full history B':>16}")
    shown = sorted({1, 2, 3, 5, 10, 20, 30, 40, 49, 50} & set(range(1, r.steps + 1)))
    for s in shown:
        print(f"{s:>5}{r.per_step_bytes[s - 1]:>9.0f}{r.per_step_records[s - 1]:>9.0f}{r.naive_bytes[s - 1]:>16,.0f}")
    ours, naive = r.per_step_bytes, r.naive_bytes
    print(f"slope (least squares, steps 1..{r.steps}): ours {r.slope:+.2f} B/step per step, full history "
          f"{r.naive_slope:+,.1f} B/step per step")
    print(f"ours: min {min(ours):.0f} B, max {max(ours):.0f} B, step {r.steps} / step 1 = {ours[-1] / ours[0]:.3f}; "
          f"full history: step {r.steps} / step 1 = {naive[-1] / naive[0]:.1f}")
    print(f"per task: head writes {len(r.head_bytes) // max(r.tasks, 1)} x ~{statistics.fmean(r.head_bytes or [0]):.0f} B, "
          f"answer step {r.final_step_bytes:.0f} B, done marker {r.done_bytes:.0f} B, {r.tombstones_per_task:.0f} tombstones "
          f"({r.tombstone_bytes_per_task:,.0f} B of keys);\n  total {r.total_ours_per_task:,.0f} B vs "
          f"{r.total_naive_per_task:,.0f} B for full snapshots "
          f"({r.total_naive_per_task / r.total_ours_per_task:.1f}x)")


def plot(r: Result, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    xs = list(range(1, r.steps + 1))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(xs, r.naive_bytes, label="full-history snapshot (baseline)")
    ax.plot(xs, r.per_step_bytes, label="our step checkpoint (changelog key + value)")
    ax.set_xlabel("step (model turn + tool result)")
    ax.set_ylabel("bytes written for this step")
    ax.set_title(f"Checkpoint bytes per step; tool result ~{r.tool_bytes} B per step")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checkpoint_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="tool-calling turns per task (default 50)")
    parser.add_argument("--tasks", type=int, default=3, help="tasks, each its own session (default 3)")
    parser.add_argument("--tool-bytes", type=int, default=400, help="size of each tool result (default 400)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 task")
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks = 1
    if args.steps < 2:
        parser.error("--steps must be at least 2 (a slope needs two points)")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    with broker(args.broker) as (bootstrap, _, broker_name):
        print(f"checkpoint cost bench: {args.tasks} tasks x {args.steps} tool steps, tool results ~{args.tool_bytes} B; "
              f"broker {broker_name}; {host['nproc']} x {host['cpu_model']}")
        result = run(bootstrap, args.steps, args.tasks, args.tool_bytes)
    if result.error:
        print(f"ERROR: {result.error}")
    else:
        print_report(result)
    png = plot(result, OUT_DIR / f"checkpoint_cost-{stamp}.png") if not result.error else None
    report = {
        "benchmark": "checkpoint_cost",
        "started": stamp,
        "command": "python -m bench.checkpoint_cost " + " ".join(argv),
        "machine": host,
        "source": source_state("runtime", "specialist"),
        "broker": broker_name,
        "broker_kind": broker_kind(broker_name),
        "config": {"steps": args.steps, "tasks": args.tasks, "tool_bytes": args.tool_bytes},
        "result": asdict(result),
        "plot": str(png.relative_to(REPO)) if png else None,
    }
    out = write_report("checkpoint_cost", stamp, report)
    print(f"\nwrote {out.relative_to(REPO)}" + (f" and {png.relative_to(REPO)}" if png else ""))
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
