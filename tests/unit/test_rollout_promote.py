"""A healthy canary is promoted step by step: the step decision and the promote settings."""

from __future__ import annotations

import pytest

from agentstream.errors import ConfigurationError
from agentstream.rollout.config import PromoteRules
from agentstream.rollout.promote import FULL_WEIGHT_ADVICE, next_weight, promotion
from agentstream.rollout.rules import stats

from .test_rollout import LIVE, RULES, _result, _topology

PROMOTE = PromoteRules(steps=(0.05, 0.2, 0.5, 1.0), min_tasks=6, min_window_s=60)
HEALTHY = stats([_result("candidate", n) for n in range(6)])


def test_the_next_weight_is_the_first_step_above() -> None:
    assert [next_weight(PROMOTE.steps, w) for w in (0.01, 0.05, 0.3, 1.0)] == [0.05, 0.2, 0.5, None]


def test_a_healthy_canary_steps_up_once_it_has_the_tasks_and_the_time() -> None:
    step = promotion(PROMOTE, RULES, 0.05, LIVE, HEALTHY, held_ms=61_000)
    assert step is not None and (step.weight, step.last) == (0.2, False)
    assert step.reason == ("promoted 0.05 -> 0.2: completion 100% >= 85%; tool error rate 0.0% <= 5.0%; "
                           "p95 100 ms is 1.0x live's 100 ms <= 2x; cost per task $0.010000 is 1.0x live's <= 1.5x "
                           "over 6 tasks in 61 s")
    assert promotion(PROMOTE, RULES, 0.05, LIVE, HEALTHY, held_ms=59_000) is None  # not long enough
    assert promotion(PROMOTE, RULES, 0.05, LIVE, stats([_result("candidate", n) for n in range(5)]), 61_000) is None


def test_the_last_step_says_what_to_do_and_nothing_goes_past_it() -> None:
    step = promotion(PROMOTE, RULES, 0.5, LIVE, HEALTHY, held_ms=61_000)
    assert step is not None and step.weight == 1.0 and step.last and step.reason.endswith(FULL_WEIGHT_ADVICE)
    assert promotion(PROMOTE, RULES, 1.0, LIVE, HEALTHY, held_ms=10**9) is None


def test_no_step_at_weight_0_on_a_breach_or_before_the_rollback_rules_can_judge() -> None:
    assert promotion(PROMOTE, RULES, 0.0, LIVE, HEALTHY, held_ms=10**9) is None  # off or rolled back: an operator restarts it
    slow = stats([_result("candidate", n, ms=300) for n in range(6)])
    assert promotion(PROMOTE, RULES, 0.2, LIVE, slow, held_ms=10**9) is None
    strict = RULES.model_copy(update={"min_tasks": 10})  # 6 results: the rollback rules judge nothing yet
    assert promotion(PROMOTE, strict, 0.2, LIVE, HEALTHY, held_ms=10**9) is None


def test_promote_settings_are_checked() -> None:
    topology = _topology({"billing": {"weight": 0.05, "promote": {"steps": [0.2, 1.0], "min_tasks": 5}}})
    candidate = topology.candidate_of("billing")
    assert candidate is not None and candidate.promote == PromoteRules(steps=(0.2, 1.0), min_tasks=5)
    for steps in ([0.5, 0.2], [0.2, 1.5], [], [0, 1]):
        with pytest.raises(ConfigurationError, match="must be increasing weights above 0 and at most 1"):
            _topology({"billing": {"promote": {"steps": steps}}})
    with pytest.raises(ConfigurationError, match="promote applies to a canary, not to a shadow"):
        _topology({"billing": {"mode": "shadow", "promote": {}}})
