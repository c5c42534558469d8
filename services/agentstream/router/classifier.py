"""The LLM classifier's contract: the tool the model is asked to call, the checks on what
it returns, and when the rules decide instead. Pure; router/model_route.py makes the call.

Why a function (tool) schema and not a provider's JSON-schema response format: every
provider behind our ``Model`` interface (OpenAI, Anthropic, and the OpenAI-compatible
vLLM, Ollama, LiteLLM) already takes tools in one neutral form, while response formats
differ per provider and many local servers lack them. The interface has no way to force
the call (no ``tool_choice``), so the prompt asks for it, an answer in JSON text is
accepted too, and anything else counts as invalid: the rules route the task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentstream.models.base import Message, ModelResponse, Usage
from agentstream.tier import TIERS, Tier
from agentstream.models.structured import MalformedAnswer, is_confidence, tool_arguments

ROUTE_TOOL = "route_task"
# The context a follow-up ("and the other one?") needs, not the whole conversation.
CONTEXT_TURNS = 3
CONTEXT_CHARS = 300

_TIER_MEANINGS = (
    "simple: a short question a small model answers well; "
    "standard: the usual request; "
    "complex: legal or contractual stakes, several systems or several problems at once, or urgent."
)


class MalformedRoute(MalformedAnswer):
    """The model's answer is not a usable route; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """What the model decided, checked: known agent types (sorted), a tier, a confidence."""

    agent_types: tuple[str, ...]
    tier: Tier
    confidence: float


@dataclass(frozen=True, slots=True)
class Classified:
    """What the classifier's call came to: the route or why there is none, and what the call
    cost (None when no answer came back). An invalid or unsure answer was paid for too."""

    answer: ModelRoute | str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The route a task gets, and which path decided it and why (for the event and the log),
    and the router model call's usage (a Usage record) when one answered."""

    route: list[str]
    tier: str
    by: str  # "model", "rules" or "request" (the client's requested_agent)
    why: str
    usage: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"by {self.by}: {self.why}" if self.why else f"by {self.by}"


def route_tool(known: Sequence[str]) -> dict[str, Any]:
    """The neutral tool schema (``{"name", "description", "parameters"}``) of a route."""
    return {
        "name": ROUTE_TOOL,
        "description": "Send the task to the specialists that must handle it.",
        "parameters": {
            "type": "object",
            "properties": {
                "agent_types": {
                    "type": "array",
                    "items": {"type": "string", "enum": sorted(known)},
                    "minItems": 1,
                    "description": "Every specialist the task needs; several when it asks several things.",
                },
                "tier": {"type": "string", "enum": list(TIERS), "description": _TIER_MEANINGS},
                "confidence": {
                    "type": "number", "minimum": 0, "maximum": 1,
                    "description": "How sure you are of agent_types, from 0 to 1.",
                },
            },
            "required": ["agent_types", "tier", "confidence"],
            "additionalProperties": False,
        },
    }


def route_messages(
    text: str, known: Sequence[str], descriptions: Mapping[str, str], turns: Sequence[Mapping[str, Any]]
) -> list[Message]:
    """The system prompt naming the specialists, and the task with its session's context."""
    specialists = "\n".join(f"- {t}: {descriptions.get(t) or t}" for t in sorted(known))
    system = (
        "You are the router of a team of specialist agents. Decide which specialists must handle "
        f"the task, how complex it is, and how sure you are, by calling the {ROUTE_TOOL} tool once. "
        f"Do not answer the task itself.\nThe specialists:\n{specialists}"
    )
    return [Message("system", system), Message("user", _with_context(text, turns))]


def _with_context(text: str, turns: Sequence[Mapping[str, Any]]) -> str:
    recent = list(turns)[-CONTEXT_TURNS:]
    if not recent:
        return text
    lines = [f"- {str(t.get('input') or '')[:CONTEXT_CHARS]} (handled by {', '.join(t.get('agents') or []) or 'nobody'})"
             for t in recent]
    return "Earlier requests in this conversation:\n" + "\n".join(lines) + f"\n\nThe task to route:\n{text}"


def parse_route(response: ModelResponse, known: Sequence[str]) -> ModelRoute:
    """The route in ``response``; ``MalformedRoute`` says why there is none."""
    try:
        arguments = tool_arguments(response, ROUTE_TOOL)
    except MalformedAnswer as exc:
        raise MalformedRoute(str(exc)) from None
    return check_route(arguments, known)


def check_route(arguments: Mapping[str, Any], known: Sequence[str]) -> ModelRoute:
    """``arguments`` of a route call as a ``ModelRoute``, or ``MalformedRoute`` naming the bad value."""
    types = arguments.get("agent_types")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise MalformedRoute(f"agent_types must be a non-empty list of agent types, got {types!r}")
    unknown = sorted({t for t in types if t not in known})
    if unknown:
        raise MalformedRoute(f"unknown agent types {unknown}; valid agent types are {sorted(known)}")
    tier = arguments.get("tier")
    if tier not in TIERS:
        raise MalformedRoute(f"tier must be one of {list(TIERS)}, got {tier!r}")
    confidence = arguments.get("confidence")
    if not is_confidence(confidence):
        raise MalformedRoute(f"confidence must be a number from 0 to 1, got {confidence!r}")
    return ModelRoute(tuple(sorted(set(types))), tier, float(confidence))


def choose(
    answer: ModelRoute | str, by_rules: tuple[list[str], str], min_confidence: float, model_id: str
) -> Decision:
    """The model's route when it gave a valid, confident one; else the rules' route
    ``by_rules`` (route, tier), saying why. ``answer`` is the route or why there is none."""
    route, tier = by_rules
    if isinstance(answer, str):
        return Decision(route, tier, "rules", answer)
    if answer.confidence < min_confidence:
        why = f"model {model_id} unsure: confidence {answer.confidence:.2f} below routing.min_confidence {min_confidence:g}"
        return Decision(route, tier, "rules", why)
    return Decision(list(answer.agent_types), answer.tier, "model", f"{model_id}, confidence {answer.confidence:.2f}")
