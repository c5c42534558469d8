"""The soak's judgements (bench/soak.py) on made-up samples: a sawtooth of bytes on disk is
flat, a growing one is not, and what RocksDB's settings cap is checked against the cap."""

from __future__ import annotations

from bench.soak import Sample, SoakConfig, SoakReport, _dedupe_bytes, _flat, _rss_checks, state_filled_s

TABLE = "router.dedupe"


def _sawtooth(at: float, top: float, period: float = 60.0) -> float:
    return top * ((at % period) / period)


def _report(sst: dict[float, float], wal: dict[float, float], info: float = 50_000.0) -> SoakReport:
    config = SoakConfig(minutes=20, window_s=180)
    samples = [
        Sample(at, {}, {}, {}, {}, {TABLE: 100}, {TABLE: int(sst[at] + wal[at] + info)}, {TABLE: int(wal[at])},
               {TABLE: int(sst[at])}, {TABLE: int(info)})
        for at in sst
    ]
    return SoakReport(config, samples=samples, partitions=6)


def test_a_sawtooth_is_flat_by_its_maxima_and_a_rising_one_is_not() -> None:
    times = [float(t) for t in range(0, 1200, 10)]
    steady = [(t, _sawtooth(t, 1e6, period=170.0)) for t in times]
    rising = [(t, _sawtooth(t, 1e6 + 1_000 * t, period=170.0)) for t in times]
    assert _flat("bytes", steady, 240, 1200, 180, 0.25, statistic=max).ok is True
    check = _flat("bytes", rising, 240, 1200, 180, 0.25, statistic=max)
    assert check.ok is False and check.detail.startswith("max "), check.detail


def test_growing_table_files_fail_and_any_wal_fails() -> None:
    times = [float(t) for t in range(0, 3600, 10)]
    growing = {t: 100_000 + 1_000 * t for t in times}
    over_cap = {t: 1.0 if t > 600 else 0.0 for t in times}  # the stores write none (runtime/store.py)
    checks = {c.name: c for c in _dedupe_bytes(_report(growing, over_cap), TABLE, 240, 3600)}
    assert checks[f"table files {TABLE}"].ok is False
    assert checks[f"WAL {TABLE}"].ok is False
    assert checks[f"info log {TABLE}"].ok is True


def test_a_ten_minute_sawtooth_of_table_files_is_judged_by_the_peaks_of_each_half() -> None:
    # Soak run 5: table files rise with flushes and fall at compactions every ~10 min; 180-s
    # windows compare two phases of it (here +100 % or more), the halves compare peaks.
    times = [float(t) for t in range(0, 3600, 10)]
    sawtooth = {t: 100_000 + _sawtooth(t, 300_000, period=600.0) for t in times}
    wal = dict.fromkeys(times, 0.0)
    (files, *_) = _dedupe_bytes(_report(sawtooth, wal), TABLE, 240, 3600)
    assert files.ok is True and "(t 240-1920 s)" in files.detail, files.detail
    by_phase = _flat("bytes", list(sawtooth.items()), 240, 3600, 180, 0.25, statistic=max)
    assert by_phase.ok is False, by_phase.detail


def test_a_run_too_short_for_two_teeth_per_half_is_not_judged() -> None:
    times = [float(t) for t in range(0, 1200, 10)]
    late_first_flush = {t: 300_000.0 if t > 1000 else 0.0 for t in times}
    wal = dict.fromkeys(times, 0.0)  # the stores write none (runtime/store.py)
    checks = {c.name: c for c in _dedupe_bytes(_report(late_first_flush, wal), TABLE, 240, 1200)}
    assert checks[f"table files {TABLE}"].ok is None
    assert "needs 2400 s" in checks[f"table files {TABLE}"].detail
    assert checks[f"WAL {TABLE}"].ok is True


def _rss_report(rss_of: dict[int, list[tuple[float, float]]], minutes: float = 30) -> SoakReport:
    """Samples of one slot, ``router``, from the processes in ``rss_of`` (pid -> (at, MB))."""
    samples = []
    for pid, points in rss_of.items():
        born = points[0][0]
        samples += [Sample(at, {"router": int(mb * 1e6)}, {"router": pid}, {"router": at - born}, {}, {}, {}, {})
                    for at, mb in points]
    config = SoakConfig(minutes=minutes, rate=20, sessions=2000, warmup_s=180, window_s=180)
    return SoakReport(config, samples=sorted(samples, key=lambda s: s.at), load_seconds=minutes * 60,
                      partitions=6, remember_turns=10)


def test_rss_is_judged_per_process_once_the_sessions_are_full() -> None:
    # 2,000 sessions at 20 tasks/s remember 10 turns each after 1,000 s.
    filling = [(float(t), 70 + 0.08 * t) for t in range(0, 1200, 10)]  # grows while sessions fill
    restarted = [(float(t), 120.0) for t in range(1200, 1800, 10)]  # starts later, flat
    report = _rss_report({1: filling, 2: restarted})
    assert state_filled_s(report) == 1000
    first, second = _rss_checks(report, "router")
    assert first.ok is None and "1000" in first.detail  # lived too short after the state filled
    assert second.ok is True and "(t 1380-1560 s)" in second.detail  # warmed up 180 s after its start


def test_rss_that_keeps_growing_after_the_state_filled_fails() -> None:
    leaking = [(float(t), 70 + 0.05 * t) for t in range(0, 1800, 10)]
    (check,) = _rss_checks(_rss_report({1: leaking}), "router")
    assert check.ok is False, check.detail


def test_repeats_within_the_dedupe_retention_are_duplicates_and_later_ones_are_told_apart() -> None:
    from bench.soak import count_repeats

    def result(task: str, at_s: float) -> dict[str, object]:
        return {"task_id": task, "completed_at": int(at_s * 1000)}

    results = [result("a", 0), result("a", 5),  # again within 20 s: a duplicate
               result("b", 0), result("b", 37),  # again after 20 s: outside the dedupe window
               result("c", 1), result("d", 2)]
    letters = [{"task_id": "d"}]  # a result and a dead letter: judged strictly
    assert count_repeats(results, letters, retention_s=20) == (2, 1)
