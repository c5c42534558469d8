"""The supervisor's combination of specialist results: output, status, usage, versions."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.errors import InconsistentResultsError
from agentstream.supervisor import combine, is_complete


def _result(agent_type: str, status: str = "COMPLETED", **overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "task_id": "task-1",
        "agent_type": agent_type,
        "status": status,
        "output": f"{agent_type} answer" if status == "COMPLETED" else None,
        "error": None if status == "COMPLETED" else {"code": "MODEL_ERROR", "message": "RuntimeError: down"},
        "tools_used": ["search_kb"],
        "usage": {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.001, "llm_calls": 2, "tool_calls": 1},
        "behavior_version": f"{agent_type[:3]}000000000",
    }
    result.update(overrides)
    return result


def test_a_single_result_passes_through() -> None:
    combined = combine([_result("billing", output="Your refund is on its way.")])
    assert combined == {
        "task_id": "task-1",
        "status": "COMPLETED",
        "output": "Your refund is on its way.",
        "error": None,
        "agents": ["billing"],
        "usage": {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.001, "llm_calls": 2, "tool_calls": 1, "retries": 0},
        "behavior_versions": {"billing": "bil000000000"},
    }


def test_several_results_become_sections_in_agent_order() -> None:
    combined = combine([_result("technical"), _result("billing")])
    assert combined["status"] == "COMPLETED" and combined["error"] is None
    assert combined["output"] == "Billing: billing answer\n\nTechnical: technical answer"
    assert combined["agents"] == ["billing", "technical"]
    assert combined["usage"] == {
        "input_tokens": 200,
        "output_tokens": 40,
        "cost_usd": 0.002,
        "llm_calls": 4,
        "tool_calls": 2,
        "retries": 0,
    }
    assert combined["behavior_versions"] == {"billing": "bil000000000", "technical": "tec000000000"}


def test_partial_failure_completes_with_a_note_and_an_error() -> None:
    combined = combine([_result("billing"), _result("technical", "FAILED")])
    assert combined["status"] == "COMPLETED"
    assert combined["output"] == (
        "Billing: billing answer\n\n"
        "Note: this answer is incomplete; the technical specialist (MODEL_ERROR) could not finish."
    )
    assert combined["error"] == {"code": "PARTIAL_FAILURE", "message": "technical: MODEL_ERROR: RuntimeError: down"}
    assert combined["agents"] == ["billing", "technical"]


def test_a_failed_single_specialist_passes_its_error_through() -> None:
    combined = combine([_result("account", "FAILED", error=("MAX_STEPS", "Stopped."), output="(incomplete) partial")])
    assert combined["status"] == "FAILED"
    assert combined["error"] == {"code": "MAX_STEPS", "message": "Stopped."}
    assert combined["output"] == "(incomplete) partial"


def test_all_failed_with_one_code_keeps_the_code() -> None:
    combined = combine([_result("billing", "FAILED"), _result("technical", "FAILED")])
    assert combined["status"] == "FAILED" and combined["output"] is None
    assert combined["error"] == {
        "code": "MODEL_ERROR",
        "message": "billing: MODEL_ERROR: RuntimeError: down; technical: MODEL_ERROR: RuntimeError: down",
    }


def test_all_failed_with_different_codes() -> None:
    combined = combine(
        [
            _result("billing", "FAILED", error={"code": "MAX_STEPS", "message": "Stopped."}, output="(incomplete) x"),
            _result("technical", "FAILED"),
        ]
    )
    assert combined["status"] == "FAILED"
    assert combined["error"]["code"] == "SPECIALISTS_FAILED"
    assert combined["output"] == "Billing: (incomplete) x"


def test_a_failure_without_details_still_gets_a_code() -> None:
    combined = combine([_result("billing", "FAILED", error=None)])
    assert combined["error"] == {"code": "UNKNOWN", "message": "the billing specialist reported FAILED without details"}


def test_redelivered_results_count_once_and_completed_wins() -> None:
    billing = _result("billing")
    combined = combine(
        [billing, _result("technical", "FAILED"), dict(billing), _result("technical"), _result("technical", "FAILED")]
    )
    assert combined["status"] == "COMPLETED" and combined["error"] is None
    assert combined["usage"]["llm_calls"] == 4 and combined["usage"]["input_tokens"] == 200


def test_the_router_models_call_counts_once_however_many_specialists_carry_it() -> None:
    router = {"input_tokens": 50, "output_tokens": 5, "cost_usd": 0.0005, "llm_calls": 1, "tool_calls": 0, "retries": 0}
    combined = combine([_result("billing", router_usage=router), _result("technical", router_usage=dict(router))])
    assert combined["usage"] == {
        "input_tokens": 250, "output_tokens": 45, "cost_usd": 0.0025, "llm_calls": 5, "tool_calls": 2, "retries": 0,
    }


def test_missing_usage_fields_count_as_zero() -> None:
    combined = combine([_result("billing", usage={"input_tokens": 7}), _result("account", usage=None)])
    assert combined["usage"] == {
        "input_tokens": 7,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "llm_calls": 0,
        "tool_calls": 0,
        "retries": 0,
    }


def test_results_of_several_tasks_or_none_are_refused() -> None:
    with pytest.raises(InconsistentResultsError, match="task-1"):
        combine([_result("billing"), _result("technical", task_id="task-2")])
    with pytest.raises(InconsistentResultsError, match="empty"):
        combine([])


def test_is_complete_when_every_routed_type_reported() -> None:
    assert is_complete(["billing", "technical"], {"technical", "billing"})
    assert not is_complete(["billing", "technical"], {"billing"})
    assert is_complete(["account"], {"account", "billing"})  # a stray extra result does not block
    assert not is_complete(["account"], set())
