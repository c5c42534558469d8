"""Structured output through a tool schema: the arguments of the one call a model was asked
to make, for the router's classifier and the supervisor's review.

Why a tool and not a provider's response format: see router/classifier.py. The ``Model``
interface cannot force the call, so an answer in JSON text is accepted too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeGuard

from agentstream.models.base import ModelResponse
from agentstream.models.openai_provider import INVALID_ARGUMENTS_KEY


class MalformedAnswer(ValueError):
    """The model's answer is not the structured output asked for; the message says why."""


def tool_arguments(response: ModelResponse, tool: str) -> Mapping[str, Any]:
    """The arguments of ``response``'s call of ``tool`` (or its JSON text); else ``MalformedAnswer``."""
    call = next((c for c in response.tool_calls if c.name == tool), None)
    if call is not None:
        if INVALID_ARGUMENTS_KEY in call.arguments:
            raise MalformedAnswer(f"the {tool} arguments are not JSON: {call.arguments[INVALID_ARGUMENTS_KEY]!r:.200}")
        return call.arguments
    if response.tool_calls:
        raise MalformedAnswer(f"the model called {[c.name for c in response.tool_calls]}, not {tool}")
    try:  # a server without tool support may still answer the JSON as text
        parsed = json.loads(response.text or "")
    except ValueError:
        raise MalformedAnswer(f"no {tool} call, and the text is not JSON: {response.text or ''!r:.200}") from None
    if not isinstance(parsed, dict):
        raise MalformedAnswer(f"no {tool} call, and the text is not a JSON object: {response.text!r:.200}")
    return parsed


def is_confidence(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a number from 0 to 1 (not a bool, not NaN)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1
