"""The LLM judge of an eval case: a model grades the answer against a rubric.

The judge is a model of the topology's model settings (the case file's ``judge``, else
the agent's own model), asked through a ``grade`` tool for a score, a verdict and a
reason (structured output as the router's classifier gets it, models/structured.py). The
offline ScriptedModel cannot read a rubric, so on it the judge is a scripted rule: the
rubric's ``scripted`` regular expression, searched in the answer.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from agentstream.errors import ConfigurationError
from agentstream.evals.cases import Rubric
from agentstream.evals.scorers import Score
from agentstream.models.base import Message, Model
from agentstream.models.config import ModelSettings, parse_model_id
from agentstream.models.pricing import cost_usd
from agentstream.models.registry import create_model
from agentstream.models.structured import MalformedAnswer, is_confidence, tool_arguments

SCORER = "llm_judge"
GRADE_TOOL = "grade"
_INSTRUCTIONS = (
    "You grade an AI agent's answer to a request against a rubric. Judge only what the rubric asks. "
    f"Call {GRADE_TOOL} with score (0 to 1: how far the answer meets the rubric), passed (true only if it "
    "meets the rubric in full) and reason (one sentence)."
)
_GRADE_SCHEMA: dict[str, Any] = {
    "name": GRADE_TOOL,
    "description": "Record the grade of the answer.",
    "parameters": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "passed": {"type": "boolean"},
            "reason": {"type": "string"},
        },
        "required": ["score", "passed", "reason"],
    },
}


class Judge(Protocol):
    async def grade(self, rubric: Rubric, question: str, answer: str) -> Score: ...


class ScriptedJudge:
    """The offline judge: the rubric's scripted rule decides."""

    async def grade(self, rubric: Rubric, question: str, answer: str) -> Score:
        if rubric.scripted is None:
            raise ConfigurationError(
                f"The rubric {rubric.rubric!r} has no scripted rule, and the judge is the scripted model, which cannot "
                "read a rubric; add `scripted: <regular expression>` to it, or set `judge:` to a real model.")
        found = re.search(rubric.scripted, answer) is not None
        return Score(SCORER, 1.0 if found else 0.0, found, "" if found else f"scripted judge: no match for {rubric.scripted!r}")


class ModelJudge:
    """A real model grades through the ``grade`` tool."""

    def __init__(self, model: Model) -> None:
        self.model = model

    async def grade(self, rubric: Rubric, question: str, answer: str) -> Score:
        messages = [
            Message("system", _INSTRUCTIONS),
            Message("user", f"Rubric: {rubric.rubric}\n\nRequest:\n{question}\n\nAnswer:\n{answer}"),
        ]
        response = await self.model.complete(messages, [_GRADE_SCHEMA])
        # Priced like the agent's own calls (the price table), so the table's two costs compare.
        spent = cost_usd(self.model.model_id, response.usage)
        try:
            grade = tool_arguments(response, GRADE_TOOL)
        except MalformedAnswer as exc:
            return Score(SCORER, 0.0, False, f"the judge {self.model.model_id} answered no grade: {exc}", spent)
        score, passed = grade.get("score"), grade.get("passed")
        if not is_confidence(score) or not isinstance(passed, bool):
            return Score(SCORER, 0.0, False, f"the judge {self.model.model_id} gave a malformed grade: {dict(grade)}", spent)
        return Score(SCORER, float(score), passed, str(grade.get("reason") or ""), spent)


def judge_for(model_id: str, settings: ModelSettings) -> Judge:
    """The judge on ``model_id``: a scripted rule on the scripted model, else that model."""
    provider, _ = parse_model_id(model_id)
    if provider == "scripted":
        return ScriptedJudge()
    return ModelJudge(create_model(model_id, settings))
