"""Recovery benchmark: SIGKILL one of two specialist workers with 100 tasks in flight.

    python -m bench.recovery [--tasks 100] [--latency 2] [--kill-at-step 1] [--trials 2] [--quick]
                             [--broker kafka|tansu] [--group-protocol classic|consumer]

Per trial: a fresh router, supervisor and two billing specialists (``agentstream worker``
processes under a unique prefix; the ScriptedModel sleeps ``--latency`` s per call and
logs every call as ``<task> <step> <pid>``). Once both specialists own 3 of the 6
partitions, ``--tasks`` tasks are submitted to sessions on the victim's partitions and as
many to the survivor's (each its own session; the partition comes from librdkafka's own
partitioner). When every victim task has made its model call of step ``--kill-at-step``
(0: the tool round, 1: the answer, i.e. the tool results are checkpointed), the victim
gets SIGKILL. Measured from the kill:

- the survivor's ``revoked`` line (the broker noticed, rebalance began), its ``assigned``
  line with the victim's partitions, its first ``resuming task`` line for a victim task,
  and the first model call the survivor makes for a victim task (call log);
- tasks lost (no TaskResult within the timeout), duplicate TaskResults, and model calls
  made twice (the same (task, step) in the call log), split by whose task it was.

Baseline in the same run: two bare confluent-kafka consumers (``clients.consumer_config``,
the same session timeout and assignment strategy) in one group on a 6-partition topic;
SIGKILL one and time until the other is assigned its partitions. That is the part of
recovery owned by the broker and the group protocol; the rest is ours.

``--broker``: bench.relay's choice (Apache Kafka 4 where ``java`` and ``mvn`` exist, else
Tansu; ``KAFKA_BOOTSTRAP_SERVERS`` wins). ``--group-protocol consumer`` runs the workers with
``AGENTSTREAM_GROUP_PROTOCOL=consumer`` and the baseline members with KIP-848 (Apache Kafka 4
only; default: that variable, else classic). KIP-848 assigns incrementally: the survivor keeps
its own partitions, so there is no "revoked" line and that column stays empty. A member's
ownership is therefore followed through every assigned / revoked / lost event, not read off
the last line. bench.group_protocol compares the two protocols on bare consumers in depth.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agentstream.clients import GROUP_PROTOCOLS, admin_config, consumer_config
from agentstream.settings import GROUP_PROTOCOL_ENV, LOG_LEVEL_ENV
from bench._procs import (
    KEEP_LOGS_ENV, REPO, AgentStack, CallLogTail, Proc, TopicWatcher, assigned_partitions, billing_task, broker,
    group_type, machine, owned_partitions, partition_map, source_state, wait_until, write_report,
)
from bench.relay import add_broker_argument, broker_kind, wait_for_quiet

PARTITIONS = 6


# -- the baseline: a bare consumer group -------------------------------------------------
def member_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery member")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--protocol", choices=GROUP_PROTOCOLS, default="classic")
    args = parser.parse_args(argv)
    owned: set[int] = set()

    # Eager (classic) callbacks name the whole assignment, after a revoke of everything;
    # incremental (KIP-848) ones only what changes. Applying each as a change covers both.
    def report(event: str, partitions: list[TopicPartition], change: Callable[[set[int]], None]) -> None:
        change({p.partition for p in partitions})
        print(f"{event} " + ",".join(str(p.partition) for p in partitions), flush=True)
        print("OWNS " + ",".join(map(str, sorted(owned))), flush=True)

    def assigned(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        report("ASSIGNED", partitions, owned.update)

    def revoked(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        report("REVOKED", partitions, owned.difference_update)

    def lost(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        report("LOST", partitions, owned.difference_update)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop() → KeyboardInterrupt → close()
    consumer = Consumer(consumer_config(args.bootstrap, args.group, protocol=args.protocol))
    consumer.subscribe([args.topic], on_assign=assigned, on_revoke=revoked, on_lost=lost)
    try:
        while True:
            consumer.poll(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


@dataclass
class BaselineTrial:
    to_revoked_s: float = float("nan")
    to_assigned_s: float = float("nan")
    group_type: str = ""  # as the broker describes the group
    error: str | None = None


def _member_partitions(proc: Proc) -> set[int]:
    lines = proc.matching(r"^OWNS")
    if not lines:
        return set()
    return {int(p) for p in lines[-1][1].partition(" ")[2].split(",") if p}


def run_baseline(bootstrap: str, protocol: str = "classic") -> BaselineTrial:
    result = BaselineTrial()
    topic, group = f"bench.recovery.{uuid.uuid4().hex[:8]}", f"bench-recovery-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(admin_config(bootstrap))
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)
    members = [Proc(f"member-{i}", ["-m", "bench.recovery", "member", "--bootstrap", bootstrap, "--topic", topic,
                                    "--group", group, "--protocol", protocol], {}) for i in range(2)]
    try:
        wait_until(lambda: all(_member_partitions(m) for m in members)
                   and set().union(*map(_member_partitions, members)) == set(range(PARTITIONS)), 60, "both members assigned")
        result.group_type = group_type(bootstrap, group)
        victim, survivor = members
        mark = survivor.line_count()
        killed = victim.kill()
        deadline = time.monotonic() + 60
        while len(_member_partitions(survivor)) < PARTITIONS:
            if time.monotonic() > deadline:
                raise TimeoutError("the surviving member was not given every partition within 60 s")
            time.sleep(0.01)
        assigned_at = survivor.matching(r"^ASSIGNED", after=mark)[-1][0]
        result.to_assigned_s = assigned_at - killed
        revoked = survivor.matching(r"^REVOKED \d", after=mark)  # none with KIP-848: the survivor keeps its own
        if revoked:
            result.to_revoked_s = revoked[0][0] - killed
    except (TimeoutError, RuntimeError) as exc:
        result.error = str(exc)
    finally:
        for member in members:
            member.stop(10)
        for future in admin.delete_topics([topic]).values():
            try:
                future.result(30)
            except Exception:  # Tansu memory only; harmless
                pass
    return result


# -- the agent stack ---------------------------------------------------------------------
@dataclass
class Trial:
    tasks_per_worker: int
    latency: str
    kill_at_step: int
    victim_partitions: list[int] = field(default_factory=list)
    in_flight_on_victim: int = 0
    victim_completed_before_kill: int = 0
    to_revoked_s: float = float("nan")
    to_assigned_s: float = float("nan")
    to_first_resume_line_s: float = float("nan")  # first "resuming task" of a victim task
    to_first_resumed_call_s: float = float("nan")  # first survivor model call for a victim task
    to_all_resumed_s: float = float("nan")
    to_all_results_s: float = float("nan")
    resumed_victim_tasks: int = 0
    checkpoint_restore: list[str] = field(default_factory=list)
    tasks: int = 0
    lost: int = 0
    duplicate_results: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    repeated_calls_victim_tasks: int = 0
    repeated_calls_survivor_tasks: int = 0
    max_repeats_per_task: int = 0
    survivor_exit: int | None = None
    group_type: str = ""  # as the broker describes the specialists' group
    error: str | None = None


def run_trial(bootstrap: str, tasks_per_worker: int, latency: str, kill_at_step: int, protocol: str = "classic") -> Trial:
    trial = Trial(tasks_per_worker, latency, kill_at_step)
    base = Path(tempfile.mkdtemp(prefix="recovery-"))
    # DEBUG: the victim's completed tasks are read from its lines, which a routine run logs at DEBUG.
    stack = AgentStack(bootstrap, base, latency=latency, env={GROUP_PROTOCOL_ENV: protocol, LOG_LEVEL_ENV: "DEBUG"})
    stack.start("router", "router")
    stack.start("supervisor", "supervisor")
    victim = stack.start("billing-a", "specialist")
    survivor = stack.start("billing-b", "specialist")
    watcher = TopicWatcher(bootstrap, [stack.topology.topic("results")], stack.schemas, PARTITIONS)
    calls = CallLogTail(stack.call_log)
    try:
        stack.wait_assigned()
        wait_until(lambda: owned_partitions(victim) and owned_partitions(survivor)
                   and len(owned_partitions(victim) | owned_partitions(survivor)) == PARTITIONS,
                   90, "both specialists to own partitions")
        time.sleep(1.0)  # a settled assignment, not one mid-rebalance
        victim_parts = owned_partitions(victim)
        if not victim_parts or len(victim_parts | owned_partitions(survivor)) != PARTITIONS:
            raise RuntimeError("the assignment changed while settling; rerun")
        trial.victim_partitions = sorted(victim_parts)
        trial.group_type = group_type(bootstrap, stack.topology.group("billing"))
        run = uuid.uuid4().hex[:6]
        keys = [f"s-{run}-{i}" for i in range(tasks_per_worker * 8)]
        where = partition_map(bootstrap, keys, PARTITIONS)
        on_victim = [k for k in keys if where[k] in victim_parts][:tasks_per_worker]
        on_survivor = [k for k in keys if where[k] not in victim_parts][:tasks_per_worker]
        tasks = [billing_task(i, run, s) for i, s in enumerate(on_victim + on_survivor)]
        victim_tasks = {t["task_id"] for t in tasks[:len(on_victim)]}
        trial.tasks = len(tasks)
        watcher.start()
        calls.start()
        stack.submit(tasks)

        def victim_reached() -> bool:
            reached = {c.task for c in calls.snapshot() if c.pid == victim.pid and c.step >= kill_at_step}
            return victim_tasks <= reached

        wait_until(victim_reached, 90, f"every victim task to reach step {kill_at_step}")
        mark = survivor.line_count()
        killed = victim.kill()
        victim.proc.wait(10)
        done_on_victim = {m.group(1) for _, line in victim.matching(r"task (\S+) COMPLETED by")
                          if (m := re.search(r"task (\S+) COMPLETED by", line))}
        trial.victim_completed_before_kill = len(done_on_victim & victim_tasks)
        trial.in_flight_on_victim = len(victim_tasks - done_on_victim)

        # Eager (classic): the survivor revokes everything, then is assigned all 6. Incremental
        # (KIP-848): it keeps its own and is assigned the victim's; no revoked line.
        survivor.wait_for_line(r": (revoked|assigned) ", 60, after=mark)
        revoked = survivor.matching(r": revoked ", after=mark)
        if revoked:
            trial.to_revoked_s = revoked[0][0] - killed
        victim_pattern = "|".join(re.escape(t) for t in victim_tasks)
        resume_at, _ = survivor.wait_for_line(rf"resuming task ({victim_pattern}) ", 60, after=mark)
        trial.to_first_resume_line_s = resume_at - killed

        def survivor_call_for_victim() -> bool:
            return any(c.pid == survivor.pid and c.task in victim_tasks and c.at > killed for c in calls.snapshot())

        wait_until(survivor_call_for_victim, 60, "the survivor's first model call for a victim task")
        first_call = min(c.at for c in calls.snapshot() if c.pid == survivor.pid and c.task in victim_tasks and c.at > killed)
        trial.to_first_resumed_call_s = first_call - killed
        assigned = [(t, line) for t, line in survivor.matching(r": assigned ", after=mark) if assigned_partitions(line) & victim_parts]
        if assigned:
            trial.to_assigned_s = assigned[0][0] - killed
        resumed = [(t, line) for t, line in survivor.matching(rf"resuming task ({victim_pattern}) ", after=mark)]
        trial.resumed_victim_tasks = len({re.search(r"resuming task (\S+)", line).group(1) for _, line in resumed})  # type: ignore[union-attr]
        trial.to_all_resumed_s = max(t for t, _ in resumed) - killed
        trial.checkpoint_restore = [line.split(" restored ", 1)[1] for _, line in survivor.matching(r" restored .*checkpoints", after=mark)]

        wanted = {t["task_id"] for t in tasks}
        deadline = time.monotonic() + 180
        while not wanted <= {r["task_id"] for _, r in watcher.of("TaskResult")}:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        got = [r for _, r in watcher.of("TaskResult") if r["task_id"] in wanted]
        if got and wanted <= {r["task_id"] for r in got}:
            trial.to_all_results_s = max(at for at, r in watcher.of("TaskResult") if r["task_id"] in wanted) - killed
        time.sleep(3.0)  # a late duplicate would arrive now
        per_task = Counter(r["task_id"] for _, r in watcher.of("TaskResult") if r["task_id"] in wanted)
        trial.lost = len(wanted - set(per_task))
        trial.duplicate_results = sum(n - 1 for n in per_task.values() if n > 1)
        trial.statuses = dict(Counter(r["status"] for _, r in watcher.of("TaskResult") if r["task_id"] in wanted))
        repeats = Counter((c.task, c.step) for c in calls.snapshot() if c.task in wanted)
        repeated = {key: n for key, n in repeats.items() if n > 1}
        trial.repeated_calls_victim_tasks = sum(n - 1 for (task, _), n in repeated.items() if task in victim_tasks)
        trial.repeated_calls_survivor_tasks = sum(n - 1 for (task, _), n in repeated.items() if task not in victim_tasks)
        per_task_repeats = Counter()
        for (task, _), n in repeated.items():
            per_task_repeats[task] += n - 1
        trial.max_repeats_per_task = max(per_task_repeats.values(), default=0)
    except (TimeoutError, RuntimeError) as exc:
        trial.error = str(exc)
    finally:
        codes = stack.stop_all(60)
        trial.survivor_exit = codes.get("billing-b")
        if os.environ.get(KEEP_LOGS_ENV):
            stack.keep_logs(Path(os.environ[KEEP_LOGS_ENV]) / f"recovery-{stack.prefix}")
        if calls.is_alive():
            calls.stop()
        if watcher.is_alive():
            watcher.stop()
        stack.delete_topics()
        shutil.rmtree(base, ignore_errors=True)
    return trial


def _s(seconds: float, width: int) -> str:
    return f"{'—':>{width}} " if math.isnan(seconds) else f"{seconds:>{width}.2f}s"


def print_report(baseline: list[BaselineTrial], trials: list[Trial], broker_name: str = "", protocol: str = "") -> None:
    if broker_name:
        print(f"\nbroker: {broker_name}; group protocol: {protocol}")
    print(f"\n{'':<22}{'→ revoked':>10}{'→ assigned':>11}{'→ resume line':>14}{'→ resumed call':>15}{'→ all resumed':>14}"
          f"{'→ all results':>14}")
    for i, b in enumerate(baseline, 1):
        if b.error:
            print(f"{'raw group #' + str(i):<22} ERROR {b.error.splitlines()[0]}")
        else:
            print(f"{'raw group #' + str(i):<22}{_s(b.to_revoked_s, 9)}{_s(b.to_assigned_s, 10)}")
    for i, t in enumerate(trials, 1):
        if t.error:
            print(f"{'agents #' + str(i):<22} ERROR {t.error.splitlines()[0]}")
            continue
        print(f"{'agents #' + str(i):<22}{_s(t.to_revoked_s, 9)}{_s(t.to_assigned_s, 10)}{_s(t.to_first_resume_line_s, 13)}"
              f"{_s(t.to_first_resumed_call_s, 14)}{_s(t.to_all_resumed_s, 13)}{_s(t.to_all_results_s, 13)}")
    print("(seconds from SIGKILL; raw group: bare confluent-kafka members with the same consumer settings;\n"
          " — under → revoked: the survivor revoked nothing, as with KIP-848's incremental assignment)")
    print(f"\n{'':<12}{'in flight on victim':>20}{'lost':>6}{'dup. results':>13}{'repeated calls (victim/survivor tasks)':>40}"
          f"{'max/task':>9}  statuses")
    for i, t in enumerate(trials, 1):
        if not t.error:
            print(f"{'agents #' + str(i):<12}{t.in_flight_on_victim:>20}{t.lost:>6}{t.duplicate_results:>13}"
                  f"{f'{t.repeated_calls_victim_tasks} / {t.repeated_calls_survivor_tasks}':>40}{t.max_repeats_per_task:>9}  "
                  f"{json.dumps(t.statuses)}")
    types = sorted({x.group_type for x in [*baseline, *trials] if x.group_type})
    if types:
        print(f"  group type as the broker describes it: {', '.join(types)}")
    for i, t in enumerate(trials, 1):
        for line in t.checkpoint_restore:
            print(f"  agents #{i} survivor restored {line}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["member"]:
        return member_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100, help="tasks in flight on the victim (and as many on the survivor)")
    parser.add_argument("--latency", default="2", help="scripted model seconds per call, or a range lo-hi (default 2)")
    parser.add_argument("--kill-at-step", type=int, choices=(0, 1), default=1, help="kill once every victim task made this call")
    parser.add_argument("--trials", type=int, default=2, help="agent-stack trials (default 2)")
    parser.add_argument("--baseline-trials", type=int, default=2, help="bare consumer-group trials (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one trial of each")
    parser.add_argument("--quiet-wait", type=float, default=15.0)
    parser.add_argument("--group-protocol", choices=GROUP_PROTOCOLS,
                        default=os.environ.get(GROUP_PROTOCOL_ENV, "").strip().lower() or "classic",
                        help=f"of the workers ({GROUP_PROTOCOL_ENV}) and the baseline members: classic, or consumer "
                             f"(KIP-848, Apache Kafka 4 only); default ${GROUP_PROTOCOL_ENV}, else classic")
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.baseline_trials, args.quiet_wait = 1, 1, 3.0
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    baseline: list[BaselineTrial] = []
    trials: list[Trial] = []
    with broker(args.broker) as (bootstrap, _, broker_name):
        print(f"recovery bench: {args.tasks} tasks in flight on the victim + {args.tasks} on the survivor, model latency "
              f"{args.latency} s, kill at step {args.kill_at_step}; broker {broker_name}, group protocol "
              f"{args.group_protocol}; {host['nproc']} x {host['cpu_model']}")
        for i in range(max(args.trials, args.baseline_trials)):
            if i < args.baseline_trials:
                wait_for_quiet(args.quiet_wait)
                b = run_baseline(bootstrap, args.group_protocol)
                baseline.append(b)
                print(f"  raw group #{i + 1}: {b.error or f'survivor assigned {b.to_assigned_s:.2f} s after the kill'}", flush=True)
            if i < args.trials:
                wait_for_quiet(args.quiet_wait)
                t = run_trial(bootstrap, args.tasks, args.latency, args.kill_at_step, args.group_protocol)
                trials.append(t)
                status = t.error or (f"first resumed call {t.to_first_resumed_call_s:.2f} s after the kill; {t.lost} lost, "
                                     f"{t.duplicate_results} duplicate results")
                print(f"  agents #{i + 1}: {status}", flush=True)
    print_report(baseline, trials, broker_name, args.group_protocol)
    ok = [t for t in trials if t.error is None]
    summary = {
        "raw_group_to_assigned_s_median": statistics.median([b.to_assigned_s for b in baseline if not b.error] or [float("nan")]),
        "agents_to_first_resumed_call_s_median": statistics.median([t.to_first_resumed_call_s for t in ok] or [float("nan")]),
        "lost_total": sum(t.lost for t in ok),
        "duplicate_results_total": sum(t.duplicate_results for t in ok),
    }
    report = {
        "benchmark": "recovery",
        "started": stamp,
        "command": "python -m bench.recovery " + " ".join(argv),
        "machine": host,
        "source": source_state("runtime", "specialist", "supervisor", "router"),
        "broker": broker_name,
        "broker_kind": broker_kind(broker_name),
        "group_protocol": args.group_protocol,
        "config": {"tasks_per_worker": args.tasks, "latency": args.latency, "kill_at_step": args.kill_at_step},
        "baseline": [asdict(b) for b in baseline],
        "trials": [asdict(t) for t in trials],
        "summary": summary,
    }
    out = write_report("recovery", stamp, report)
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0 if all(t.error is None and t.lost == 0 and t.duplicate_results == 0 for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
