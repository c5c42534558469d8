"""The deterministic scorers of an eval case: contains, regex, exact. Pure.

Each gives a score from 0 to 1 and a pass; ``detail`` says what was missing, so a failing
case reads without rerunning it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_SHOWN_CHARS = 60


@dataclass(frozen=True, slots=True)
class Score:
    scorer: str
    score: float
    passed: bool
    detail: str = ""
    cost_usd: float = 0.0  # what scoring cost: the LLM judge's call (the deterministic scorers cost nothing)


def contains(output: str, needles: str | Sequence[str]) -> Score:
    """Every needle is a substring of the output (case-sensitive); the score is the share found."""
    wanted = [needles] if isinstance(needles, str) else list(needles)
    missing = [needle for needle in wanted if needle not in output]
    score = (len(wanted) - len(missing)) / len(wanted) if wanted else 1.0
    return Score("contains", score, not missing, f"missing {missing}" if missing else "")


def regex(output: str, pattern: str) -> Score:
    """The pattern is found in the output (``re.search``; write ``(?i)`` for any case)."""
    found = re.search(pattern, output) is not None
    return Score("regex", 1.0 if found else 0.0, found, "" if found else f"no match for {pattern!r}")


def exact(output: str, expected: str) -> Score:
    """The output is the expected text, byte for byte."""
    same = output == expected
    return Score("exact", 1.0 if same else 0.0, same, "" if same else f"got {_clip(output)!r}")


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
