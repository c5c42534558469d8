"""Errors the controls raise themselves (the model errors live in ``models.errors``)."""

from __future__ import annotations

from agentstream.models.errors import TransientModelError


class CircuitOpenError(TransientModelError):
    """The model's circuit breaker refuses calls for now.

    Transient, because the model may recover; but the retry control never retries it
    against the same model (that is what the breaker exists to prevent): the fallback
    chain moves on to the next model, and a caller without one may retry the task later.
    ``retry_after`` is the rest of the cool-down, when known.
    """
