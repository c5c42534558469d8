"""Server-Sent Events of a task's progress: every TaskEvent of the task in task-events
order, then the result, then the stream ends.

Each event's id is the record's position (``e<offset>`` of task-events, ``r<offset>`` of
the result), the same on every replica: a client that reconnects with ``Last-Event-ID``
(browsers' EventSource does so by itself) gets what follows that position, so it misses
nothing and sees nothing twice, whichever replica answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request

from agentstream.gateway import metrics, task_view
from agentstream.gateway.ids import Position, event_id, result_id
from agentstream.gateway.stream_gate import ResultGate
from agentstream.task_client import PROGRESS, RESULT

if TYPE_CHECKING:
    from agentstream.gateway.context import Gateway



def frame(ident: str, event: str, data: Any) -> str:
    """One SSE message (the data is one line of JSON, so no line needs splitting)."""
    return f"id: {ident}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


KEEPALIVE = ": keepalive\n\n"  # a comment: clients ignore it, proxies see traffic


async def task_stream(gateway: Gateway, request: Request, task_id: str, start: Position) -> AsyncIterator[str]:
    settings = gateway.config.settings
    metrics.sse_streams().inc()
    try:
        if start.done:
            return
        offset, gate = start.offset, ResultGate(gateway.reader, settings.sse_result_grace_s)
        with gateway.changes.watching(task_id) as watch:  # woken by changes of this task only
            seen = watch.generation
            while not await request.is_disconnected():
                look = gate.look(gateway.store, task_id, offset)
                for offset, event in look.events:
                    yield frame(event_id(offset), PROGRESS, event)
                if look.result is not None:
                    yield frame(result_id(look.result["result"]["offset"]), RESULT, task_view.public(look.result))
                    return
                if look.full:
                    continue
                wait = settings.sse_result_grace_s / 4 if gate.result_seen else settings.sse_keepalive_s
                before = seen
                seen = await watch.wait(seen, wait)
                if seen == before and not gate.result_seen:
                    yield KEEPALIVE
    finally:
        metrics.sse_streams().dec()
