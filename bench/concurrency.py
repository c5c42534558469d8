"""Concurrency benchmark: how many tasks one specialist process keeps in flight, and at what
share of the ideal throughput, when the model takes a fixed time per call.

    python -m bench.concurrency [--caps 256,512,1024,2048] [--window 20] [--latency 1] [--quick] [--profile]

One trial per cap: a fresh router, supervisor and ONE billing specialist (real processes,
a unique topic prefix), the ScriptedModel sleeping ``--latency`` s per call (each task
makes two model calls: tool round, then answer; the sync demo tools run in between).
Every task has its own session, so per-session order never serialises anything. Tasks
are offered faster than they can finish: the feeder keeps ``cap + max(100, cap/2)`` tasks
outstanding (submitted, no specialist result yet), so a queue always waits in front of
the specialist.

- Every cap runs the specialist through the real CLI (``agentstream worker specialist``)
  with ``AGENTSTREAM_MAX_INFLIGHT``. Until session 10 caps other than the default (256)
  ran ``python -m bench._procs specialist --max-inflight N``, which then lacked the CLI's
  garbage-collector tuning (runtime/collector.py). The cap is checked before each record
  (until commit 74c36d3 only before each poll of up to 500 records, so in flight exceeded
  it by up to a batch).
- In flight at time t: tasks whose loop has started (the specialist's RUNNING event, or
  ``started_at`` of its result) and not finished (``finished_at``), sampled every 100 ms
  over the measured window (after a ramp-up) and time-averaged. No call log is written
  (it would add a file append per model call to the loop being measured).
- Ideal throughput (the baseline, from the same window): in-flight ÷ (model calls per
  task × latency), i.e. what the measured concurrency would give if nothing but the model
  took time. Efficiency = measured ÷ ideal (= ideal task time ÷ measured task time).
- Where a loop waits besides its model, from the specialist's own histograms over the
  window (its metrics port, bench/_worker_metrics.py): the time from producing an
  acknowledged write to its acknowledgement on the loop, the loop's lag, and its commits
  (each a pause of its polling; their share of the window).
- CPU and RSS of the specialist (psutil, every 0.5 s): cores used, CPU ms per completed
  task, RSS growth over the idle process per in-flight task. Cores used by the router,
  supervisor, broker, this process and everything else on the machine are recorded too.

- ``--broker-warm-up S`` (default 30): before the measured trials, one trial at the
  largest cap runs S seconds and is not reported. A freshly started Kafka broker's JVM
  compiles its hot paths under the first thousands of tasks, and its CPU per task falls by
  ~40 % meanwhile (bench/RESULTS.md "A freshly started Kafka broker is slow"): on the 2
  cores it shares with the workers, the first trial would otherwise measure that too.
  ``--broker-warm-up 0`` skips it.

Output: a table, ``bench/out/concurrency-<timestamp>.json`` and a PNG of in-flight over time.
``--profile`` attaches ``py-spy record --gil`` to the specialist of the last trial.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentstream.broker import free_port
from agentstream.settings import METRICS_PORT_ENV
from bench._procs import (
    KEEP_LOGS_ENV, OUT_DIR, REPO, AgentStack, Feeder, ResourceSampler, TopicWatcher, add_trial_arguments, billing_task,
    broker, machine, percentile, report_header, write_report,
)
from bench.relay import start_profiler, stop_profiler, summarize_profile, wait_for_quiet
from bench._worker_metrics import ACKED_WRITE, CHECKPOINT, LOOP_LAG, OFFSET_COMMIT, Snapshot, quantile, scrape

TICK = 0.1


@dataclass
class Trial:
    cap: int
    launcher: str
    latency_s: float
    window_s: float
    ramp_s: float
    submitted: int = 0
    completed_in_window: int = 0
    inflight_mean: float = 0.0
    inflight_p50: float = 0.0
    inflight_min: float = 0.0
    inflight_max: float = 0.0
    calls_per_task: float = 0.0
    tasks_per_s: float = 0.0
    model_calls_per_s: float = 0.0
    ideal_tasks_per_s: float = 0.0
    efficiency: float = 0.0
    task_seconds_p50: float = 0.0
    task_seconds_p95: float = 0.0
    queue_seconds_p50: float = 0.0  # routed → loop started (waiting for a slot)
    # The specialist's own histograms over the window (bench/_worker_metrics.py), ms:
    acked_write_ms: dict[str, float] = field(default_factory=dict)  # p50/p90/p99 produce → acknowledged on its loop
    loop_lag_ms: dict[str, float] = field(default_factory=dict)  # p50/p90/p99 how late its loop ran a timer
    checkpoint_ms: dict[str, float] = field(default_factory=dict)  # p50/p90/p99 of its commits (beside its polls)
    checkpoint_share: float = 0.0  # of the window spent in commits
    offset_commit_ms: dict[str, float] = field(default_factory=dict)  # p50/p90/p99 of their offset commits (no poll meanwhile)
    offset_commit_share: float = 0.0  # of the window spent in offset commits
    cores: dict[str, float] = field(default_factory=dict)
    specialist_cpu_ms_per_task: float = 0.0
    specialist_cpu_ms_per_inflight_task_s: float = 0.0
    rss_idle_mb: float = 0.0
    rss_window_mb: float = 0.0
    rss_kb_per_inflight_task: float = 0.0
    series: list[tuple[float, int]] = field(default_factory=list)  # (s from window start, tasks in flight)
    exit_codes: dict[str, int] = field(default_factory=dict)
    stop_seconds: dict[str, float] = field(default_factory=dict)  # SIGTERM → exit, after the window
    error: str | None = None


def run_trial(bootstrap: str, broker_pid: int | None, cap: int, latency: float, window: float, ramp: float,
              profile_to: Path | None, stop_timeout: float = 15.0) -> Trial:
    trial = Trial(cap, "cli", latency, window, ramp)  # every cap through the CLI now (the column stays for old reports)
    base = Path(tempfile.mkdtemp(prefix=f"concurrency-{cap}-"))
    # No call log: its file append per model call would load the loop being measured.
    stack = AgentStack(bootstrap, base, latency=f"{latency:g}", call_log=False)
    stack.start("router", "router")
    stack.start("supervisor", "supervisor")
    metrics_port = free_port()
    specialist = stack.start("billing", "specialist", max_inflight=cap, env={METRICS_PORT_ENV: str(metrics_port)})
    partitions = stack.topology.topic_spec("supervisor").partitions
    topics = [stack.topology.topic(name) for name in ("supervisor", "results", "task_events")]
    watcher = TopicWatcher(bootstrap, topics, stack.schemas, partitions)
    run = uuid.uuid4().hex[:6]
    feeder = Feeder(stack, cap + max(100, cap // 2), run)
    watcher.on_record(feeder.on_record)
    sampler: ResourceSampler | None = None
    spy = None
    try:
        stack.wait_assigned()
        watcher.start()
        warm = [billing_task(i, f"warm{run}", f"w-{run}-{i}") for i in range(partitions)]
        stack.submit(warm)
        deadline = time.monotonic() + 60
        while len(watcher.of("TaskResult")) < len(warm):
            if time.monotonic() > deadline:
                raise TimeoutError("warm-up tasks got no result within 60 s")
            time.sleep(0.1)
        pids = {name: w.pid for name, w in stack.workers.items()}
        pids["bench"] = os.getpid()  # the feeder and the observers
        if broker_pid is not None:
            pids["broker"] = broker_pid
        sampler = ResourceSampler(pids)
        time.sleep(0.5)  # the specialist idles with its connections up: the RSS floor
        idle = sampler.sample()
        sampler.start()
        if profile_to is not None:
            spy = start_profiler(specialist.pid, profile_to)
        feeder.start()
        time.sleep(ramp)
        window_start = time.monotonic()
        histograms_before = scrape(metrics_port)
        time.sleep(window)
        window_end = time.monotonic()
        waits(trial, histograms_before, scrape(metrics_port), window_end - window_start)
        feeder.stopping.set()
        feeder.join(30)
        if feeder.error is not None:
            raise feeder.error
        time.sleep(0.5)  # results of tasks finished just before the end arrive
        summarize(trial, watcher, sampler, idle, window_start, window_end, run, feeder.submitted)
    except (TimeoutError, RuntimeError) as exc:
        trial.error = str(exc)
    except OSError as exc:  # the specialist's metrics port did not answer
        trial.error = (f"reading the specialist's metrics on port {metrics_port}: {exc}; its log is "
                       f"{base / 'billing.log'} (set {KEEP_LOGS_ENV} to keep it)")
    finally:
        codes = stack.stop_all(stop_timeout)  # first: nothing below may leave workers running
        trial.stop_seconds = {name: round(w.stop_seconds, 1) for name, w in stack.workers.items()}
        feeder.stopping.set()
        if spy is not None:
            stop_profiler(spy)
        if sampler is not None:
            sampler.stop()
        if watcher.is_alive():
            watcher.stop()
        stack.delete_topics()
        if os.environ.get(KEEP_LOGS_ENV):
            stack.keep_logs(Path(os.environ[KEEP_LOGS_ENV]) / f"concurrency-cap{cap}-{run}")
        shutil.rmtree(base, ignore_errors=True)
        trial.exit_codes = codes
    return trial


def waits(trial: Trial, before: dict[str, Snapshot], after: dict[str, Snapshot], window: float) -> None:
    """Where the specialist's loops waited besides the model, over the window: its acked
    writes (6 of them in each task's path: head, 3 steps, transcript, result), its loop, its
    commits (beside its polls) and their offset commits, during which it polls no record (one
    while every slot is taken costs no intake: no task could start then anyway)."""
    for name, into in ((ACKED_WRITE, trial.acked_write_ms), (LOOP_LAG, trial.loop_lag_ms),
                       (CHECKPOINT, trial.checkpoint_ms), (OFFSET_COMMIT, trial.offset_commit_ms)):
        for q in (0.5, 0.9, 0.99):
            into[f"p{round(q * 100)}"] = round(quantile(before[name].buckets, after[name].buckets, q) * 1000, 1)
    trial.checkpoint_share = round((after[CHECKPOINT].total_s - before[CHECKPOINT].total_s) / window, 4)
    trial.offset_commit_share = round((after[OFFSET_COMMIT].total_s - before[OFFSET_COMMIT].total_s) / window, 4)


def summarize(trial: Trial, watcher: TopicWatcher, sampler: ResourceSampler,
              idle: dict[str, tuple[float, int]], start: float, end: float, run: str, submitted: int) -> None:
    """Everything on the wall clock (ms) of this machine: the specialist's timestamps are wall time."""
    offset = time.time() - time.monotonic()  # monotonic → wall
    w0, w1 = (start + offset) * 1000, (end + offset) * 1000
    mine = f"t-{run}-"
    results = {r["task_id"]: r for _, r in watcher.of("SpecialistResult") if r["task_id"].startswith(mine)}
    started: dict[str, float] = {}  # the specialist's RUNNING event: its loop began
    for _, event in watcher.of("TaskEvent"):
        if event["task_id"].startswith(mine) and event["stage"] == "billing" and event["state"] == "RUNNING":
            started.setdefault(event["task_id"], event["at"])
    intervals = [(r["started_at"], r["finished_at"]) for r in results.values()]
    intervals += [(at, float("inf")) for task, at in started.items() if task not in results]
    ticks = [w0 + i * TICK * 1000 for i in range(int((w1 - w0) / (TICK * 1000)) + 1)]
    tasks_at = [sum(1 for s, f in intervals if s <= t < f) for t in ticks]
    trial.series = [(round((t - w0) / 1000, 2), n) for t, n in zip(ticks, tasks_at, strict=True)]
    trial.submitted = submitted
    trial.inflight_mean = statistics.fmean(tasks_at)
    trial.inflight_p50 = statistics.median(tasks_at)
    trial.inflight_min, trial.inflight_max = min(tasks_at), max(tasks_at)
    done = [r for r in results.values() if w0 <= r["finished_at"] < w1]
    seconds = (w1 - w0) / 1000
    trial.completed_in_window = len(done)
    trial.tasks_per_s = len(done) / seconds
    trial.calls_per_task = statistics.fmean(r["usage"]["llm_calls"] for r in done) if done else float("nan")
    trial.model_calls_per_s = trial.tasks_per_s * trial.calls_per_task
    trial.ideal_tasks_per_s = trial.inflight_mean / (trial.calls_per_task * trial.latency_s)
    trial.efficiency = trial.tasks_per_s / trial.ideal_tasks_per_s if trial.ideal_tasks_per_s else float("nan")
    durations = [(r["finished_at"] - r["started_at"]) / 1000 for r in done]
    waits = [(r["started_at"] - r["submitted_at"]) / 1000 for r in done]
    trial.task_seconds_p50, trial.task_seconds_p95 = percentile(durations, 0.5), percentile(durations, 0.95)
    trial.queue_seconds_p50 = percentile(waits, 0.5)
    window = sampler.between(start, end)
    if len(window) >= 2:
        (t0, first), (t1, last) = window[0], window[-1]
        for name in last:
            if name in first:
                trial.cores[name] = round((last[name][0] - first[name][0]) / (t1 - t0), 3)
        ours = sum(trial.cores.values())
        trial.cores["machine"] = round(sampler.machine_between(t0, t1), 3)
        trial.cores["others"] = round(trial.cores["machine"] - ours, 3)
        cpu_ms = (last["billing"][0] - first["billing"][0]) * 1000
        trial.specialist_cpu_ms_per_task = cpu_ms / max(1, trial.tasks_per_s * (t1 - t0))
        trial.specialist_cpu_ms_per_inflight_task_s = cpu_ms / (t1 - t0) / max(trial.inflight_mean, 1e-9)
        rss = [s["billing"][1] for _, s in window if "billing" in s]
        trial.rss_idle_mb = idle["billing"][1] / 2**20
        trial.rss_window_mb = statistics.fmean(rss) / 2**20
        growth_kb = (statistics.fmean(rss) - idle["billing"][1]) / 1024
        trial.rss_kb_per_inflight_task = growth_kb / max(trial.inflight_mean, 1e-9)


def print_table(trials: list[Trial]) -> None:
    print(f"\n{'cap':>6} {'launcher':<13}{'in flight':>10}{'(min-max)':>12}{'tasks/s':>9}{'ideal':>8}{'eff.':>7}"
          f"{'task s p50/p95':>16}{'queue s':>9}{'spec. cores':>12}{'CPU ms/task':>12}{'RSS MB':>8}{'KB/in-flight':>13}")
    for t in trials:
        if t.error:
            print(f"{t.cap:>6} {t.launcher:<13} ERROR {t.error.splitlines()[0]}")
            continue
        print(f"{t.cap:>6} {t.launcher:<13}{t.inflight_mean:>10.0f}{f'({t.inflight_min:.0f}-{t.inflight_max:.0f})':>12}"
              f"{t.tasks_per_s:>9.1f}{t.ideal_tasks_per_s:>8.1f}{t.efficiency:>7.0%}"
              f"{f'{t.task_seconds_p50:.2f}/{t.task_seconds_p95:.2f}':>16}{t.queue_seconds_p50:>9.1f}"
              f"{t.cores.get('billing', 0):>12.2f}{t.specialist_cpu_ms_per_task:>12.1f}{t.rss_window_mb:>8.0f}"
              f"{t.rss_kb_per_inflight_task:>13.1f}")
    print("(in flight: tasks whose loop runs, time-averaged over the window; ideal = in flight ÷ (model calls per task"
          " × latency);\n eff. = tasks/s ÷ ideal; task s: loop start → result; queue s: submitted → loop start)")
    for t in trials:
        if not t.error:
            cores = ", ".join(f"{name} {c:.2f}" for name, c in sorted(t.cores.items()))
            print(f"  cap {t.cap}: {t.model_calls_per_s:.0f} model calls/s, {t.calls_per_task:.2f} per task, "
                  f"{t.submitted} submitted; cores used: {cores}")
            acked, lag = (" / ".join(f"{v:g}" for v in d.values()) for d in (t.acked_write_ms, t.loop_lag_ms))
            print(f"  cap {t.cap}: the specialist's acknowledged writes {acked} ms, its event loop's lag {lag} ms "
                  "(p50 / p90 / p99)")
            commits, offsets = (" / ".join(f"{v:g}" for v in d.values()) for d in (t.checkpoint_ms, t.offset_commit_ms))
            print(f"  cap {t.cap}: its commits {commits} ms (p50 / p90 / p99), {t.checkpoint_share:.1%} of the window "
                  f"(beside its polls); their offset commits {offsets} ms, {t.offset_commit_share:.1%} (no poll meanwhile)")
            if any(code != 0 for code in t.exit_codes.values()):
                print(f"  cap {t.cap}: stopping the workers after the window: exit codes {t.exit_codes}, "
                      f"SIGTERM → exit s {t.stop_seconds} (-9: killed after --stop-timeout)")


def plot(trials: list[Trial], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for t in trials:
        if t.series:
            ax.plot([s[0] for s in t.series], [s[1] for s in t.series], label=f"tasks in flight, cap {t.cap}")
            ax.axhline(t.cap, linestyle=":", linewidth=0.8, color=ax.lines[-1].get_color())
    ax.set_xlabel("seconds into the measured window")
    ax.set_ylabel("tasks in flight (one specialist)")
    ax.set_title("Concurrency: in-flight tasks, scripted model latency fixed")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def warm_the_broker(bootstrap: str, broker_pid: int | None, cap: int, args: argparse.Namespace) -> Trial:
    """One trial of ``args.broker_warm_up`` seconds that is not reported (see the module's
    docstring); raises if it failed, since the trials after it would run on a broker in an
    unknown state."""
    trial = run_trial(bootstrap, broker_pid, cap, args.latency, args.broker_warm_up, min(args.ramp, 5.0), None,
                      args.stop_timeout)
    if trial.error is not None:
        raise RuntimeError(f"the broker warm-up trial failed: {trial.error}; rerun, or skip it with --broker-warm-up 0")
    print(f"  broker warm-up: cap {cap}, {args.broker_warm_up:g} s, {trial.submitted} tasks submitted (not reported)",
          flush=True)
    return trial


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--caps", default="256,512,1024,2048",
                        help="max_inflight per trial; 256 = the CLI default (default 256,512,1024,2048)")
    parser.add_argument("--latency", type=float, default=1.0, help="scripted model seconds per call (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: caps 256,1024, 10 s windows, 10 s warm-up")
    parser.add_argument("--profile", action="store_true", help="py-spy --gil on the specialist of the last trial")
    parser.add_argument("--broker-warm-up", type=float, default=30.0,
                        help="seconds of an unreported trial at the largest cap before the measured ones, so the "
                             "broker is warm (default 30; 0: none)")
    add_trial_arguments(parser)
    args = parser.parse_args(argv)
    if args.broker_warm_up < 0:
        parser.error(f"--broker-warm-up {args.broker_warm_up:g}: give seconds >= 0 (0: no warm-up trial)")
    caps = [int(c) for c in args.caps.split(",")]
    if args.quick:
        caps, args.window, args.ramp, args.quiet_wait, args.stop_timeout = [256, 1024], 10.0, 8.0, 5.0, 10.0
        args.broker_warm_up = min(args.broker_warm_up, 10.0)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    host = machine()
    trials: list[Trial] = []
    profile: dict[str, Any] | None = None
    with broker(args.broker) as (bootstrap, broker_pid, broker_name):
        print(f"concurrency bench: caps {caps}, model latency {args.latency:g} s, window {args.window:g} s after "
              f"{args.ramp:g} s ramp; broker {broker_name}; {host['nproc']} x {host['cpu_model']}")
        warm_up = warm_the_broker(bootstrap, broker_pid, max(caps), args) if args.broker_warm_up else None
        for i, cap in enumerate(caps):
            waited = wait_for_quiet(args.quiet_wait)
            profile_to = OUT_DIR / f"concurrency-{stamp}-profile-cap{cap}.txt" if args.profile and i == len(caps) - 1 else None
            if profile_to is not None:
                OUT_DIR.mkdir(parents=True, exist_ok=True)
            trial = run_trial(bootstrap, broker_pid, cap, args.latency, args.window, args.ramp, profile_to,
                              args.stop_timeout)
            trials.append(trial)
            status = trial.error or (f"{trial.inflight_mean:.0f} in flight, {trial.tasks_per_s:.1f} tasks/s "
                                     f"= {trial.efficiency:.0%} of ideal {trial.ideal_tasks_per_s:.1f}")
            print(f"  cap {cap}: {status} (waited {waited:.0f} s for quiet)", flush=True)
            if profile_to is not None and profile_to.exists():
                profile = {"file": str(profile_to.relative_to(REPO)), "cap": cap, **summarize_profile(profile_to, top=25)}
    print_table(trials)
    png = plot(trials, OUT_DIR / f"concurrency-{stamp}.png")
    if profile is not None:
        total = profile["samples"] or 1
        print(f"\npy-spy --gil on the specialist (cap {profile['cap']}), {profile['samples']} samples, {profile['file']}:")
        for title in ("self", "inclusive"):
            print(f"  by {title}:")
            for name, count in profile[title][:15]:
                print(f"    {100 * count / total:5.1f}%  {name}")
    report = {
        **report_header("concurrency", stamp, argv, host, broker_name, "runtime", "specialist", "models"),
        "config": {"caps": caps, "latency_s": args.latency, "window_s": args.window, "ramp_s": args.ramp,
                   "broker_warm_up_s": args.broker_warm_up},
        "broker_warm_up": asdict(warm_up) if warm_up is not None else None,
        "trials": [asdict(t) for t in trials],
        "plot": str(png.relative_to(REPO)) if png else None,
        "profile": profile,
    }
    out = write_report("concurrency", stamp, report)
    print(f"\nwrote {out.relative_to(REPO)}" + (f" and {png.relative_to(REPO)}" if png else ""))
    return 0 if all(t.error is None for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
