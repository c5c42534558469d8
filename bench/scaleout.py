"""Scale-out benchmark: 1, 2, 3 … billing specialist processes in ONE consumer group on the
same partitions, on one machine: completed tasks/s in total and per process, and what each
process costs.

    python -m bench.scaleout [--processes 1,2,3] [--loads cpu,wait] [--latency 1] [--max-inflight 64]
                             [--window 20] [--ramp 10] [--partitions 12] [--quick]

One trial per load and process count N: a fresh topic prefix and topics, one router, one
supervisor and N specialists (real processes, ``agentstream worker specialist``, a cap
through ``AGENTSTREAM_MAX_INFLIGHT``; until session 10 a capped one ran ``python -m
bench._procs specialist``, without the CLI's collector tuning), each billing task in its own session so
per-session order serialises nothing. Tasks are offered faster than they finish (the
:class:`bench._procs.Feeder` keeps ``N × outstanding-per-process`` tasks without a
specialist result), so a queue always waits in front of every process.

- **Partitions.** Every per-session topic (co-partitioning makes them equal) gets
  ``--partitions`` (default 12) through a copy of the support-desk topology: 12 divides
  evenly among 1, 2, 3, 4, 6 and 12 processes, so each process gets the same share, and it
  is the topic the "on paper" 12-process figure is about. (6 would do for 1–3 processes but
  not for the extrapolation.)
- **Group ready** (a condition, not a sleep): before the warm-up the N specialists' own
  ``assigned`` / ``revoked`` log lines, applied in order, must show each one owning at least
  one partition and together all of them, none twice. Assignment lines during the window are
  counted (``rebalances_in_window``; a trial with any is flagged).
- **Per process.** A task's specialist result goes to the supervisor topic keyed by its
  session, so its partition there is the partition the task was consumed from; the owner of
  that partition during the window is the process that ran it.
- **Loads.** ``cpu``: model latency 0, the CLI's default cap (256): every task is pure CPU
  (router, specialist loop, tools, supervisor, broker), so total throughput is bounded by the
  machine's cores; on 2 cores it saturates near 2 processes' worth (the router, supervisor
  and broker share those cores). ``wait``: ``--latency`` s per model call (default 1, two
  calls per task) and a per-process ``--max-inflight`` cap (default 64): each process is
  bounded by cap ÷ (2 × latency) tasks/s at a fraction of a core, so the total should scale
  linearly with N while the machine has cores to spare.
- **After the window** the feeder stops and every submitted task is waited for (up to a
  timeout): each must have exactly one specialist result and one final result.
- **CPU** (psutil, every 0.5 s): cores each process used over the window and specialist CPU
  ms per completed task; router, supervisor, broker, this process and everyone else too.
- **On paper** (printed and in the JSON): 12 processes on 12 partitions on a machine with a
  core for every process, from the largest N measured per load: ``wait``, 12 × the
  per-process tasks/s; ``cpu``, 12 × 1000 ÷ specialist CPU ms per task (each process owning
  one core; its Python main thread is what bounds it). The single router and supervisor of
  these trials are each capped at 1000 ÷ their CPU ms per task (one core, same reason): the
  figure is the smaller of the two, and says which bound it.

Output: a table and ``bench/out/scaleout-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentstream.topology import DEFAULT_PATH
from bench._procs import (
    KEEP_LOGS_ENV, REPO, AgentStack, Feeder, Proc, ResourceSampler, TopicWatcher, add_trial_arguments, billing_task,
    broker, group_type, machine, owned_partitions, report_header, wait_until, write_report,
)
from bench.relay import wait_for_quiet
from tests.support_desk import copy_app

AGENT = "billing"
ON_PAPER_PROCESSES = 12


@dataclass(frozen=True)
class Load:
    name: str
    latency_s: float
    max_inflight: int | None  # None: the CLI's default (256)
    outstanding_per_process: int  # tasks the feeder keeps without a specialist result, per process


@dataclass
class ProcessFigures:
    name: str
    partitions: list[int]
    tasks: int = 0  # specialist results finished in the window, on this process's partitions
    tasks_per_s: float = 0.0
    cores: float = 0.0
    cpu_ms_per_task: float = float("nan")
    rss_mb: float = 0.0


@dataclass
class Trial:
    load: str
    processes: int
    latency_s: float
    max_inflight: int | None
    partitions: int
    window_s: float
    ramp_s: float
    group_ready_s: float = float("nan")  # specialists started → every one owns partitions
    group_type: str = ""
    submitted: int = 0
    completed_in_window: int = 0
    tasks_per_s: float = 0.0
    scaling: float = float("nan")  # tasks/s ÷ (N × tasks/s at N = 1, same load)
    calls_per_task: float = float("nan")  # model calls per completed task
    ideal_tasks_per_s: float = float("nan")  # wait load: N × cap ÷ (calls per task × latency)
    per_process: list[ProcessFigures] = field(default_factory=list)
    cores: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_task: dict[str, float] = field(default_factory=dict)  # router, supervisor, broker, specialists
    saturated: bool = False  # the machine's cores were ≥ 90 % busy over the window (anyone's load)
    rebalances_in_window: int = 0
    specialist_results: int = 0  # distinct measured tasks with a specialist result, after the drain
    final_results: int = 0  # distinct measured tasks with a TaskResult, after the drain
    duplicate_results: int = 0  # extra specialist or final results of one task
    exit_codes: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def partitioned_topology(directory: Path, partitions: int) -> Path:
    """A copy of the support-desk app whose per-session topics have ``partitions`` partitions."""
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    raw["default_partitions"] = partitions
    path = copy_app(directory)  # the app's tools, data and prompts, next to the edited topology
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def group_settled(specialists: list[Proc], partitions: int) -> bool:
    """Every specialist owns partitions; together all of them, none twice."""
    owned = [owned_partitions(p) for p in specialists]
    return all(owned) and sum(map(len, owned)) == partitions and set().union(*owned) == set(range(partitions))


class Run:
    """One trial's processes and observers."""

    def __init__(self, bootstrap: str, base: Path, topology_path: Path, load: Load, n: int) -> None:
        self.stack = AgentStack(bootstrap, base, latency=f"{load.latency_s:g}" if load.latency_s else "",
                                topology_path=topology_path, call_log=False)
        topology = self.stack.topology
        self.partitions = topology.topic_spec(topology.agent(AGENT).input).partitions
        self.stack.start("router", "router")
        self.stack.start("supervisor", "supervisor")
        self.started = time.monotonic()
        self.specialists = [self.stack.start(f"{AGENT}-{i + 1}", "specialist", agent_type=AGENT,
                                             max_inflight=load.max_inflight) for i in range(n)]
        topics = [topology.topic("supervisor"), topology.topic("results")]
        self.watcher = TopicWatcher(bootstrap, topics, self.stack.schemas, self.partitions)
        self.run_id = uuid.uuid4().hex[:6]
        self.feeder = Feeder(self.stack, n * load.outstanding_per_process, self.run_id)
        self.watcher.on_record(self.feeder.on_record)
        self.sampler: ResourceSampler | None = None

    def wait_ready(self) -> float:
        """Until the group settled and warm-up tasks went through; the seconds the group took."""
        self.stack.wait_assigned()
        wait_until(lambda: group_settled(self.specialists, self.partitions), 120,
                   f"{len(self.specialists)} specialists to share the {self.partitions} partitions")
        ready = time.monotonic() - self.started
        self.watcher.start()
        warm = [billing_task(i, f"warm{self.run_id}", f"w-{self.run_id}-{i}") for i in range(self.partitions)]
        self.stack.submit(warm)
        wait_until(lambda: len(self.watcher.of("TaskResult")) >= len(warm), 60, "results of the warm-up tasks")
        return ready

    def results(self, schema: str) -> Counter[str]:
        mine = f"t-{self.run_id}-"
        return Counter(r["task_id"] for _, r in self.watcher.of(schema) if r["task_id"].startswith(mine))

    def drain(self, timeout: float) -> None:
        """Stop offering tasks, then wait for a final result of every submitted one."""
        self.feeder.stopping.set()
        self.feeder.join(30)
        if self.feeder.error is not None:
            raise self.feeder.error
        wait_until(lambda: len(self.results("TaskResult")) >= self.feeder.submitted, timeout,
                   f"final results of all {self.feeder.submitted} submitted tasks")

    def stop(self, stop_timeout: float) -> dict[str, int]:
        codes = self.stack.stop_all(stop_timeout)  # first: nothing below may leave workers running
        self.feeder.stopping.set()
        if self.sampler is not None:
            self.sampler.stop()
        if self.watcher.is_alive():
            self.watcher.stop()
        self.stack.delete_topics()
        return codes


def run_trial(bootstrap: str, broker_pid: int | None, topology_path: Path, load: Load, n: int,
              window: float, ramp: float, stop_timeout: float) -> Trial:
    base = Path(tempfile.mkdtemp(prefix=f"scaleout-{load.name}-{n}-"))
    run = Run(bootstrap, base, topology_path, load, n)
    trial = Trial(load.name, n, load.latency_s, load.max_inflight, run.partitions, window, ramp)
    try:
        trial.group_ready_s = round(run.wait_ready(), 2)
        trial.group_type = group_type(bootstrap, run.stack.topology.group(AGENT))
        pids = {name: w.pid for name, w in run.stack.workers.items()} | {"bench": os.getpid()}
        if broker_pid is not None:
            pids["broker"] = broker_pid
        run.sampler = ResourceSampler(pids)
        run.sampler.start()
        run.feeder.start()
        fed_from = time.monotonic()
        time.sleep(ramp)  # the warm-up before the window: a span of load, not a wait for a condition
        marks = [p.line_count() for p in run.specialists]
        owners = {p.name: sorted(owned_partitions(p)) for p in run.specialists}
        window_start = time.monotonic()
        time.sleep(window)
        window_end = time.monotonic()
        trial.rebalances_in_window = sum(
            len([t for t, _ in p.matching(r": (assigned|revoked|lost) ", after=mark) if t <= window_end])
            for p, mark in zip(run.specialists, marks, strict=True))
        finished = len(run.results("SpecialistResult"))
        rate = max(1.0, finished / (window_end - fed_from))
        run.drain(60 + 3 * (run.feeder.submitted - finished) / rate)  # the backlog at the pace so far, and room
        summarize(trial, run, owners, window_start, window_end)
        trial.error = why_invalid(trial)
    except (TimeoutError, RuntimeError) as exc:
        trial.error = str(exc)
    finally:
        trial.exit_codes = run.stop(stop_timeout)
        if os.environ.get(KEEP_LOGS_ENV):
            run.stack.keep_logs(Path(os.environ[KEEP_LOGS_ENV]) / f"scaleout-{load.name}-{n}-{run.run_id}")
        shutil.rmtree(base, ignore_errors=True)
    return trial


def why_invalid(trial: Trial) -> str | None:
    """Why the trial's figures cannot stand, if they cannot: a rebalance in the window makes
    the split by owner wrong; every submitted task must have one specialist and one final result."""
    if trial.rebalances_in_window:
        return f"{trial.rebalances_in_window} assignment changes in the window: the split by owner is wrong"
    if trial.duplicate_results:
        return f"{trial.duplicate_results} duplicate results"
    if not trial.specialist_results == trial.final_results == trial.submitted:
        return (f"{trial.submitted} submitted, {trial.specialist_results} specialist results, "
                f"{trial.final_results} final results")
    return None


def summarize(trial: Trial, run: Run, owners: dict[str, list[int]], start: float, end: float) -> None:
    """Tasks finished in the window (the specialists' wall-clock ``finished_at``), split by owner."""
    assert run.sampler is not None
    offset = time.time() - time.monotonic()  # monotonic → wall
    w0, w1 = (start + offset) * 1000, (end + offset) * 1000
    mine = f"t-{run.run_id}-"
    done = [(partition, r) for partition, r in run.watcher.partitioned("SpecialistResult")
            if r["task_id"].startswith(mine) and w0 <= r["finished_at"] < w1]
    seconds = (w1 - w0) / 1000
    trial.submitted = run.feeder.submitted
    trial.completed_in_window = len(done)
    trial.tasks_per_s = len(done) / seconds
    if done:
        trial.calls_per_task = statistics.fmean(r["usage"]["llm_calls"] for _, r in done)
    if trial.latency_s and trial.max_inflight:
        trial.ideal_tasks_per_s = trial.processes * trial.max_inflight / (trial.calls_per_task * trial.latency_s)
    specialist, final = run.results("SpecialistResult"), run.results("TaskResult")
    trial.specialist_results, trial.final_results = len(specialist), len(final)
    trial.duplicate_results = sum(c - 1 for c in specialist.values()) + sum(c - 1 for c in final.values())
    window = run.sampler.between(start, end)
    if len(window) < 2:
        raise RuntimeError(f"{len(window)} CPU samples in a {seconds:.1f} s window: use a longer --window")
    (t0, first), (t1, last) = window[0], window[-1]
    trial.cores = {name: round((last[name][0] - first[name][0]) / (t1 - t0), 3) for name in last if name in first}
    ours = sum(trial.cores.values())
    trial.cores["machine"] = round(run.sampler.machine_between(t0, t1), 3)
    trial.cores["others"] = round(trial.cores["machine"] - ours, 3)
    trial.saturated = trial.cores["machine"] >= 0.9 * len(os.sched_getaffinity(0))
    for name, partitions in owners.items():
        tasks = sum(1 for partition, _ in done if partition in partitions)
        figures = ProcessFigures(name, partitions, tasks, tasks / seconds, trial.cores.get(name, 0.0))
        if tasks:
            figures.cpu_ms_per_task = figures.cores * 1000 / figures.tasks_per_s
        figures.rss_mb = statistics.fmean([s[name][1] for _, s in window if name in s] or [0]) / 2**20
        trial.per_process.append(figures)
    specialist_cores = sum(p.cores for p in trial.per_process)
    for name, cores in (("router", trial.cores.get("router")), ("supervisor", trial.cores.get("supervisor")),
                        ("broker", trial.cores.get("broker")), ("specialists", specialist_cores)):
        if cores is not None and trial.tasks_per_s:
            trial.cpu_ms_per_task[name] = round(cores * 1000 / trial.tasks_per_s, 2)


def add_scaling(trials: list[Trial]) -> None:
    single = {t.load: t.tasks_per_s for t in trials if t.processes == 1 and not t.error and t.tasks_per_s}
    for t in trials:
        if t.load in single and not t.error:
            t.scaling = t.tasks_per_s / (t.processes * single[t.load])


def on_paper(trials: list[Trial], processes: int = ON_PAPER_PROCESSES) -> dict[str, dict[str, Any]]:
    """``processes`` specialists on as many partitions, each with a core to itself, from the
    largest N measured per load (see the module docstring for the assumptions)."""
    out: dict[str, dict[str, Any]] = {}
    for load in dict.fromkeys(t.load for t in trials):
        measured = [t for t in trials if t.load == load and not t.error and t.tasks_per_s]
        if not measured:
            continue
        t = max(measured, key=lambda x: x.processes)
        specialist_ms = t.cpu_ms_per_task["specialists"]
        per_process = t.tasks_per_s / t.processes if load == "wait" else 1000 / specialist_ms
        specialists = processes * per_process
        ceilings = {name: 1000 / ms for name, ms in t.cpu_ms_per_task.items() if name in ("router", "supervisor") and ms}
        bound_by, total = min([("specialists", specialists), *ceilings.items()], key=lambda kv: kv[1])
        out[load] = {
            "from_processes": t.processes,
            "per_process_tasks_per_s": round(per_process, 2),
            "basis": "measured per-process tasks/s" if load == "wait" else "1000 / specialist CPU ms per task (one core each)",
            "specialists_tasks_per_s": round(specialists, 1),
            "single_router_ceiling": round(ceilings.get("router", math.inf), 1),
            "single_supervisor_ceiling": round(ceilings.get("supervisor", math.inf), 1),
            "tasks_per_s": round(total, 1),
            "bound_by": bound_by,
            "specialist_cores": round(specialists * specialist_ms / 1000, 2),
            "cores_at_that_rate": {name: round(total * ms / 1000, 2) for name, ms in t.cpu_ms_per_task.items()},
        }
    return out


def print_table(trials: list[Trial]) -> None:
    print(f"\n{'load':<6}{'N':>3}{'tasks/s':>9}{'ideal':>7}{'scaling':>9}  {'per process tasks/s':<22}{'cores':<18}"
          f"{'CPU ms/task':<20}{'router':>8}{'superv.':>8}{'broker':>8}{'machine':>8}{'others':>8}")
    for t in trials:
        if t.error:
            print(f"{t.load:<6}{t.processes:>3}  ERROR {t.error.splitlines()[0]}")
            continue
        per = "/".join(f"{p.tasks_per_s:.1f}" for p in t.per_process)
        cores = "/".join(f"{p.cores:.2f}" for p in t.per_process)
        cpu = "/".join(f"{p.cpu_ms_per_task:.1f}" for p in t.per_process)
        c = t.cores
        print(f"{t.load:<6}{t.processes:>3}{t.tasks_per_s:>9.1f}{t.ideal_tasks_per_s:>7.1f}{t.scaling:>9.0%}"
              f"  {per:<22}{cores:<18}{cpu:<20}"
              f"{c.get('router', 0):>8.2f}{c.get('supervisor', 0):>8.2f}{c.get('broker', math.nan):>8.2f}"
              f"{c.get('machine', 0):>8.2f}{c.get('others', 0):>8.2f}")
    print("(tasks/s: specialist results finished in the window; ideal (wait load) = N × cap ÷ (model calls per task"
          " × latency);\n scaling = tasks/s ÷ (N × tasks/s at N = 1);"
          " per process: by the partition of each result; cores: CPU s per s of each process)")
    for t in trials:
        if t.error:
            continue
        parts = ", ".join(f"{p.name} {p.partitions}" for p in t.per_process)
        print(f"  {t.load} N={t.processes}: group ready in {t.group_ready_s:.1f} s ({t.group_type}); {parts}; "
              f"{t.submitted} submitted, {t.final_results} final results, {t.duplicate_results} duplicates, "
              f"{t.rebalances_in_window} assignment changes in the window"
              + ("; the machine's cores were saturated" if t.saturated else ""))


def print_paper(paper: dict[str, dict[str, Any]]) -> None:
    print(f"\nOn paper: {ON_PAPER_PROCESSES} specialist processes on {ON_PAPER_PROCESSES} partitions, a core for each"
          " process, from the largest N measured:")
    for load, p in paper.items():
        print(f"  {load}: {p['per_process_tasks_per_s']:.1f} tasks/s per process ({p['basis']}, N={p['from_processes']})"
              f" → {p['specialists_tasks_per_s']:.0f} tasks/s from the specialists ({p['specialist_cores']:.1f} cores);"
              f" one router caps at {p['single_router_ceiling']:.0f}, one supervisor at {p['single_supervisor_ceiling']:.0f}"
              f" → {p['tasks_per_s']:.0f} tasks/s, bound by the {p['bound_by']}")
        cores = ", ".join(f"{name} {c:.1f}" for name, c in p["cores_at_that_rate"].items())
        print(f"    cores at that rate (this run's CPU ms per task): {cores}")


def loads(args: argparse.Namespace) -> list[Load]:
    known = {
        "cpu": Load("cpu", 0.0, None, 200),
        "wait": Load("wait", args.latency, args.max_inflight, args.max_inflight + 100),
    }
    names = [n for n in args.loads.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown --loads {unknown}: use cpu, wait or cpu,wait")
    return [known[n] for n in names]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,3", help="specialist process counts, one trial each (default 1,2,3)")
    parser.add_argument("--loads", default="cpu,wait",
                        help="cpu (model latency 0) and/or wait (--latency, --max-inflight) (default cpu,wait)")
    parser.add_argument("--latency", type=float, default=1.0, help="scripted model s per call of the wait load (default 1)")
    parser.add_argument("--max-inflight", type=int, default=64, help="per-process cap of the wait load (default 64)")
    parser.add_argument("--partitions", type=int, default=12, help="partitions of every per-session topic (default 12)")
    parser.add_argument("--quick", action="store_true", help="smoke run: processes 1,2, 8 s windows after 5 s ramps")
    add_trial_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.processes, args.window, args.ramp, args.quiet_wait, args.stop_timeout = "1,2", 8.0, 5.0, 5.0, 10.0
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.processes.split(",")]
    if max(counts) > args.partitions:
        raise SystemExit(f"--processes {max(counts)} is above --partitions {args.partitions}: the extra processes "
                         "would get nothing; raise --partitions")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="scaleout-app-") as app, broker(args.broker) as (bootstrap, broker_pid, broker_name):
        topology_path = partitioned_topology(Path(app), args.partitions)
        print(f"scaleout bench: processes {counts}, loads {args.loads}, {args.partitions} partitions, window "
              f"{args.window:g} s after {args.ramp:g} s ramp; broker {broker_name}; {host['nproc']} x {host['cpu_model']}")
        for load in loads(args):
            for n in counts:
                waited = wait_for_quiet(args.quiet_wait)
                trial = run_trial(bootstrap, broker_pid, topology_path, load, n, args.window, args.ramp, args.stop_timeout)
                trials.append(trial)
                status = trial.error or f"{trial.tasks_per_s:.1f} tasks/s"
                print(f"  {load.name} N={n}: {status} (waited {waited:.0f} s for quiet)", flush=True)
    add_scaling(trials)
    paper = on_paper(trials)
    print_table(trials)
    print_paper(paper)
    report = {
        **report_header("scaleout", stamp, argv, host, broker_name, "runtime", "specialist", "router", "supervisor"),
        "config": {"processes": counts, "loads": [asdict(load) for load in loads(args)], "partitions": args.partitions,
                   "window_s": args.window, "ramp_s": args.ramp},
        "trials": [asdict(t) for t in trials],
        "on_paper": paper,
    }
    out = write_report("scaleout", stamp, report)
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0 if all(t.error is None for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
