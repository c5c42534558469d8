"""The support desk's commented-out candidate works once uncommented, as a canary and as a
shadow: it loads, it is a version of its own, and its scripted model calls the tools the
live version calls (a candidate without the live scripted rules would call none)."""

from __future__ import annotations

import asyncio
import re

import pytest

from agentstream.specialist.app import build_agent
from agentstream.specialist.inprocess import eval_task, run_in_process
from agentstream.topology import DEFAULT_PATH, Topology, parse_topology

# "    # candidate:" and the lines under it ("    #   mode: ...") without their comment mark.
_COMMENTED_CANDIDATE = re.compile(r"^    # (candidate:|  \S)", re.MULTILINE)


def _uncommented(mode: str) -> Topology:
    text, found = _COMMENTED_CANDIDATE.subn(r"    \1", DEFAULT_PATH.read_text(encoding="utf-8"))
    assert found == 5, "the example's commented candidate changed shape; update this test"
    return parse_topology(text.replace("mode: canary", f"mode: {mode}"), DEFAULT_PATH)


@pytest.mark.parametrize(("mode", "worker"), [("canary", "billing.candidate"), ("shadow", "billing.shadow")])
def test_the_examples_candidate_runs_the_live_versions_tools_when_uncommented(mode: str, worker: str) -> None:
    topology = _uncommented(mode)
    live, candidate = build_agent("billing", topology), build_agent(worker, topology)
    assert candidate.prompt != live.prompt and candidate.version != live.version
    task = eval_task("inv", "What is the status of INV-1002?", "billing")
    ran = [asyncio.run(run_in_process(agent, task)) for agent in (live, candidate)]
    assert "lookup_invoice" in ran[0].outcome.tools_used and ran[1].outcome.tools_used == ran[0].outcome.tools_used
    assert ran[1].outcome.status == "COMPLETED" and "INV-1002" in (ran[1].outcome.output or "")
