"""Evals without a broker: the case file, the scorers, the judges and the report."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentstream.errors import ConfigurationError
from agentstream.evals.cases import Rubric, load_cases
from agentstream.evals.judge import ModelJudge, ScriptedJudge, judge_for
from agentstream.evals.run import evaluate, eval_agent, report
from agentstream.evals.scorers import contains, exact, regex
from agentstream.models import Message, ModelResponse, ModelSettings, ToolCall, Usage
from tests import support_desk


def test_contains_scores_the_share_of_needles_found() -> None:
    assert contains("an overpaid invoice", ["overpaid", "invoice"]).passed
    half = contains("an overpaid invoice", ["overpaid", "refunded"])
    assert (half.score, half.passed, half.detail) == (0.5, False, "missing ['refunded']")
    assert not contains("Overpaid", "overpaid").passed  # case-sensitive


def test_regex_searches_and_exact_compares_byte_for_byte() -> None:
    assert regex("amount_paid=480.0", r"amount_paid=480(\.0)?\b").passed
    assert regex("STATUS=paid", "(?i)status=paid").passed and not regex("status=open", "status=paid").passed
    assert exact("yes", "yes").passed
    missed = exact("yes ", "yes")
    assert not missed.passed and missed.detail == "got 'yes '"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cases.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_case_file_with_a_mistake_is_refused_with_what_and_where(tmp_path: Path) -> None:
    two = "cases: [{id: a, input: x, expect: [{contains: a, regex: b}]}]"
    with pytest.raises(ConfigurationError, match=r"exactly one scorer .* got \['contains', 'regex'\]"):
        load_cases(_write(tmp_path, two))
    with pytest.raises(ConfigurationError, match=r"'\(' is not a regular expression"):
        load_cases(_write(tmp_path, "cases: [{id: a, input: x, expect: [{regex: '('}]}]"))
    with pytest.raises(ConfigurationError, match=r"used twice: \['a'\]"):
        load_cases(_write(tmp_path, "cases: [{id: a, input: x, expect: [{exact: y}]}, {id: a, input: z, expect: [{exact: y}]}]"))
    with pytest.raises(ConfigurationError, match="unknown key 'treshold'"):
        load_cases(_write(tmp_path, "treshold: 0.5\ncases: [{id: a, input: x, expect: [{exact: y}]}]"))


class _Grader:
    """A stand-in judge model answering with one canned grade (``usage`` tokens, priced as
    ``model_id`` is in the default price table)."""

    def __init__(self, arguments: dict[str, Any], model_id: str = "openai:judge", usage: Usage = Usage(10, 5)) -> None:
        self.arguments = arguments
        self.model_id = model_id
        self.usage = usage
        self.seen: list[Sequence[Message]] = []

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        self.seen.append(messages)
        return ModelResponse(None, (ToolCall("g", "grade", self.arguments),), self.usage, self.model_id)


def test_a_model_judge_grades_through_its_tool_and_reads_the_rubric() -> None:
    grader = _Grader({"score": 0.75, "passed": True, "reason": "cites the invoice"})
    graded = asyncio.run(ModelJudge(grader).grade(Rubric(rubric="Cites the invoice."), "Why?", "INV-1 says so"))
    assert (graded.score, graded.passed, graded.detail) == (0.75, True, "cites the invoice")
    assert "Rubric: Cites the invoice." in (grader.seen[0][1].content or "")
    malformed = asyncio.run(ModelJudge(_Grader({"score": 3, "passed": True})).grade(Rubric(rubric="r"), "q", "a"))
    assert not malformed.passed and "malformed grade" in malformed.detail


def test_the_scripted_judge_applies_the_rubrics_rule_and_asks_for_one_when_missing() -> None:
    judge = judge_for("scripted:default", ModelSettings())
    assert isinstance(judge, ScriptedJudge)
    assert asyncio.run(judge.grade(Rubric(rubric="r", scripted="status=paid"), "q", "x status=paid")).passed
    with pytest.raises(ConfigurationError, match="has no scripted rule"):
        asyncio.run(judge.grade(Rubric(rubric="Says it is paid."), "q", "a"))


def test_a_case_set_runs_through_the_agent_loop_and_the_report_gates_on_the_threshold(tmp_path: Path) -> None:
    cases = load_cases(_write(tmp_path, """
cases:
  - {id: invoice, input: "Status of INV-1002?", expect: [{contains: overpaid}, {llm_judge: {rubric: r, scripted: 'INV-1002'}}]}
  - {id: refund, input: "Please issue a refund for INV-1002.", expect: [{contains: "needs a human's approval"}]}
  - {id: wrong, input: "Status of INV-1002?", expect: [{contains: [overpaid, refunded]}]}
"""))
    results = asyncio.run(evaluate(cases, eval_agent(support_desk.topology(), "billing"), ScriptedJudge()))
    assert [(r.case.id, r.passed, r.score) for r in results] == [("invoice", True, 1.0), ("refund", True, 1.0),
                                                                 ("wrong", False, 0.5)]
    assert all(r.run.outcome.steps == 2 for r in results)
    out = io.StringIO()
    assert report(results, 0.6, "title", out) == 0
    assert report(results, 0.8, "title", out) == 1
    lines = out.getvalue().splitlines()
    assert any(line.startswith("wrong") and "NO" in line and "contains: missing ['refunded']" in line for line in lines)
    assert "2/3 passed (67%; threshold 80%): FAIL" in lines[-1]


def test_the_table_shows_what_the_llm_judge_cost_per_case_and_in_all(tmp_path: Path) -> None:
    cases = load_cases(_write(tmp_path, """
cases:
  - {id: judged, input: "Status of INV-1002?", expect: [{llm_judge: {rubric: Says it is overpaid.}}]}
  - {id: plain, input: "Status of INV-1002?", expect: [{contains: overpaid}]}
"""))
    # gpt-4o-mini at $0.15 / $0.60 per 1M tokens: 10,000 in and 1,000 out cost $0.0021 a grade.
    grader = _Grader({"score": 1, "passed": True, "reason": "says so"}, "openai:gpt-4o-mini", Usage(10_000, 1_000))
    results = asyncio.run(evaluate(cases, eval_agent(support_desk.topology(), "billing"), ModelJudge(grader)))
    assert [r.judge_cost_usd for r in results] == [pytest.approx(0.0021), 0.0]
    assert [r.cost_usd for r in results] == [0.0, 0.0]  # the scripted agent model costs nothing
    out = io.StringIO()
    report(results, 0.5, "title", out)
    header, judged, plain, summary = out.getvalue().splitlines()[1:]
    assert header.split()[:5] == ["case", "score", "pass", "cost", "judge"]
    assert judged.split()[3:5] == ["$0.000000", "$0.002100"] and plain.split()[3:5] == ["$0.000000", "$0.000000"]
    assert "cost $0.002100 (agent $0.000000, judge $0.002100)" in summary
