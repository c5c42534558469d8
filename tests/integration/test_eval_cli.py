"""``agentstream eval`` as a user runs it: a process, the example apps' case sets (exit 0)
and a case set with a failing case (exit 1), and the table both print."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .harness import REPO

EXAMPLES = REPO / "examples"


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTSTREAM_")}
    return subprocess.run([sys.executable, "-m", "agentstream", "eval", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_every_example_apps_case_set_passes() -> None:
    apps = sorted(path.parent for path in EXAMPLES.glob("*/evals.yaml"))
    assert [app.name for app in apps] == ["document_review", "support_desk"]
    for app in apps:
        done = _eval(str(app / "evals.yaml"), "--app", str(app))
        assert done.returncode == 0, done.stdout + done.stderr
        header, *rows, summary = done.stdout.strip().splitlines()[1:]
        assert header.split() == ["case", "score", "pass", "cost", "latency", "steps"]
        assert rows and all(" yes " in row for row in rows), done.stdout
        assert summary.startswith(f"{len(rows)}/{len(rows)} passed (100%") and ": PASS;" in summary


def test_a_failing_case_under_the_threshold_exits_non_zero(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("""
agent: billing
cases:
  - {id: paid, input: "Status of INV-1002?", expect: [{contains: overpaid}]}
  - {id: wrong, input: "Status of INV-1002?", expect: [{regex: 'status=refunded'}]}
""", encoding="utf-8")
    failing = _eval(str(cases), "--threshold", "0.75")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "1/2 passed (50%; threshold 75%): FAIL" in failing.stdout
    assert any(line.startswith("wrong") and " NO " in line for line in failing.stdout.splitlines()), failing.stdout
    lenient = _eval(str(cases), "--threshold", "0.5")
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    refused = _eval(str(cases), "--agent", "nobody")
    assert refused.returncode == 2 and "Unknown agent type 'nobody'" in refused.stderr
