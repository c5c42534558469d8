"""How a result reads on a terminal: the reason of a failure, a cut marked with an ellipsis, and
why `submit --wait` gave up."""

from __future__ import annotations

from typing import Any

from agentstream.display import ELLIPSIS, PREVIEW_CHARS, format_result, no_result_line, shorten


def _result(**fields: Any) -> dict[str, Any]:
    base = {
        "task_id": "t-1", "session_id": "s-1", "status": "COMPLETED", "agents": ["billing"], "output": "Refunded.",
        "error": None, "usage": {"llm_calls": 2}, "completed_at": 1_700_000_000_000,
    }
    return {**base, **fields}


def test_shorten_marks_the_cut() -> None:
    assert shorten("abc", 3) == "abc"
    assert shorten("abcdef", 4) == "abc" + ELLIPSIS
    assert len(shorten("x" * 500, PREVIEW_CHARS)) == PREVIEW_CHARS


def test_a_long_answer_is_one_cut_line_unless_full() -> None:
    answer = "line one\n" + "word " * 100
    cut = format_result(_result(output=answer)).splitlines()
    assert len(cut) == 2 and cut[1].endswith(ELLIPSIS) and cut[1].startswith("    line one word")
    whole = format_result(_result(output=answer), full=True).splitlines()
    assert whole[1:] == ["    line one", "    " + "word " * 100] and ELLIPSIS not in "".join(whole)


def test_a_rejected_or_failed_result_shows_its_reason() -> None:
    rejected = _result(status="REJECTED", agents=[], output=None,
                       error={"code": "INVALID_TASK", "message": "input is 40000 bytes, over the limit of 32768 bytes"})
    headline, reason = format_result(rejected).splitlines()
    assert headline.endswith("t-1 [s-1] REJECTED via - calls=2")
    assert reason == "    INVALID_TASK: input is 40000 bytes, over the limit of 32768 bytes"
    failed = _result(status="FAILED", output="Partial answer.", error={"code": "DEAD_LETTERED", "message": "why"})
    assert format_result(failed).splitlines()[1:] == ["    DEAD_LETTERED: why", "    Partial answer."]


def test_a_wait_without_a_result_says_what_the_last_progress_event_said() -> None:
    event = {"stage": "billing", "state": "WAITING_INPUT", "detail": "waiting for approval of refund_invoice"}
    line = no_result_line("t-1", 15, event, "WAITING_INPUT")
    assert line.startswith("agentstream: no result for t-1 within 15 s; its last progress: billing: WAITING_INPUT waiting")
    assert "`agentstream approvals list`" in line and line.endswith("shows it when it does.")
    running = no_result_line("t-1", 15, {**event, "state": "RUNNING", "detail": "billing started"}, "WAITING_INPUT")
    assert "approvals" not in running and "its last progress: billing: RUNNING billing started" in running


def test_a_wait_without_any_progress_names_a_duplicate_id_or_a_missing_router() -> None:
    line = no_result_line("t-1", 8, None, "WAITING_INPUT")
    assert "no stage reported progress on it: a task id submitted before gets no second result" in line
    assert "`agentstream lag`" in line
