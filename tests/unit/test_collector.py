"""A serving worker's collector settings (runtime/collector.py)."""

from __future__ import annotations

import gc

from agentstream.runtime.collector import YOUNG_THRESHOLD, tune_for_serving


def test_serving_freezes_what_was_built_and_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        built = [{"tool": n} for n in range(100)]  # something the worker built before serving
        tune_for_serving()
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() >= len(built)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
