"""The supervisor's review: the tool the model is asked to call, the checks on what it
returns, and what each verdict makes of the combined result. Pure; supervisor/reviewer.py
makes the call, supervisor/app.py runs it.

Verdicts: ``publish`` — the model's answer is the task's output. ``escalate`` — a human must
look: the result is FAILED with error code ``NEEDS_HUMAN_REVIEW``, the model's draft as
output, and ``review`` saying why. Not a new TaskStatus symbol: release 0.1.0's enums have
no default, so a reader of that release could not decode one (tests/unit/test_schema_compat.py),
and FAILED is what a consumer that does not know ``review`` must see — never an answer no
human approved as COMPLETED. ``revise`` — one specialist redoes its part with the feedback
(supervisor/revision.py, at most ``max_revisions`` times per task); a revise asked beyond
that is escalated, the reason saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from agentstream.models.base import Message, ModelResponse, Usage
from agentstream.models.structured import MalformedAnswer, is_confidence, tool_arguments
from agentstream.supervisor.combine import COMPLETED, FAILED

REVIEW_TOOL = "review"
NEEDS_HUMAN_REVIEW = "NEEDS_HUMAN_REVIEW"
Verdict = Literal["publish", "revise", "escalate"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

_VERDICT_MEANINGS = (
    "publish: your answer is ready for the customer; "
    "revise: one specialist must redo its part (name it in agent_type, say what to fix in feedback); "
    "escalate: a human must look before anything is sent (say why in feedback)."
)


class MalformedReview(MalformedAnswer):
    """The model's review is not usable; the message names the bad value."""


@dataclass(frozen=True, slots=True)
class Review:
    """What the model decided, checked."""

    verdict: Verdict
    answer: str
    feedback: str
    agent_type: str | None
    confidence: float
    usage: Usage | None = None  # the review call's tokens, added to the task's usage


def review_tool(agent_types: Sequence[str]) -> dict[str, Any]:
    """The neutral tool schema of a review of a task handled by ``agent_types``."""
    return {
        "name": REVIEW_TOOL,
        "description": "Give your verdict on the specialists' answers and the one answer for the customer.",
        "parameters": {
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": list(VERDICTS), "description": _VERDICT_MEANINGS},
                "answer": {"type": "string", "description": "One combined answer to the task, for the customer."},
                "feedback": {"type": "string", "description": "What is wrong, for revise and escalate; else empty."},
                "agent_type": {
                    "type": "string", "enum": sorted(agent_types),
                    "description": "The specialist that must redo its part (revise only).",
                },
                "confidence": {
                    "type": "number", "minimum": 0, "maximum": 1,
                    "description": "How sure you are of the verdict, from 0 to 1.",
                },
            },
            "required": ["verdict", "answer", "feedback", "confidence"],
            "additionalProperties": False,
        },
    }


def review_messages(
    task_input: str, results: Sequence[Mapping[str, Any]], rubric: str, max_result_chars: int, note: str = ""
) -> list[Message]:
    """The system prompt with the rubric, and the task with each specialist's answer;
    ``note`` says what an earlier round of review asked (a revision), if any."""
    system = (
        "You are the supervisor of a team of specialist agents. Review their answers to the task "
        "against the rubric, write one combined answer for the customer, and give your verdict by "
        f"calling the {REVIEW_TOOL} tool once."
    )
    if rubric.strip():
        system += f"\nThe rubric:\n{rubric.strip()}"
    answers = "\n\n".join(_shown(result, max_result_chars) for result in results)
    earlier = f"\n\n{note}" if note else ""
    return [Message("system", system),
            Message("user", f"The task:\n{task_input}\n\nThe specialists' answers:\n{answers}{earlier}")]


def _shown(result: Mapping[str, Any], max_chars: int) -> str:
    output = str(result.get("output") or "(no answer)")
    if len(output) > max_chars:  # the prompt stays bounded whatever a specialist wrote
        output = output[:max_chars] + " [cut]"
    return f"- {result['agent_type']} ({result['status']}): {output}"


def parse_review(response: ModelResponse, agent_types: Sequence[str], max_answer_chars: int) -> Review:
    """The review in ``response``; ``MalformedReview`` says why there is none."""
    try:
        arguments = tool_arguments(response, REVIEW_TOOL)
    except MalformedAnswer as exc:
        raise MalformedReview(str(exc)) from None
    return check_review(arguments, agent_types, max_answer_chars, response)


def check_review(
    arguments: Mapping[str, Any], agent_types: Sequence[str], max_answer_chars: int, response: ModelResponse | None = None
) -> Review:
    """``arguments`` of a review call as a ``Review``, or ``MalformedReview`` naming the bad value."""
    verdict = arguments.get("verdict")
    if verdict not in VERDICTS:
        raise MalformedReview(f"verdict must be one of {list(VERDICTS)}, got {verdict!r}")
    answer, feedback = arguments.get("answer"), arguments.get("feedback", "")
    if not isinstance(answer, str) or (verdict == "publish" and not answer.strip()):
        raise MalformedReview(f"answer must be text, and not blank for publish, got {answer!r:.200}")
    if len(answer) > max_answer_chars:
        raise MalformedReview(f"answer has {len(answer)} characters, more than supervision.max_answer_chars {max_answer_chars}")
    if not isinstance(feedback, str) or (verdict != "publish" and not feedback.strip()):
        raise MalformedReview(f"feedback must be text, and not blank for {verdict}, got {feedback!r:.200}")
    agent_type = arguments.get("agent_type") or None
    if verdict == "revise" and agent_type not in agent_types:
        raise MalformedReview(f"revise needs agent_type, one of {sorted(agent_types)}, got {agent_type!r}")
    confidence = arguments.get("confidence")
    if not is_confidence(confidence):
        raise MalformedReview(f"confidence must be a number from 0 to 1, got {confidence!r}")
    return Review(verdict, answer, feedback, agent_type if isinstance(agent_type, str) else None, float(confidence),
                  response.usage if response is not None else None)


def reviewed(final: Mapping[str, Any], review: Review, model_id: str, revisions: int = 0) -> dict[str, Any]:
    """The TaskResult ``final`` (today's combine) as the review ``review`` decides it, after
    ``revisions`` revisions, the most allowed: a revise asked now is escalated."""
    feedback = review.feedback
    if review.verdict == "revise":  # beyond the bound (supervisor/revision.py sends the ones within)
        feedback = (f"revision {revisions + 1} of {review.agent_type} asked, beyond supervision.max_revisions "
                    f"{revisions}: {review.feedback}")
    verdict = "publish" if review.verdict == "publish" else "escalate"
    record = {**final, "output": review.answer or final.get("output"), "usage": with_call(final["usage"], review.usage),
              "review": {"verdict": verdict, "feedback": feedback, "confidence": review.confidence,
                         "model": model_id, "revisions": revisions}}
    if verdict == "publish":
        return {**record, "status": COMPLETED}
    # A human looks before anything is sent.
    return {**record, "status": FAILED, "error": {"code": NEEDS_HUMAN_REVIEW, "message": feedback}}


def with_call(usage: Mapping[str, Any], call: Usage | None) -> dict[str, Any]:
    """``usage`` (a TaskResult's) plus one model call's."""
    if call is None:
        return dict(usage)
    return {**usage, "input_tokens": usage["input_tokens"] + call.input_tokens,
            "output_tokens": usage["output_tokens"] + call.output_tokens, "llm_calls": usage["llm_calls"] + 1,
            "cost_usd": round(usage["cost_usd"] + call.cost_usd, 8)}


def describe(review: Review | str, model_id: str) -> str:
    """The TaskEvent detail of a review, or of the combine when ``review`` is why there is none."""
    if isinstance(review, str):
        return f"combined without review: {review}"
    return f"reviewed by {model_id}: {review.verdict}, confidence {review.confidence:.2f}"
