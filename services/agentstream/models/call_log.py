"""A Model wrapper for tests and benchmarks: simulated latency, and a call log on disk.

The log has one line per model call, ``<task key> <step> <pid>``, appended and flushed
at once, so a test can count calls across worker processes — including one that was
killed with SIGKILL — and find the model calls that were repeated.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentstream.models.base import Message, Model, ModelResponse, Usage, current_task_key
from agentstream.models.errors import ModelServerError

class CallLogModel:
    def __init__(self, inner: Model, log_path: Path | None, latency_min: float = 0.0, latency_max: float = 0.0) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.log_path = log_path
        self.latency = (latency_min, max(latency_min, latency_max))

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        step = sum(1 for message in messages if message.role == "assistant")
        if self.log_path is not None:
            with self.log_path.open("a") as log:
                log.write(f"{current_task_key()} {step} {os.getpid()}\n")
        low, high = self.latency
        if high > 0:
            await asyncio.sleep(random.uniform(low, high))
        return await self.inner.complete(messages, tools)


_FAIL_MARK = re.compile(r"#fail-transient=(\d+)")
_HUGE_MARK = re.compile(r"#reply-bytes=(\d+)")


class MarkedFailures:
    """Faults chosen by marks in a task's input, for tests and demos:

    - ``#fail-transient=N``: the first N calls of the task fail (HTTP 500), counted per
      task in this process; the task travels the retry tiers.
    - ``#reply-bytes=N``: every reply is N bytes of text. Past the producer's message size
      (1 MB) its checkpoint cannot be written, and the task's work crashes.
    """

    def __init__(self, inner: Model) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self._failed: dict[str, int] = {}

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        # The task's own input is the last user message; earlier ones are the session's
        # earlier tasks, whose marks are not this task's.
        task_input = next((m.content or "" for m in reversed(messages) if m.role == "user"), "")
        huge = _HUGE_MARK.search(task_input)
        if huge is not None:
            return ModelResponse("x" * int(huge.group(1)), (), Usage(0, 0), self.model_id)
        mark = _FAIL_MARK.search(task_input)
        if mark is not None:
            key = current_task_key() or task_input
            if self._failed.get(key, 0) < int(mark.group(1)):
                self._failed[key] = self._failed.get(key, 0) + 1
                raise ModelServerError(f"scripted transient failure {self._failed[key]} of {mark.group(1)}", model_id=self.model_id)
        return await self.inner.complete(messages, tools)
