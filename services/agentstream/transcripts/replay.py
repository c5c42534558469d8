"""``agentstream replay TASK_ID [--agent A] [--version live|candidate|PATH]``.

Runs a recorded task's agent loop again, in-process (specialist/inprocess.py), from its
transcript:

- exact (no ``--version``): the model answers with the recorded replies, tools with the
  recorded results, under the settings of the version that ran (the transcript's
  ``variant``: a canary's run replays with the candidate's prompt and limits, a live run
  with the live ones); the run must take the same steps and give the same answer, byte
  for byte — a check that the loop, the prompt assembly and the record agree;
- ``--version V``: the real model of version V (its prompt and model settings) runs,
  tools are answered from the recorded results where the call matches and refused
  otherwise, so nothing acts on the world.

Either way it prints the first step where the two runs part (both sides), if any.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TextIO

from agentstream.controls.registry import ModelControls
from agentstream.controls.settings import ControlSettings
from agentstream.errors import ConfigurationError
from agentstream.rollout.config import CANARY, VARIANT_SUFFIX
from agentstream.specialist.agent import SpecialistAgent
from agentstream.specialist.app import build_agent
from agentstream.specialist.inprocess import CANDIDATE, LIVE, InProcessRun, run_in_process, version_worker
from agentstream.specialist.model_chains import ModelChains
from agentstream.topology import Topology
from agentstream.transcripts.divergence import Divergence, first_divergence
from agentstream.transcripts.record import steps_of, task_of
from agentstream.transcripts.recorded import RecordedModel, RecordedTools


@dataclass(frozen=True)
class Replay:
    """A recorded run and its replay, compared."""

    transcript: dict[str, Any]
    version: str | None  # None: exact
    behavior_version: str  # of the replaying agent
    rerun: InProcessRun
    divergence: Divergence | None

    @property
    def same_answer(self) -> bool:
        return self.rerun.outcome.output == self.transcript["output"]

    @property
    def reproduced(self) -> bool:
        return self.same_answer and self.divergence is None and self.rerun.outcome.status == self.transcript["status"]


def recorded_version(transcript: dict[str, Any]) -> str:
    """The version whose settings ran ``transcript``: ``candidate`` for a canary's run, else
    ``live`` (a shadow writes no transcripts)."""
    return CANDIDATE if transcript.get("variant") == VARIANT_SUFFIX[CANARY] else LIVE


def _recorded_worker(transcript: dict[str, Any], live: Topology) -> tuple[Topology, str]:
    agent_type = str(transcript["agent_type"])
    if recorded_version(transcript) == LIVE:
        return version_worker(live, agent_type, LIVE)
    try:
        return version_worker(live, agent_type, CANDIDATE)
    except ConfigurationError as exc:  # the candidate was promoted or removed since
        raise ConfigurationError(
            f"Task {transcript['task_id']!r} was run by {agent_type}'s canary candidate (behavioral version "
            f"{transcript['behavior_version']}), and an exact replay takes that version's settings, but: {exc}") from None


def replaying_agent(transcript: dict[str, Any], live: Topology, version: str | None) -> SpecialistAgent:
    """The agent that replays ``transcript``: the settings of the version that ran it with
    the recorded replies (exact), or ``version``'s settings and real model; recorded tools
    in both."""
    agent_type = str(transcript["agent_type"])
    steps = steps_of(transcript)
    if version is None:
        topology, worker = _recorded_worker(transcript, live)
        agent = build_agent(worker, topology)
        # Bare controls: the record holds what the worker's controls let through already.
        agent.models = ModelChains(agent.settings, ModelControls(ControlSettings(), agent=agent_type),
                                   fixed=RecordedModel(steps))
    else:
        topology, worker = version_worker(live, agent_type, version)
        agent = build_agent(worker, topology)
    agent.tools = RecordedTools(agent.tools, steps)
    return agent


async def replay(transcript: dict[str, Any], live: Topology, version: str | None = None) -> Replay:
    agent = replaying_agent(transcript, live, version)
    rerun = await run_in_process(agent, task_of(transcript))
    return Replay(transcript, version, agent.version, rerun, first_divergence(steps_of(transcript), rerun.steps))


def report(done: Replay, out: TextIO) -> int:
    """Print the comparison; the exit code (exact: 0 only when reproduced)."""
    t = done.transcript
    recorded_steps = steps_of(t)
    print(f"task {t['task_id']} (run {t['run_id']}) by {t['agent_type']} ({recorded_version(t)}): recorded {t['status']} "
          f"under behavioral version {t['behavior_version']}, {len(recorded_steps)} steps, {t['owners']} owner(s)", file=out)
    mode = f"exact (recorded model replies and tool results, {recorded_version(t)} settings)" if done.version is None else \
        f"version {done.version} (behavioral version {done.behavior_version}; its model, recorded tool results)"
    outcome = done.rerun.outcome
    print(f"replayed {mode}: {outcome.status}, {len(done.rerun.steps)} steps, {done.rerun.latency_ms} ms", file=out)
    print(done.divergence.describe() if done.divergence else f"the runs agree on all {len(recorded_steps)} steps", file=out)
    print(f"answer: {'identical, byte for byte' if done.same_answer else 'differs'}", file=out)
    if not done.same_answer:
        print(f"  recorded: {t['output']!r}\n  replayed: {outcome.output!r}", file=out)
    if done.version is not None:
        return 0  # a divergence from another version is a finding, not a failure
    return 0 if done.reproduced else 1


def run_command(transcript: dict[str, Any], live: Topology, version: str | None, out: TextIO) -> int:
    return report(asyncio.run(replay(transcript, live, version)), out)
