"""Promotion: the watcher raises a healthy canary's weight step by step (``promote:`` under
the candidate), each step a control record with the figures that earned it.

What "promote" means here: the candidate's share of sessions grows, up to the last step
(1.0: every session). Making the candidate *the* live version stays an operator's act,
because it is a change of the topology and a deploy: move the candidate's settings into
the live ones, remove ``candidate:``, and redeploy once the candidate's topic has no lag.
At the last step the watcher says so, and goes on judging the rollback rules.

Pure: the watcher (rollout/watch.py) hands in the figures and writes what comes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.rollout.config import PromoteRules, RollbackRules
from agentstream.rollout.rules import VersionStats, breached, checks, in_words

FULL_WEIGHT_ADVICE = "make the candidate the live version in the topology (README 'Rolling out a new agent version')"


@dataclass(frozen=True)
class Step:
    weight: float  # the new weight
    reason: str  # for the control record: the step, the figures that held and for how long
    last: bool  # the last of the steps: the watcher raises it no further


def next_weight(steps: tuple[float, ...], weight: float) -> float | None:
    """The first step above ``weight``; None at or past the last."""
    return next((step for step in steps if step > weight), None)


def promotion(rules: PromoteRules, rollback: RollbackRules, weight: float, live: VersionStats,
              candidate: VersionStats, held_ms: int) -> Step | None:
    """The step up for a canary at ``weight`` whose results since its weight was last set
    are ``candidate`` (``held_ms`` ago), or None: not yet, not at 0, or past the last step.

    Every rollback rule must hold, judged as the rollback judges it, so the candidate
    needs at least the rollback's ``min_tasks`` too (below it nothing is judged, and
    nothing judged is not "held"); a breach is the rollback's to act on, not a step."""
    target = next_weight(rules.steps, weight)
    if weight <= 0 or target is None:
        return None
    if candidate.tasks < max(rules.min_tasks, rollback.min_tasks) or held_ms < rules.min_window_s * 1000:
        return None
    found = checks(rollback, live, candidate)
    if breached(found):
        return None
    last = target == rules.steps[-1]
    reason = f"promoted {weight:g} -> {target:g}: {in_words(found, candidate.tasks)} in {held_ms / 1000:.0f} s"
    return Step(target, f"{reason}; last step: {FULL_WEIGHT_ADVICE}" if last else reason, last)
