"""bench.gateway_load's steady-mode judgements (bench/gateway_steady.py) on made-up input: a
stream's event ids against its task's offsets on task-events, the schedule's summary, and
the gateway's open-stream gauge read from Prometheus' text format; and what the load bench
says of a task's events against its result."""

from __future__ import annotations

import math

import pytest

from bench.gateway_load import Seen
from bench.gateway_steady import (SSE_GAUGE, StreamFaults, faults_total, gauge_value, lost_offsets, planned_tasks,
                                  schedule_summary, stream_faults)


def test_a_stream_with_every_event_in_order_has_no_fault() -> None:
    assert stream_faults(["e3", "e7", "e9"], [3, 7, 9]) == StreamFaults()


def test_an_event_on_the_topic_missing_from_the_stream_is_lost() -> None:
    assert stream_faults(["e3", "e9"], [3, 7, 9]) == StreamFaults(lost=1)


def test_the_lost_events_are_named_by_offset_whatever_else_the_stream_sent() -> None:
    assert lost_offsets(["e9", "e3", "e3", "e4"], [3, 7, 9, 12]) == [7, 12]


def test_an_id_sent_twice_is_repeated_not_out_of_order() -> None:
    assert stream_faults(["e3", "e7", "e7", "e3", "e9"], [3, 7, 9]) == StreamFaults(repeated=2)


def test_a_new_id_after_a_later_one_is_out_of_order() -> None:
    assert stream_faults(["e7", "e3", "e9"], [3, 7, 9]) == StreamFaults(out_of_order=1)


def test_an_id_the_topic_never_had_is_counted_apart() -> None:
    assert stream_faults(["e3", "e4"], [3]) == StreamFaults(unseen_on_topic=1)


def test_an_id_not_of_task_events_names_itself() -> None:
    with pytest.raises(ValueError, match="'r12'"):
        stream_faults(["r12"], [])


def test_totals_count_the_streams_with_any_fault() -> None:
    totals = faults_total([StreamFaults(), StreamFaults(lost=2), StreamFaults(repeated=1, out_of_order=1)])
    assert totals == {"streams": 3, "lost": 2, "repeated": 1, "out_of_order": 1, "unseen_on_topic": 0,
                      "streams_with_faults": 2}


def test_the_schedule_reports_its_lateness_and_the_rate_achieved() -> None:
    began = [100.0 + i / 5 for i in range(11)]  # 11 starts 0.2 s apart: 5 a second
    behind = [0.001] * 9 + [0.004, 0.050]
    summary = schedule_summary(5.0, behind, began)
    assert summary["achieved_per_s"] == pytest.approx(5.0)
    assert summary["behind_p50_ms"] == pytest.approx(1.0)
    assert summary["behind_max_ms"] == pytest.approx(50.0)


def test_a_schedule_of_one_start_has_no_rate() -> None:
    assert math.isnan(schedule_summary(5.0, [0.0], [1.0])["achieved_per_s"])


def test_planned_tasks_are_the_rate_times_the_duration_and_at_least_one() -> None:
    assert planned_tasks(200, 60) == 12_000
    assert planned_tasks(0.01, 1) == 1


def test_the_gauge_is_read_from_its_own_line_only() -> None:
    exposition = (f"# HELP {SSE_GAUGE} Server-Sent Event streams open now\n# TYPE {SSE_GAUGE} gauge\n"
                  f"{SSE_GAUGE}_other 3.0\n{SSE_GAUGE} 212.0\n")
    assert gauge_value(exposition, SSE_GAUGE) == 212.0
    with pytest.raises(ValueError, match=SSE_GAUGE):
        gauge_value("", SSE_GAUGE)


def _seen(result_at: float | None, events: dict[int, float]) -> Seen:
    seen = Seen()
    seen.read = {offset: ("supervisor STATE COMPLETED", at) for offset, at in events.items()}
    if result_at is not None:
        seen.done_at = result_at
        seen.done.set()
    return seen


def test_a_tasks_last_event_after_its_result_is_timed_from_the_result() -> None:
    assert _seen(10.0, {3: 9.5, 4: 10.25, 5: 10.004}).after_result_s == pytest.approx(0.25)
    assert _seen(10.0, {3: 9.5}).after_result_s == 0.0  # every event before the result
    assert math.isnan(_seen(None, {3: 9.5}).after_result_s)  # no result: not a figure


def test_an_event_a_stream_lacked_is_described_against_the_result() -> None:
    assert _seen(10.0, {4: 10.25}).described(4) == "e4 (supervisor STATE COMPLETED) read +250 ms from the result"
    assert _seen(None, {4: 1.0}).described(4) == "e4 (supervisor STATE COMPLETED) read (no result)"
