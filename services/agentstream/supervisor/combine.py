"""Combining the specialist results of one task into the task's final result.

Partial-failure policy: the task is COMPLETED when at least one specialist completed, so
the customer gets what could be answered. The answer then ends with a note naming each
failed specialist, and ``error`` is set (code ``PARTIAL_FAILURE``) so downstream systems
can tell a partial answer from a full one without parsing text. The task is FAILED only
when every specialist failed; ``error`` then carries their code (``SPECIALISTS_FAILED``
when they differ), and ``output`` whatever partial answers they left.

A specialist that reports a cancel (error code CANCELED) makes the task CANCELED, whatever
the others answered (``canceled``).

Delivery is at-least-once, so one agent type may report twice. One result per type is
kept: a COMPLETED one over a FAILED one, otherwise the later one. Usage is summed over
the kept results only, so a redelivered result is not counted twice; the router model's
call (``router_usage``, the same on every result of the task) is added once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agentstream.cancellation.records import CANCELED, is_canceled
from agentstream.errors import InconsistentResultsError

COMPLETED = "COMPLETED"
FAILED = "FAILED"
PARTIAL_FAILURE = "PARTIAL_FAILURE"
SPECIALISTS_FAILED = "SPECIALISTS_FAILED"

_USAGE_COUNTS = ("input_tokens", "output_tokens", "llm_calls", "tool_calls", "retries")


def is_complete(route: Iterable[str], received_types: Iterable[str]) -> bool:
    """Whether every agent type the task was routed to has reported a result."""
    return set(route) <= set(received_types)


def combine(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The final result of one task from its specialist results (see the module policy)."""
    if not results:
        raise InconsistentResultsError("Cannot combine an empty list of specialist results.")
    task_ids = sorted({str(result["task_id"]) for result in results})
    if len(task_ids) > 1:
        raise InconsistentResultsError(f"Cannot combine results of several tasks into one: {task_ids}.")
    chosen = _one_per_type(results)
    agents = sorted(chosen)
    failed = [agent for agent in agents if chosen[agent]["status"] != COMPLETED]
    status = FAILED if len(failed) == len(agents) else COMPLETED
    return {
        "task_id": task_ids[0],
        "status": status,
        "output": _output(chosen, agents, failed, status),
        "error": _error(chosen, failed, status),
        "agents": agents,
        "usage": _usage(chosen.values()),
        "behavior_versions": {
            agent: str(chosen[agent]["behavior_version"]) for agent in agents if chosen[agent].get("behavior_version")
        },
    }


def canceled(final: Mapping[str, Any], received: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """``final`` as a CANCELED result when a specialist of ``received`` reports a cancel
    (error code CANCELED): the usage of every specialist still counts, no answer is given;
    None when none does."""
    stopped = next((r for r in received if is_canceled(r)), None)
    if stopped is None:
        return None
    return {**final, "status": CANCELED, "output": None, "error": stopped["error"]}


def _one_per_type(results: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    chosen: dict[str, Mapping[str, Any]] = {}
    for result in results:
        kept = chosen.get(result["agent_type"])
        if kept is not None and kept["status"] == COMPLETED and result["status"] != COMPLETED:
            continue
        chosen[result["agent_type"]] = result
    return chosen


def _output(chosen: Mapping[str, Mapping[str, Any]], agents: list[str], failed: list[str], status: str) -> str | None:
    if len(agents) == 1:
        output = chosen[agents[0]].get("output")
        return str(output) if output else None
    sections = [f"{agent.capitalize()}: {chosen[agent]['output']}" for agent in agents if chosen[agent].get("output")]
    if status == COMPLETED and failed:
        notes = ", ".join(f"the {agent} specialist ({_code(chosen[agent])})" for agent in failed)
        sections.append(f"Note: this answer is incomplete; {notes} could not finish.")
    return "\n\n".join(sections) or None


def _error(chosen: Mapping[str, Mapping[str, Any]], failed: list[str], status: str) -> dict[str, str] | None:
    if not failed:
        return None
    errors = {agent: _error_pair(chosen[agent]) for agent in failed}
    if status == FAILED and len(failed) == 1:
        code, message = errors[failed[0]]
        return {"code": code, "message": message}
    message = "; ".join(f"{agent}: {code}: {text}" for agent, (code, text) in errors.items())
    if status == COMPLETED:
        return {"code": PARTIAL_FAILURE, "message": message}
    codes = {code for code, _ in errors.values()}
    return {"code": codes.pop() if len(codes) == 1 else SPECIALISTS_FAILED, "message": message}


def _error_pair(result: Mapping[str, Any]) -> tuple[str, str]:
    """``error`` as a (code, message) pair, whether a dict, a pair, or missing."""
    error = result.get("error")
    if isinstance(error, Mapping):
        return str(error.get("code") or "UNKNOWN"), str(error.get("message") or "")
    if isinstance(error, (tuple, list)) and len(error) == 2:
        return str(error[0]), str(error[1])
    return "UNKNOWN", f"the {result['agent_type']} specialist reported {result['status']} without details"


def _code(result: Mapping[str, Any]) -> str:
    return _error_pair(result)[0]


def _usage(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The kept results' usage, plus the router model's call once: every specialist's copy
    of the task carries the same ``router_usage``."""
    kept = list(results)
    router = next((r["router_usage"] for r in kept if r.get("router_usage")), None)
    return sum_usage([*(r.get("usage") or {} for r in kept), *([router] if router else [])])


def sum_usage(usages: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of several usage records (a missing count is 0)."""
    totals: dict[str, Any] = dict.fromkeys(_USAGE_COUNTS, 0)
    cost = 0.0
    for usage in usages:
        for key in _USAGE_COUNTS:
            totals[key] += int(usage.get(key) or 0)
        cost += float(usage.get("cost_usd") or 0.0)
    totals["cost_usd"] = round(cost, 8)
    return totals
