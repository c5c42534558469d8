"""``agentstream eval`` as a user runs it: a process, the example apps' case sets (exit 0),
a case set with a failing case (exit 1), and an LLM judge on an OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentstream.settings import OPENAI_API_KEY_ENV, OPENAI_BASE_URL_ENV
from tests.unit.test_providers_openai import LoopbackServer, Reply, completion

from .harness import REPO

EXAMPLES = REPO / "examples"


def _eval(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("AGENTSTREAM_")}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "agentstream", "eval", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_every_example_apps_case_set_passes() -> None:
    apps = sorted(path.parent for path in EXAMPLES.glob("*/evals.yaml"))
    assert [app.name for app in apps] == ["document_review", "support_desk"]
    for app in apps:
        done = _eval(str(app / "evals.yaml"), "--app", str(app))
        assert done.returncode == 0, done.stdout + done.stderr
        header, *rows, summary = done.stdout.strip().splitlines()[1:]
        assert header.split() == ["case", "score", "pass", "cost", "judge", "latency", "steps"]
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


def _grade(request: dict[str, Any]) -> Reply:
    """A judge on an OpenAI-compatible server: passes an answer that names the overpayment."""
    prompt = request["json"]["messages"][-1]["content"]
    answer = prompt.split("Answer:\n", 1)[1]
    passed = "overpaid" in answer
    grade = {"score": 1.0 if passed else 0.2, "passed": passed, "reason": "names it" if passed else "does not name it"}
    call = {"id": "call_1", "type": "function", "function": {"name": "grade", "arguments": json.dumps(grade)}}
    return Reply(body=completion({"content": None, "tool_calls": [call]}, finish="tool_calls"))


def test_the_llm_judge_is_a_real_model_when_the_case_file_names_one(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("""
agent: billing
judge: "openai:grader-1"
cases:
  - {id: overpaid, input: "Status of INV-1002?", expect: [{llm_judge: {rubric: "Says the invoice was overpaid."}}]}
  - {id: order, input: "Where is order 5004?", expect: [{llm_judge: {rubric: "Says the invoice was overpaid."}}]}
""", encoding="utf-8")
    with LoopbackServer(_grade).running() as server:
        done = _eval(str(cases), "--threshold", "1", env={OPENAI_BASE_URL_ENV: server.url + "/v1", OPENAI_API_KEY_ENV: "sk-test"})
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:-1]}
    assert " yes " in rows["overpaid"] and " NO " in rows["order"] and "llm_judge: does not name it" in rows["order"]
    assert [r["json"]["model"] for r in server.requests] == ["grader-1", "grader-1"]  # the agent stayed scripted
    assert all("Rubric: Says the invoice was overpaid." in r["json"]["messages"][-1]["content"] for r in server.requests)
