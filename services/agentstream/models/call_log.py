"""A Model wrapper for tests and benchmarks: simulated latency, and a call log on disk.

The log has one line per model call, ``<task key> <step> <pid>``, appended and flushed
at once, so a test can count calls across worker processes — including one that was
killed with SIGKILL — and find the model calls that were repeated.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentstream.models.base import Message, Model, ModelResponse, current_task_key

SCRIPTED_LATENCY_ENV = "AGENTSTREAM_SCRIPTED_LATENCY"  # seconds, or a range "0.5-2"
SCRIPTED_CALL_LOG_ENV = "AGENTSTREAM_SCRIPTED_CALL_LOG"  # a file path
SCRIPTED_FAILURE_RATE_ENV = "AGENTSTREAM_SCRIPTED_FAILURE_RATE"  # 0..1: share of calls failing with a 500


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
