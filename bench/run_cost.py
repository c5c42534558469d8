"""Run cost benchmark: the CPU of one specialist run in-process, without a broker, and the
same on another revision in the same run.

    python -m bench.run_cost [--tasks 1000] [--concurrency 50] [--rounds 15] [--against REV]
    python -m bench.run_cost --instructions [--tasks 1000] [--against REV]

What runs: the pipeline benchmark's billing task (a session with 10 remembered turns; two
model calls and two tool calls) through the billing agent as the shipped topology builds
it (the zero-latency ScriptedModel behind its guards, the durable wrappers, history
compression), ``--concurrency`` runs at a time on one event loop, each step record encoded
as the checkpoint table encodes it and then taken as landed; then what the lifecycle builds
at the end of a run (the SpecialistResult, the transcript, and their Avro encodes). Each
round is a fresh process that runs a warm-up and then ``--tasks`` measured runs (rounded up
to whole batches) in 5 parts;
a round's figure is the CPU microseconds per run (``time.process_time``) of its cheapest
part (see PARTS); reported: each round's, and the median and best of the rounds. Every measured run must complete with 2 model calls and 2 tool calls, or the round
fails.

Why: the pipeline benchmark's CPU per task spreads by about ±15 % between levels of one
code on a shared 2-core machine (bench/RESULTS.md, session 19), so a change worth a few
percent of the specialist's CPU is not resolved there. ``--against REV`` checks REV (any
git revision) out in a temporary worktree and runs the rounds of the two trees in pairs, one
right after the other (which goes first alternates), so a swing of the machine falls on both
of a pair; the comparison is the median of the pairs' ratios, with their quartiles. Both
trees run with the same ``PYTHONHASHSEED``, so dict and set layouts do not differ between
rounds by chance.

``--instructions`` counts instead of timing: each tree runs twice under valgrind's
cachegrind (instruction counts only), once with one batch of ``--concurrency`` runs per part
and once with ``--tasks`` more, after the same start-up and warm-up; the difference over the
runs between them is the instructions per run. The count repeats within 0.2 % (one tree counted again: within 10
parts in a million; two checkouts of one revision: 0.17 % apart), where times on this machine
swing by tens of percent while a neighbour is busy, so one pair of trees resolves a change
of half a percent, at the same ``--tasks`` (the collector's passes fall differently in 100
runs than in 1,000: the count per run moves by 1-2 %). What it does not see is time spent
waiting on memory (cache misses): a change that trades instructions for memory traffic
needs the timed rounds too.

What it leaves out, by design: Kafka (produce, delivery reports, the consumer), RocksDB, the
retry chain, TaskEvents and logging — the pipeline benchmark measures a worker with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEXTS = tuple(f"Please check invoice INV-100{k} for me" for k in range(1, 5))  # bench.pipeline's
REMEMBERED_TURNS = 10  # the shipped topology's sessions.remember_turns: a long-lived session
WARMUP_RUNS = 200
# A round's runs are timed in parts and the round counts its cheapest part: on a shared
# machine another tenant's burst only ever adds time, and a part it missed is the code's own
# cost (whole rounds of one code spread by up to 60 % here while a neighbour was busy).
PARTS = 5
HASH_SEED = "1"  # every round's (module docstring)
MEASURED_FOLDERS = ("services", "schemas", "examples")  # the code, schemas and shipped app a round runs
# Instructions only (no cache simulation): the count repeats within 0.2 % (module docstring).
CACHEGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


# -- one round, in the child process (imports the tree on its PYTHONPATH) -------------------
def measure_round(tasks: int, concurrency: int) -> dict[str, Any]:
    """A warm-up, then ``tasks`` runs ``concurrency`` at a time: CPU µs per run."""
    from agentstream.runtime.collector import tune_for_serving
    from agentstream.serde import SchemaSet
    from agentstream.specialist.app import build_agent
    from agentstream.topology import load_topology

    import agentstream

    agent = build_agent("billing", load_topology())
    schemas = SchemaSet.load()
    tune_for_serving()  # the worker's collector settings (runtime/collector.py)
    report = asyncio.run(_rounds(agent, schemas, tasks, concurrency))
    return {**report, "package": str(Path(agentstream.__file__).resolve().parent)}  # which tree this round ran


async def _rounds(agent: Any, schemas: Any, tasks: int, concurrency: int) -> dict[str, Any]:
    history: list[dict[str, Any]] = []
    for number in range(REMEMBERED_TURNS):  # the session's memory, as the router would hand it on
        outcome = await _one(agent, schemas, number, list(history))
        history.append({"task_id": f"memory-{number}", "input": TEXTS[number % len(TEXTS)], "output": outcome.output,
                        "status": "COMPLETED", "agents": ["billing"]})
    await _batch(agent, schemas, 0, WARMUP_RUNS, concurrency, history)
    per_part = tasks // PARTS  # whole batches of `concurrency` (effective_tasks)
    parts = []
    for part in range(PARTS):
        started = time.process_time()
        await _batch(agent, schemas, WARMUP_RUNS + part * per_part, per_part, concurrency, history)
        parts.append(1e6 * (time.process_time() - started) / per_part)
    routed = _routed_task(0, history)
    return {"us_per_run": min(parts), "parts_us_per_run": parts, "runs": per_part * PARTS,
            "routed_task_bytes": len(schemas.encode("RoutedTask", routed))}


async def _batch(agent: Any, schemas: Any, first: int, count: int, concurrency: int, history: list[dict[str, Any]]) -> None:
    for start in range(first, first + count, concurrency):
        size = min(concurrency, first + count - start)
        outcomes = await asyncio.gather(*(_one(agent, schemas, start + k, history) for k in range(size)))
        for outcome in outcomes:
            calls = (outcome.usage.get("llm_calls"), outcome.usage.get("tool_calls"))
            if outcome.status != "COMPLETED" or calls != (2, 2):
                raise SystemExit(f"a run ended {outcome.status} with (model, tool) calls {calls}, not COMPLETED with "
                                 "(2, 2): the measured work is not the pipeline benchmark's billing task")


def _routed_task(number: int, history: list[dict[str, Any]]) -> dict[str, Any]:
    from agentstream.events import now_ms

    return {"task_id": f"task-{number:08d}", "session_id": f"session-{number % 1000:04d}", "tenant_id": "bench",
            "input": TEXTS[number % len(TEXTS)], "submitted_at": now_ms(), "agent_type": "billing", "route": ["billing"],
            "tier": "standard", "metadata": {}, "routed_at": now_ms(), "budget_usd": None, "history": history,
            "router_usage": None, "revision": 0, "feedback": None, "previous_output": None}


async def _one(agent: Any, schemas: Any, number: int, history: list[dict[str, Any]]) -> Any:
    from agentstream import jsoncodec
    from agentstream.events import now_ms
    from agentstream.specialist import checkpoint as ckpt
    from agentstream.specialist.durable import DurableRun
    from agentstream.transcripts.record import TRANSCRIPT, ordered_steps, transcript

    task = _routed_task(number, history)
    records: list[dict[str, Any]] = []

    async def persist(key: str, record: dict[str, Any]) -> None:
        jsoncodec.dumps(record)  # the checkpoint table's encoding; the write then lands at once
        records.append(record)

    started = now_ms()
    outcome = await agent.run(task, DurableRun(ckpt.run_id(task), 0, ckpt.Chain(), persist))
    result = agent.result(task, outcome, started)
    epochs = [[0, 0]]
    schemas.encode(TRANSCRIPT, transcript(task, result, epochs, ordered_steps(epochs, records), now_ms()))
    schemas.encode("SpecialistResult", result)
    return outcome


# -- the parent: rounds in fresh processes, two trees alternating ----------------------------
def child_command(tree: Path, tasks: int, concurrency: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one round on ``tree``."""
    from agentstream.settings import (
        MODEL_ENV,
        SCHEMAS_DIR_ENV,
        SCRIPTED_CALL_LOG_ENV,
        SCRIPTED_FAILURE_RATE_ENV,
        SCRIPTED_LATENCY_ENV,
        TOPOLOGY_ENV,
    )

    # The tree's shipped topology, schemas and zero-latency model, whatever this shell set.
    cleared = (MODEL_ENV, SCHEMAS_DIR_ENV, SCRIPTED_CALL_LOG_ENV, SCRIPTED_FAILURE_RATE_ENV, SCRIPTED_LATENCY_ENV, TOPOLOGY_ENV)
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "services"), str(tree)])
    env["PYTHONHASHSEED"] = HASH_SEED
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--tasks", str(tasks),
               "--concurrency", str(concurrency)]
    return command, env


def run_child(side: str, tree: Path, tasks: int, concurrency: int,
              wrapper: list[str] | None = None) -> tuple[dict[str, Any], str]:
    """One round of ``side`` on ``tree`` (under ``wrapper``, e.g. valgrind): its report and stderr."""
    command, env = child_command(tree, tasks, concurrency)
    done = subprocess.run([*(wrapper or []), *command], cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"A round of {side} failed (exit {done.returncode}); this harness needs build_agent, "
                         f"DurableRun, transcript() and tune_for_serving as they are at 5d61a2b, so an older revision "
                         f"may lack them:\n{(done.stdout + done.stderr)[-3000:]}")
    report = dict(json.loads(lines[-1]))
    if Path(report["package"]) != (tree / "services" / "agentstream").resolve():
        raise SystemExit(f"A round of {side} imported agentstream from {report['package']}, not from {tree}: "
                         "the measurement would be of the wrong code.")
    return report, done.stderr


def instructions_per_run(side: str, tree: Path, tasks: int, concurrency: int) -> dict[str, Any]:
    """Instructions per run on ``tree``: two rounds under cachegrind, one batch of
    ``concurrency`` runs per part and ``tasks`` runs more, after the same start-up and
    warm-up; the difference over the runs between them (start-up, imports and warm-up
    cancel out)."""
    counted = []
    base = PARTS * concurrency  # the same batches as the longer round, only fewer of them
    for measured in (base, base + tasks):
        report, stderr = run_child(side, tree, measured, concurrency, CACHEGRIND)
        found = re.search(r"I\s+refs:\s+([\d,]+)", stderr)
        if found is None:
            raise SystemExit(f"cachegrind printed no instruction count for a round of {side}:\n{stderr[-2000:]}")
        counted.append((report["runs"], int(found.group(1).replace(",", "")), report["routed_task_bytes"]))
    (runs_0, instructions_0, routed), (runs_1, instructions_1, _) = counted
    return {"instructions_per_run": (instructions_1 - instructions_0) / (runs_1 - runs_0), "runs": runs_1 - runs_0,
            "instructions": [instructions_0, instructions_1], "routed_task_bytes": routed, "package": report["package"]}


def worktree_of(revision: str, parent: Path) -> Path:
    """``revision`` checked out (detached) in a new worktree under ``parent``."""
    path = parent / "against"
    done = subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), revision], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"Cannot check out {revision!r} for --against: {done.stderr.strip()}; name a revision of "
                         "this repository (a commit, branch or tag).")
    return path


def remove_worktree(path: Path) -> None:
    removed = subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    if removed.returncode != 0:
        print(f"  (git worktree remove {path}: {removed.stderr.strip()}; deleting the folder and pruning)", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True, timeout=120)


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    costs = [r["us_per_run"] for r in rounds]
    return {"us_per_run": costs, "median": statistics.median(costs), "best": min(costs),
            "routed_task_bytes": rounds[0]["routed_task_bytes"], "runs": rounds[0]["runs"],
            "package": rounds[0]["package"]}


def pair_ratios(these: list[float], those: list[float]) -> dict[str, Any]:
    """The ratios of the rounds run as pairs, and their median and quartiles."""
    ratios = [a / b for a, b in zip(these, those, strict=True)]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (ratios[0],) * 3
    return {"ratios": ratios, "median": median, "q1": q1, "q3": q3, "pairs": len(ratios)}


def commit_of(tree: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True, timeout=30)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *MEASURED_FOLDERS], cwd=tree, capture_output=True,
                           text=True, timeout=30).stdout.strip()
    return done.stdout.strip() + (" + uncommitted changes" if dirty else "")


def compare(args: argparse.Namespace) -> dict[str, Any]:
    trees = {"this tree": REPO}
    scratch = Path(tempfile.mkdtemp(prefix="run-cost-"))
    try:
        if args.against:
            trees[args.against] = worktree_of(args.against, scratch)
        measure = count_instructions if args.instructions else time_rounds
        sides = {name: {"commit": commit_of(tree), **result} for (name, tree), result in
                 zip(trees.items(), measure(trees, args), strict=True)}
    finally:
        for tree in trees.values():
            if tree != REPO:
                remove_worktree(tree)
        shutil.rmtree(scratch, ignore_errors=True)
    return sides


def time_rounds(trees: dict[str, Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for number in range(args.rounds):
        order = list(trees) if number % 2 == 0 else list(reversed(trees))  # neither always goes first
        for name in order:
            rounds[name].append(run_child(name, trees[name], args.tasks, args.concurrency)[0])
            print(f"  round {number + 1}: {name:12s} {rounds[name][-1]['us_per_run']:7.1f} µs CPU per run", flush=True)
    return [summarize(rounds[name]) for name in trees]


def count_instructions(trees: dict[str, Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    if shutil.which(CACHEGRIND[0]) is None:
        raise SystemExit("--instructions needs valgrind on PATH: scripts/install-debian-packages.sh installs it "
                         "(the Debian package valgrind).")
    counted = []
    for name, tree in trees.items():
        counted.append(instructions_per_run(name, tree, args.tasks, args.concurrency))
        print(f"  {name:12s} {counted[-1]['instructions_per_run']:,.0f} instructions per run", flush=True)
    return counted


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000,
                        help="measured runs per round, rounded up to whole batches of every part (default 1000)")
    parser.add_argument("--concurrency", type=int, default=50, help="runs at a time on the loop (default 50)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per tree, each a fresh process (default 15)")
    parser.add_argument("--against", metavar="REV", help="a git revision to measure in the same run, rounds alternating")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per run under valgrind's cachegrind instead of timing rounds "
                             "(deterministic; --tasks runs per tree, --rounds unused)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error(f"--tasks, --concurrency and --rounds must be at least 1 (got {args.tasks}, {args.concurrency}, "
                     f"{args.rounds})")
    if not args.child:
        args.tasks = effective_tasks(args.tasks, args.concurrency)
    elif args.tasks % (PARTS * args.concurrency):
        parser.error(f"a round's --tasks must be a multiple of {PARTS} x --concurrency (got {args.tasks})")
    return args


def effective_tasks(tasks: int, concurrency: int) -> int:
    """``tasks`` rounded up so that every part is whole batches of ``concurrency`` runs: a
    part that ends with a smaller batch costs another amount per run."""
    unit = PARTS * concurrency
    return -(-tasks // unit) * unit


def print_sides(args: argparse.Namespace, sides: dict[str, Any]) -> None:
    """The figures of each tree and, with --against, the comparison (added to ``sides``)."""
    if args.instructions:
        for name, side in sides.items():
            print(f"  {name:12s} ({side['commit']}): {side['instructions_per_run']:,.0f} instructions per run")
        if args.against:
            ratio = sides["this tree"]["instructions_per_run"] / sides[args.against]["instructions_per_run"]
            sides["this tree"]["ratio_to_against"] = ratio
            print(f"  this tree / {args.against}: {ratio:.4f} (instructions)")
        return
    for name, side in sides.items():
        print(f"  {name:12s} ({side['commit']}): median {side['median']:7.1f}, best {side['best']:7.1f} µs CPU per run")
    if args.against:
        ratios = pair_ratios(sides["this tree"]["us_per_run"], sides[args.against]["us_per_run"])
        sides["this tree"]["ratio_to_against"] = ratios
        print(f"  this tree / {args.against}, per pair: median {ratios['median']:.3f} "
              f"(quartiles {ratios['q1']:.3f}-{ratios['q3']:.3f}, {ratios['pairs']} pairs)")


def write_report(argv: list[str] | None, args: argparse.Namespace, stamp: str, sides: dict[str, Any]) -> Path:
    sys.path.insert(0, str(REPO))  # run as a script: bench/ itself is on the path, not the repository
    from bench import _procs

    report = {"benchmark": "run_cost", "started": stamp, "command": "python -m bench.run_cost " + " ".join(argv or sys.argv[1:]),
              "machine": _procs.machine(), "config": {k: v for k, v in vars(args).items() if k != "child"}, "sides": sides}
    # The pid in the name: two runs in one second (the smoke tests, side by side) keep both.
    return _procs.write_report("run_cost", f"{stamp}-{os.getpid()}", report)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so the worktree of --against is removed on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure_round(args.tasks, args.concurrency)))
        return 0
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    how = "counted under cachegrind, once per tree" if args.instructions else f"{args.rounds} timed rounds per tree"
    print(f"run cost: {args.tasks} billing runs per round, {args.concurrency} at a time, {how}")
    sides = compare(args)
    print_sides(args, sides)
    print(f"wrote {write_report(argv, args, stamp, sides).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
