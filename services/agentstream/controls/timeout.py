"""A deadline for one model call, reported as the transient ``ModelTimeoutError``.

A provider that hangs must not hold a session forever; and a timeout is worth a retry
(the next attempt usually lands on a healthy replica), so it is translated into our
transient type rather than left as ``TimeoutError``, which the retry control ignores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from agentstream.models.errors import ModelTimeoutError

T = TypeVar("T")


async def call_with_timeout(fn: Callable[[], Awaitable[T]], timeout_s: float | None, model_id: str) -> T:
    """``await fn()`` within ``timeout_s`` seconds (None: no deadline).

    Only this deadline becomes ``ModelTimeoutError``; a cancellation from outside (a
    run-level timeout, shutdown) still propagates as cancellation.
    """
    if timeout_s is None:
        return await fn()
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            return await fn()
    except TimeoutError as exc:
        if not deadline.expired():
            raise
        raise ModelTimeoutError(
            f"{model_id}: no complete reply within the per-call timeout of {timeout_s:g} s.", model_id=model_id
        ) from exc
