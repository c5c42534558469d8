"""Waiting memory benchmark: the RSS of a specialist holding N tasks in the approval wait,
against the same worker idle, in the same run (issue 14: a waiting task holds no process).

    python -m bench.waiting_memory [--tasks 10000] [--settle 10] [--broker kafka|tansu]

One real billing specialist process (``agentstream worker specialist --type billing``) with
the support desk's topology, where ``refund_invoice`` needs a human's approval (deadline
24 h). ``--tasks`` RoutedTask records "Please issue a refund for INV-<n>", each in its own
session, go straight to its input topic; the scripted model (no latency) calls
``refund_invoice`` at the first step, the call is held and the task waits: its checkpoint,
its ``a/`` and ``w/`` records, an ApprovalRequested record, a deadline timer.

Measured, from the worker's RSS sampled every 0.5 s (psutil):
- idle: once it owns its partitions and nothing was produced, the median over ``--settle`` s;
- waiting: once every task logged "waits for approval", the median over ``--settle`` s;
- restarted: the worker is stopped (SIGTERM) and a new process started on the same state
  directory while every task still waits: once it owns its partitions, the median over
  ``--settle`` s. This is what holding the waits costs a process that never ran the tasks
  (no allocator pools or caches left from running them): restarted minus idle;
- decided: then every approval is denied (ApprovalDecision records, as a UI sends them),
  each task resumes, the model reads the denial and answers; once every task ended, the
  median over ``--settle`` s. The same worker after the same work with nothing waiting:
  what the wait itself holds is waiting minus decided, the rest is what running that many
  tasks leaves behind (allocator pools, RocksDB's memtables and block cache);
- the peak.
Reported: the medians, their differences and the differences per task.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentstream.approvals.records import DENY, approval_decision, approval_id
from agentstream.events import APPROVAL_DECISION, ROUTED_TASK, now_ms
from bench._procs import REPO, AgentStack, Proc, ResourceSampler, broker, machine, source_state, write_report
from bench.relay import add_broker_argument, broker_kind

AGENT = "billing"
WAITS = r"task \S+ waits for approval of"
ENDED = r"task \S+ (COMPLETED|FAILED) by"
FILL_S_PER_TASK = 0.2  # the fill's time limit: generous for a busy 2-core machine
SAMPLE_S = 0.5


@dataclass
class Result:
    tasks: int
    idle_rss: int = 0
    waiting_rss: int = 0
    restarted_rss: int = 0
    decided_rss: int = 0
    peak_rss: int = 0
    fill_s: float = 0.0
    waiting: int = 0
    ended: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (s since start, RSS) every few samples
    error: str | None = None

    @property
    def growth(self) -> int:
        return self.waiting_rss - self.idle_rss

    @property
    def restarted_growth(self) -> int:
        """What a fresh process holding every wait costs over a fresh idle one."""
        return self.restarted_rss - self.idle_rss

    @property
    def held(self) -> int:
        """What the waits themselves hold: waiting against the same worker once nothing waits."""
        return self.waiting_rss - self.decided_rss


def _routed(task_id: str, index: int) -> dict[str, Any]:
    return {"task_id": task_id, "session_id": f"s-{task_id}", "tenant_id": "bench",
            "input": f"Please issue a refund for INV-{100000 + index}", "submitted_at": now_ms(), "agent_type": AGENT,
            "route": [AGENT], "metadata": {}, "routed_at": now_ms(), "tier": "standard", "budget_usd": None}


def _denial(task_id: str) -> dict[str, Any]:
    """The denial of the task's held call (model step 0, call 0), as a UI would send it."""
    request = {"approval_id": approval_id(AGENT, task_id, 0, 0), "task_id": task_id, "session_id": f"s-{task_id}",
               "agent_type": AGENT, "arguments_hash": None}
    return approval_decision(request, DENY, "bench", "a benchmark's denial", now_ms())


def _produce(stack: AgentStack, topic: str, schema: str, records: list[dict[str, Any]]) -> None:
    producer = stack.producer()
    for record in records:
        while True:
            try:
                producer.produce(topic, stack.schemas.encode(schema, record), record["session_id"])
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError(f"{len(records)} {schema} records were not all acknowledged within 60 s")


def _median_rss(sampler: ResourceSampler, seconds: float) -> int:
    """The worker's median RSS over the next ``seconds``."""
    start = time.monotonic()
    time.sleep(seconds)  # the measuring window itself, not a wait for a condition
    return int(statistics.median(rss for _, got in sampler.between(start, time.monotonic()) for _, rss in got.values()))


def _count_lines(worker: Proc, pattern: str, count: int, timeout: float) -> int:
    """Count the worker's log lines matching ``pattern`` until there are ``count``; the count."""
    deadline = time.monotonic() + timeout
    while (seen := len(worker.matching(pattern))) < count:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.proc.returncode}) with {seen} lines {pattern!r}:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{seen} of {count} lines {pattern!r} after {timeout:.0f} s:\n{worker.tail()}")
        time.sleep(0.5)  # the poll interval of the count
    return seen


def _restart(stack: AgentStack, worker: Proc, sampler: ResourceSampler) -> tuple[ResourceSampler, Proc]:
    """Stop the worker cleanly and start a new process on its state directory; sample it."""
    sampler.stop()
    worker.terminate()
    if (code := worker.stop(60)) != 0:
        raise RuntimeError(f"the worker exited {code} on SIGTERM:\n{worker.tail()}")
    fresh = stack.start(AGENT, "specialist")
    fresh.wait_for_line(r": assigned .*\[\d\]", 90)
    restarted = ResourceSampler({AGENT: fresh.pid}, SAMPLE_S)
    restarted.start()
    return restarted, fresh


def run(bootstrap: str, tasks: int, settle: float) -> Result:
    result = Result(tasks)
    base = Path(tempfile.mkdtemp(prefix="waiting-memory-"))
    stack = AgentStack(bootstrap, base, latency="0", call_log=False)
    worker = stack.start(AGENT, "specialist")
    sampler: ResourceSampler | None = None
    earlier: list[tuple[float, dict[str, tuple[float, int]]]] = []  # the first process's samples
    try:
        worker.wait_for_line(r": assigned .*\[\d\]", 90)
        sampler = ResourceSampler({AGENT: worker.pid}, SAMPLE_S)
        sampler.start()
        result.idle_rss = _median_rss(sampler, settle)
        limit = max(120.0, tasks * FILL_S_PER_TASK)
        filling = time.monotonic()
        ids = [f"w-{uuid.uuid4().hex[:6]}-{i:06d}" for i in range(tasks)]
        _produce(stack, stack.topology.specialist_topic(AGENT), ROUTED_TASK, [_routed(t, i) for i, t in enumerate(ids)])
        result.waiting = _count_lines(worker, WAITS, tasks, limit)
        result.fill_s = time.monotonic() - filling
        result.waiting_rss = _median_rss(sampler, settle)
        earlier = sampler.samples
        sampler, worker = _restart(stack, worker, sampler)
        result.restarted_rss = _median_rss(sampler, settle)
        _produce(stack, stack.topology.topic("approval_decisions"), APPROVAL_DECISION, [_denial(t) for t in ids])
        result.ended = _count_lines(worker, ENDED, tasks, limit)
        result.decided_rss = _median_rss(sampler, settle)
    except (TimeoutError, RuntimeError) as exc:
        result.error = str(exc)
    finally:
        if sampler is not None:
            sampler.stop()
            rss = [(t, got[AGENT][1]) for t, got in [*earlier, *sampler.samples] if AGENT in got]
            result.peak_rss = max((r for _, r in rss), default=0)
            result.samples = [(round(t - rss[0][0], 1), r) for t, r in rss[::4]] if rss else []
        stack.stop_all(60)
        stack.delete_topics()
        shutil.rmtree(base, ignore_errors=True)
    return result


def print_report(r: Result) -> None:
    mb = 1e6
    print(f"idle worker RSS      {r.idle_rss / mb:8.1f} MB")
    print(f"{r.waiting:>6} waiting RSS  {r.waiting_rss / mb:8.1f} MB  (filled in "
          f"{r.fill_s:.0f} s; peak RSS of the run {r.peak_rss / mb:.1f} MB)")
    print(f"{r.waiting:>6} waiting, restarted RSS {r.restarted_rss / mb:8.1f} MB  (a new process on the same state; "
          f"{r.restarted_growth / mb:+.1f} MB over idle)")
    print(f"{r.ended:>6} decided RSS  {r.decided_rss / mb:8.1f} MB  (every task denied and ended)")
    per_task = r.growth / r.waiting if r.waiting else float("nan")
    print(f"waiting - idle       {r.growth / mb:+8.1f} MB  ({per_task:,.0f} B per waiting task)")
    held = r.held / r.waiting if r.waiting else float("nan")
    print(f"waiting - decided    {r.held / mb:+8.1f} MB  ({held:,.0f} B per waiting task: what the waits hold)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.waiting_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks put into the approval wait (default 10,000)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds each RSS median is taken over (default 10)")
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.settle <= 0:
        parser.error(f"--tasks must be at least 1 and --settle positive, got {args.tasks} and {args.settle}")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    with broker(args.broker) as (bootstrap, _, broker_name):
        print(f"waiting memory bench: {args.tasks} tasks held for approval on one {AGENT} specialist; "
              f"broker {broker_name}; {host['nproc']} x {host['cpu_model']}")
        result = run(bootstrap, args.tasks, args.settle)
    if result.error:
        print(f"ERROR: {result.error}")
    else:
        print_report(result)
    report = {
        "benchmark": "waiting_memory",
        "started": stamp,
        "command": "python -m bench.waiting_memory " + " ".join(argv),
        "machine": host,
        "source": source_state("runtime", "specialist", "approvals"),
        "broker": broker_name,
        "broker_kind": broker_kind(broker_name),
        "config": vars(args),
        "result": {**asdict(result), "growth": result.growth, "held": result.held,
                   "restarted_growth": result.restarted_growth},
    }
    print(f"\nwrote {write_report('waiting_memory', stamp, report).relative_to(REPO)}")
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
