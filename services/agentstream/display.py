"""How results and progress events read on a terminal (``results``, ``submit --wait``, the demo)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from agentstream.events import TASK_RESULT

ELLIPSIS = "…"
PREVIEW_CHARS = 200  # of a result's text on one line, unless --full


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def record_time(record: Mapping[str, Any]) -> int:
    """When a result completed or an event happened (epoch ms), for ordering."""
    return int(record.get("completed_at") or record.get("at") or 0)


def format_record(name: str, record: Mapping[str, Any], *, full: bool = False) -> str:
    if name == TASK_RESULT:
        return format_result(record, full=full)
    when = _clock(record_time(record))
    return f"{when} event  {record['task_id']} {record['stage']}: {record['kind']} {record['state']} {record['detail']}"


def format_result(result: Mapping[str, Any], *, full: bool = False) -> str:
    """A headline, the error's code and reason if any, then the answer: on one line cut at
    ``PREVIEW_CHARS`` with an ellipsis, or whole (its own lines kept) with ``full``."""
    agents = "+".join(result["agents"]) or "-"
    lines = [
        f"{_clock(record_time(result))} RESULT {result['task_id']} [{result['session_id']}] {result['status']} "
        f"via {agents} calls={result['usage']['llm_calls']}"
    ]
    error = result.get("error")
    if error:
        lines.append(f"    {error['code']}: {error['message'] if full else shorten(error['message'], PREVIEW_CHARS)}")
    output = result.get("output") or ""
    if full and output:
        lines += ["    " + line for line in output.splitlines()]
    elif output:
        lines.append("    " + shorten(" ".join(output.split()), PREVIEW_CHARS))
    elif not error:
        lines.append("    (no text)")
    return "\n".join(lines)


def _clock(epoch_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_ms / 1000))


def no_result_line(task_id: str, timeout: float, last_event: Mapping[str, Any] | None, waiting_state: str) -> str:
    """Why ``submit --wait`` gives up, from the task's last progress event (None: none came
    while it waited); ``waiting_state``: the state of a task that waits for a human."""
    if last_event is None:
        return (f"agentstream: no result for {task_id} within {timeout:.0f} s, and no stage reported progress on it: "
                "a task id submitted before gets no second result (`agentstream results` shows its first), or no "
                "router is running (`agentstream lag` shows its group's lag)")
    wait = "; `agentstream approvals list` shows what waits for a human" if last_event["state"] == waiting_state else ""
    return (f"agentstream: no result for {task_id} within {timeout:.0f} s; its last progress: {last_event['stage']}: "
            f"{last_event['state']} {shorten(last_event['detail'], PREVIEW_CHARS)}{wait}. It may still come: "
            "`agentstream results --follow` shows it when it does.")

