"""bench/_worker_metrics.py: the quantile of the observations between two scrapes of a histogram, and
requests per task between two scrapes of the request counter."""

from __future__ import annotations

import math

import pytest

from bench._worker_metrics import quantile, requests_per_task

INF = float("inf")
BEFORE = {0.001: 5.0, 0.01: 5.0, 0.1: 5.0, INF: 5.0}  # five observations before the window


def test_the_quantile_is_interpolated_within_its_bucket_over_the_window_only() -> None:
    after = {0.001: 15.0, 0.01: 65.0, 0.1: 105.0, INF: 105.0}  # 10, 50 and 40 in the window
    assert quantile(BEFORE, after, 0.1) == pytest.approx(0.001)
    assert quantile(BEFORE, after, 0.5) == pytest.approx(0.001 + 0.009 * (50 - 10) / 50)
    assert quantile(BEFORE, after, 0.9) == pytest.approx(0.01 + 0.09 * (90 - 60) / 40)


def test_a_quantile_in_the_open_bucket_answers_its_lower_bound() -> None:
    after = {0.001: 5.0, 0.01: 5.0, 0.1: 55.0, INF: 105.0}
    assert quantile(BEFORE, after, 0.9) == pytest.approx(0.1)


def test_no_observation_in_the_window_gives_nan() -> None:
    assert math.isnan(quantile(BEFORE, BEFORE, 0.5))


def test_requests_per_task_split_produce_fetch_and_the_rest_and_sum_the_workers() -> None:
    before = {"router": {"Produce": 10.0, "Fetch": 4.0, "Heartbeat": 1.0}}  # billing: no series yet
    after = {"router": {"Produce": 30.0, "Fetch": 14.0, "Heartbeat": 3.0, "OffsetCommit": 2.0},
             "billing": {"Produce": 80.0, "Fetch": 10.0}}
    assert requests_per_task(before, after, 10) == {
        "router": {"Produce": 2.0, "Fetch": 1.0, "other": 0.4},
        "billing": {"Produce": 8.0, "Fetch": 1.0, "other": 0.0},
        "all": {"Produce": 10.0, "Fetch": 2.0, "other": 0.4},
    }
