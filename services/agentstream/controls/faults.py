"""``FaultyModel``: a model that fails on purpose, to show what the controls do.

Tests script exact failures per call (a 429 with retry-after, a 500, a timeout, an auth
error); fault-injection runs and demos use a seeded failure rate instead. Either way the
calls that do not fail go to a real ``Model`` (by default the ``ScriptedModel``), so a run
still produces real answers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

from agentstream.errors import ConfigurationError
from agentstream.models.base import Message, Model, ModelResponse
from agentstream.models.errors import ModelError, ModelServerError
from agentstream.models.scripted import ScriptedModel

HANG: Literal["hang"] = "hang"

# One script entry per call: an error to raise, HANG to never answer (for per-call
# timeouts), or None to pass the call through. Calls past the script's end pass through.
Fault = ModelError | Literal["hang"] | None


def _server_error(call: int) -> ModelError:
    return ModelServerError(f"injected fault on call {call}: HTTP 500", retry_after=None)


class FaultyModel:
    """Wraps ``inner``; ``calls`` counts every call, ``passed`` those that reached ``inner``.

    ``failure_rate`` (0..1) fails calls beyond the script at random, reproducibly for a
    ``seed``, with ``make_error(call_number)`` (an HTTP 500 by default).
    """

    def __init__(
        self,
        inner: Model | None = None,
        script: Sequence[Fault] = (),
        *,
        failure_rate: float = 0.0,
        seed: int = 0,
        make_error: Callable[[int], ModelError] = _server_error,
        model_id: str | None = None,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ConfigurationError(f"failure_rate must be between 0 and 1, got {failure_rate}.")
        self.inner = inner or ScriptedModel()
        self.model_id = model_id or self.inner.model_id
        self.script = list(script)
        self.failure_rate = failure_rate
        self.make_error = make_error
        self.calls = 0
        self.passed = 0
        self._rng = random.Random(seed)

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        self.calls += 1
        fault = self.script[self.calls - 1] if self.calls <= len(self.script) else None
        if fault is None and self.failure_rate and self._rng.random() < self.failure_rate:
            fault = self.make_error(self.calls)
        if fault == HANG:
            await asyncio.Event().wait()  # never set: only a timeout or cancellation ends it
        if isinstance(fault, ModelError):
            raise fault
        self.passed += 1
        return await self.inner.complete(messages, tools)
