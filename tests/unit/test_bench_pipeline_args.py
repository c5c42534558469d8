"""bench.pipeline's command line: the paced warm-up's defaults and refusals (no broker)."""

from __future__ import annotations

import pytest

from bench.pipeline import PACED_WARMUP_S, parse_args


def test_paced_levels_are_warmed_up_by_default_and_a_smoke_run_is_not() -> None:
    assert parse_args([]).paced_warm_up == PACED_WARMUP_S
    assert parse_args(["--quick"]).paced_warm_up == 0
    assert parse_args(["--quick", "--paced-warm-up", "1"]).paced_warm_up == 1


def test_a_run_of_levels_at_once_records_no_paced_warm_up() -> None:
    assert parse_args(["--at-once", "500"]).paced_warm_up == 0
    assert parse_args(["--at-once", "500", "--paced-warm-up", "0"]).paced_warm_up == 0


@pytest.mark.parametrize("argv, says", [
    (["--at-once", "500", "--paced-warm-up", "20"], "--at-once runs none: drop one"),
    (["--paced-warm-up", "-1"], "give a number of seconds >= 0"),
    (["--paced-warm-up", "nan"], "give a number of seconds >= 0"),
    (["--paced-warm-up", "inf"], "give a number of seconds >= 0"),
])
def test_a_paced_warm_up_that_cannot_run_is_refused_before_anything_starts(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert says in capsys.readouterr().err
