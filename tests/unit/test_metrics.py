"""The retry chain's metric hooks are plain prometheus-client counters."""

from __future__ import annotations

from prometheus_client import REGISTRY

from agentstream import metrics


def test_counters_are_created_once_and_count_per_label() -> None:
    assert metrics.retries() is metrics.retries()
    before = REGISTRY.get_sample_value("agentstream_dead_letters_total", {"stage": "router", "error_class": "PERMANENT"}) or 0
    metrics.dead_letters().labels("router", "PERMANENT").inc()
    after = REGISTRY.get_sample_value("agentstream_dead_letters_total", {"stage": "router", "error_class": "PERMANENT"})
    assert after == before + 1
