"""``FallbackChain``: primary model → cheaper models → a minimum viable answer.

The chain moves on when a model cannot serve the call: its retries are spent on
transient errors, its circuit is open, its key is refused or its quota gone, or the
prompt exceeds its context window (the next model may have a bigger one). It does not
move on after a plain bad request: our messages are provider-neutral, so a request one
provider finds malformed is most likely our bug, and hiding it behind a cheaper model
or a canned answer would only make it harder to see. Unexpected exceptions propagate too.

When every model failed, the chain answers with a "minimum viable answer": a response
that tells the user what could not be done and what was found so far. It comes from the
pseudo-model ``MINIMUM_VIABLE_MODEL_ID`` so the agent loop (``is_minimum_viable``) and the
task result can show that no model answered, instead of passing it off as one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentstream.controls.stats import ControlStats, record
from agentstream.errors import ConfigurationError
from agentstream.models.base import Message, Model, ModelResponse, Usage
from agentstream.models.errors import BadRequestError, ContextTooLongError, ModelError

log = logging.getLogger(__name__)

MINIMUM_VIABLE_MODEL_ID = "fallback:minimum-viable-answer"
MINIMUM_VIABLE_MARKER = "[no model available]"

_QUOTE_CHARS = 300


@dataclass(frozen=True, slots=True)
class ModelFailure:
    """Why one model of the chain could not answer."""

    model_id: str
    error: ModelError

    def describe(self) -> str:
        return f"{self.model_id}: {type(self.error).__name__}"


MinimumViableAnswer = Callable[[Sequence[Message], Sequence[ModelFailure]], str]


def should_fall_back(exc: BaseException) -> bool:
    """Whether the next model of the chain may succeed where this one failed."""
    if isinstance(exc, ContextTooLongError):
        return True
    return isinstance(exc, ModelError) and not isinstance(exc, BadRequestError)


def is_minimum_viable(response: ModelResponse) -> bool:
    """Whether ``response`` is a chain's minimum viable answer rather than a model's."""
    return response.model == MINIMUM_VIABLE_MODEL_ID


def default_minimum_viable_answer(messages: Sequence[Message], failures: Sequence[ModelFailure]) -> str:
    """Say plainly that the request could not be handled now, and keep what was found."""
    question = next((m.content or "" for m in reversed(messages) if m.role == "user"), "")
    question = " ".join(question.split())
    lines = [
        f"{MINIMUM_VIABLE_MARKER} I could not complete your request right now: no language model was "
        "available to work on it. It has not been forgotten; please try again later or wait for a colleague "
        "to follow up.",
    ]
    if question:
        lines.append(f'Your request: "{_clip(question)}"')
    found = [m for m in messages if m.role == "tool" and m.content and not m.content.startswith("Error:")]
    if found:
        lines.append("What I found before stopping:")
        lines.extend(f"- {m.name}: {_clip(m.content or '')}" for m in found)
    lines.append("Unavailable: " + "; ".join(failure.describe() for failure in failures) + ".")
    return "\n".join(lines)


class FallbackChain:
    """A ``Model`` that tries ``models`` in order (usually ``GuardedModel`` each).

    ``minimum_viable_answer`` None makes the chain raise the last error instead of
    answering when every model failed.
    """

    def __init__(
        self,
        models: Sequence[Model],
        minimum_viable_answer: MinimumViableAnswer | None = default_minimum_viable_answer,
    ) -> None:
        if not models:
            raise ConfigurationError("A fallback chain needs at least one model; got an empty list.")
        self.models = list(models)
        self.model_id = self.models[0].model_id
        self.minimum_viable_answer = minimum_viable_answer
        self.stats = ControlStats()

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        failures: list[ModelFailure] = []
        for index, model in enumerate(self.models):
            if index:
                record(self.stats, "fallbacks")
                log.warning("falling back from %s to %s", failures[-1].describe(), model.model_id)
            try:
                return await model.complete(messages, tools)
            except ModelError as exc:
                if not should_fall_back(exc):
                    raise
                failures.append(ModelFailure(model.model_id, exc))
        if self.minimum_viable_answer is None:
            raise failures[-1].error
        record(self.stats, "minimum_viable")
        log.warning("no model could answer (%s); minimum viable answer", "; ".join(f.describe() for f in failures))
        text = self.minimum_viable_answer(messages, failures)
        return ModelResponse(text=text, tool_calls=(), usage=Usage(0, 0, 0.0), model=MINIMUM_VIABLE_MODEL_ID)


def _clip(text: str) -> str:
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."
