"""``agentstream eval CASES.yaml --agent AGENT [--app DIR] [--version ...] [--threshold T]``.

Each case runs in-process through the specialist's own loop (specialist/inprocess.py:
the worker's code, steps kept in memory instead of checkpointed). In-process rather than
through the pipeline because an eval judges one agent type's behaviour: the router's
choice and the supervisor's review are not under test, a case's cost, latency and steps
are its own and not a pipeline's queueing, no broker is needed (CI gates a prompt change
offline), and no production topic or session sees eval traffic. Cases run one after the
other, so each latency is one run's.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from agentstream.errors import ConfigurationError
from agentstream.evals import scorers
from agentstream.evals.cases import DEFAULT_THRESHOLD, Case, CaseSet, Check, load_cases
from agentstream.evals.held_tools import HeldTools
from agentstream.evals.judge import Judge, judge_for
from agentstream.evals.scorers import Score
from agentstream.rollout.dry_run import side_effecting
from agentstream.specialist.agent import SpecialistAgent
from agentstream.specialist.app import build_agent
from agentstream.specialist.inprocess import InProcessRun, eval_task, run_in_process, version_worker
from agentstream.topology import Topology


@dataclass(frozen=True)
class CaseResult:
    case: Case
    run: InProcessRun
    scores: list[Score]

    @property
    def score(self) -> float:
        return statistics.fmean(s.score for s in self.scores)

    @property
    def passed(self) -> bool:
        return self.run.outcome.status == self.case.status and all(s.passed for s in self.scores)

    @property
    def cost_usd(self) -> float:
        """What the agent's run cost."""
        return float(self.run.outcome.usage.get("cost_usd", 0.0))

    @property
    def judge_cost_usd(self) -> float:
        """What grading the answer cost (the LLM judge's calls), apart from the run's."""
        return sum(s.cost_usd for s in self.scores)

    def why(self) -> str:
        reasons = [f"status {self.run.outcome.status}, expected {self.case.status}"] \
            if self.run.outcome.status != self.case.status else []
        return "; ".join(reasons + [f"{s.scorer}: {s.detail}" for s in self.scores if not s.passed])


async def score(check: Check, case: Case, output: str, judge: Judge) -> Score:
    if check.contains is not None:
        return scorers.contains(output, check.contains)
    if check.regex is not None:
        return scorers.regex(output, check.regex)
    if check.exact is not None:
        return scorers.exact(output, check.exact)
    assert check.llm_judge is not None  # Check allows exactly one scorer
    return await judge.grade(check.llm_judge, case.input, output)


async def evaluate(cases: CaseSet, agent: SpecialistAgent, judge: Judge) -> list[CaseResult]:
    results = []
    for case in cases.cases:
        run = await run_in_process(agent, eval_task(case.id, case.input, agent.agent_type, case.tier))
        output = run.outcome.output or ""
        results.append(CaseResult(case, run, [await score(check, case, output, judge) for check in case.expect]))
    return results


def eval_agent(topology: Topology, agent_type: str) -> SpecialistAgent:
    """The agent as its topology builds it, with its side-effecting tools refused."""
    agent = build_agent(agent_type, topology)
    settings = topology.agent(agent_type)
    agent.tools = HeldTools(agent.tools, side_effecting(agent.tools, settings.tools, settings.approvals))
    return agent


def report(results: list[CaseResult], threshold: float, title: str, out: TextIO) -> int:
    """The table and the summary; the exit code (1: the pass rate is under ``threshold``)."""
    width = max(len("case"), *(len(r.case.id) for r in results))
    print(title, file=out)
    print(f"{'case':{width}}  {'score':>5}  {'pass':4}  {'cost':>10}  {'judge':>10}  {'latency':>8}  {'steps':>5}", file=out)
    for r in results:
        print(f"{r.case.id:{width}}  {r.score:5.2f}  {'yes' if r.passed else 'NO':4}  {_usd(r.cost_usd):>10}  "
              f"{_usd(r.judge_cost_usd):>10}  {r.run.latency_ms:6d}ms  {r.run.outcome.steps:5d}"
              + ("" if r.passed else f"  {r.why()}"), file=out)
    passed = sum(r.passed for r in results)
    rate = passed / len(results)
    latencies = [r.run.latency_ms for r in results]
    verdict = "PASS" if rate >= threshold else "FAIL"
    agent_cost, judge_cost = sum(r.cost_usd for r in results), sum(r.judge_cost_usd for r in results)
    print(f"{passed}/{len(results)} passed ({rate:.0%}; threshold {threshold:.0%}): {verdict}; mean score "
          f"{statistics.fmean(r.score for r in results):.2f}, cost ${agent_cost + judge_cost:.6f} (agent "
          f"${agent_cost:.6f}, judge ${judge_cost:.6f}), latency p50 {statistics.median(latencies):.0f} ms, "
          f"max {max(latencies)} ms", file=out)
    return 0 if rate >= threshold else 1


def _usd(amount: float) -> str:
    return f"${amount:.6f}"


def run_command(cases_path: Path, agent_name: str | None, live: Topology, version: str, threshold: float | None,
                out: TextIO) -> int:
    cases = load_cases(cases_path)
    agent_type = agent_name or cases.agent
    if agent_type is None:
        raise ConfigurationError(f"No agent to evaluate: pass --agent, or set `agent:` in {cases_path}; "
                                 f"specialists are {live.specialist_types}.")
    agent = eval_agent(*version_worker(live, agent_type, version))
    judge = judge_for(cases.judge or agent.settings.model_for(), agent.settings)
    results = asyncio.run(evaluate(cases, agent, judge))
    limit = threshold if threshold is not None else cases.threshold if cases.threshold is not None else DEFAULT_THRESHOLD
    title = f"eval {cases_path} on {agent_type} (version {version}, behavioral version {agent.version}):"
    return report(results, limit, title, out)
