"""bench/_worker_metrics.py's quantile of the observations between two scrapes of a histogram."""

from __future__ import annotations

import math

import pytest

from bench._worker_metrics import quantile

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
