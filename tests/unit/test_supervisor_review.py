"""The supervisor's review: the tool schema, the checks on the model's verdict, what each
verdict makes of the combined result, the topology section, and the call itself against a
real OpenAI-compatible HTTP server (LoopbackServer), falling back when it fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentstream.errors import ConfigurationError
from agentstream.models.base import ModelResponse, ToolCall, Usage
from agentstream.supervisor.app import final_result
from agentstream.supervisor.review import (
    NEEDS_HUMAN_REVIEW,
    REVIEW_TOOL,
    MalformedReview,
    Review,
    check_review,
    describe,
    parse_review,
    review_messages,
    review_tool,
    reviewed,
)
from agentstream.supervisor.reviewer import Reviewer
from agentstream.topology import SupervisionSettings, load_topology
from tests.integration.harness import REPO
from tests.unit.test_providers_openai import LoopbackServer, Reply, completion, error, tool_call

TYPES = ["account", "billing"]
VALID = {"verdict": "publish", "answer": "Both done.", "feedback": "", "confidence": 0.8}


def _result(agent_type: str, output: str | None = "ok", status: str = "COMPLETED") -> dict[str, Any]:
    return {
        "task_id": "t-1", "session_id": "s-1", "tenant_id": "acme", "agent_type": agent_type, "route": TYPES,
        "status": status, "output": output, "error": None, "tools_used": [], "behavior_version": "v1",
        "usage": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01, "llm_calls": 1, "tool_calls": 0, "retries": 0},
        "submitted_at": 1, "started_at": 2, "finished_at": 3, "tier": "standard", "model": "scripted:x",
        "input": "Refund my last payment and close my account",
    }


RESULTS = [_result("account", "Closed."), _result("billing", "Refunded.")]


# -- the tool and the prompt --------------------------------------------------------------
def test_the_tool_offers_the_three_verdicts_and_the_tasks_specialists() -> None:
    parameters = review_tool(TYPES)["parameters"]
    assert review_tool(TYPES)["name"] == REVIEW_TOOL
    assert parameters["properties"]["verdict"]["enum"] == ["publish", "revise", "escalate"]
    assert parameters["properties"]["agent_type"]["enum"] == TYPES
    assert set(parameters["required"]) == {"verdict", "answer", "feedback", "confidence"}


def test_the_prompt_holds_the_rubric_the_task_and_each_answer_cut_to_the_limit() -> None:
    system, user = review_messages("Refund me", [_result("billing", "x" * 50)], "Never promise dates.", 20)
    assert "Never promise dates." in (system.content or "")
    assert (user.content or "").startswith("The task:\nRefund me")
    assert "- billing (COMPLETED): " + "x" * 20 + " [cut]" in (user.content or "")


# -- checking the verdict -----------------------------------------------------------------
def test_a_valid_publish_is_accepted() -> None:
    assert check_review(VALID, TYPES, 100) == Review("publish", "Both done.", "", None, 0.8)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"verdict": "ship"}, "verdict must be one of ['publish', 'revise', 'escalate'], got 'ship'"),
        ({"answer": "  "}, "answer must be text, and not blank for publish"),
        ({"answer": 3}, "answer must be text"),
        ({"answer": "y" * 101}, "answer has 101 characters, more than supervision.max_answer_chars 100"),
        ({"verdict": "escalate", "feedback": ""}, "feedback must be text, and not blank for escalate"),
        ({"verdict": "revise", "feedback": "fix it", "agent_type": "legal"},
         "revise needs agent_type, one of ['account', 'billing'], got 'legal'"),
        ({"confidence": 1.5}, "confidence must be a number from 0 to 1, got 1.5"),
        ({"confidence": True}, "confidence must be a number from 0 to 1, got True"),
        ({"confidence": float("nan")}, "confidence must be a number from 0 to 1, got nan"),
    ],
)
def test_invalid_arguments_name_the_bad_value(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedReview, match=None) as caught:
        check_review({**VALID, **change}, TYPES, 100)
    assert str(caught.value).startswith(reason)


def _response(arguments: dict[str, Any] | None = None, text: str | None = None, tool: str = REVIEW_TOOL) -> ModelResponse:
    calls = (ToolCall("c-1", tool, arguments),) if arguments is not None else ()
    return ModelResponse(text, calls, Usage(100, 20, 0.002), "openai:m")


def test_the_call_and_json_text_are_both_accepted_and_carry_the_calls_usage() -> None:
    assert parse_review(_response(VALID), TYPES, 100).usage == Usage(100, 20, 0.002)
    assert parse_review(_response(text=json.dumps(VALID)), TYPES, 100).verdict == "publish"


def test_another_tool_or_prose_is_refused() -> None:
    with pytest.raises(MalformedReview, match=r"the model called \['route_task'\], not review"):
        parse_review(_response(VALID, tool="route_task"), TYPES, 100)
    with pytest.raises(MalformedReview, match="no review call, and the text is not JSON"):
        parse_review(_response(text="Looks fine to me"), TYPES, 100)


# -- what a verdict makes of the combined result ------------------------------------------
def _combined() -> dict[str, Any]:
    final = final_result(RESULTS, RESULTS)
    assert final["output"] == "Account: Closed.\n\nBilling: Refunded."  # today's combine
    return final


def test_publish_makes_the_models_answer_the_output_and_adds_its_call_to_the_usage() -> None:
    final = reviewed(_combined(), Review("publish", "Refunded and closed.", "", None, 0.9, Usage(100, 20, 0.002)), "openai:m")
    assert (final["status"], final["output"], final["error"]) == ("COMPLETED", "Refunded and closed.", None)
    assert final["review"] == {"verdict": "publish", "feedback": "", "confidence": 0.9, "model": "openai:m", "revisions": 0}
    assert (final["usage"]["input_tokens"], final["usage"]["llm_calls"], final["usage"]["cost_usd"]) == (120, 3, 0.022)


def test_escalate_fails_the_task_for_a_human_with_the_draft_and_the_reason() -> None:
    final = reviewed(_combined(), Review("escalate", "Draft.", "Refund above policy", None, 0.7), "openai:m")
    assert (final["status"], final["output"]) == ("FAILED", "Draft.")
    assert final["error"] == {"code": NEEDS_HUMAN_REVIEW, "message": "Refund above policy"}
    assert final["review"]["verdict"] == "escalate"


def test_revise_beyond_the_bound_goes_to_a_human_naming_the_specialist_and_the_bound() -> None:
    final = reviewed(_combined(), Review("revise", "", "wrong amount", "billing", 0.6), "openai:m", revisions=1)
    assert final["status"] == "FAILED" and final["output"] == "Account: Closed.\n\nBilling: Refunded."
    why = "revision 2 of billing asked, beyond supervision.max_revisions 1: wrong amount"
    assert final["error"] == {"code": NEEDS_HUMAN_REVIEW, "message": why}
    assert (final["review"]["verdict"], final["review"]["feedback"], final["review"]["revisions"]) == ("escalate", why, 1)


def test_the_event_says_which_path_decided() -> None:
    assert describe(Review("publish", "a", "", None, 0.85), "openai:m") == "reviewed by openai:m: publish, confidence 0.85"
    assert describe("model openai:m unavailable: boom", "openai:m") == "combined without review: model openai:m unavailable: boom"


# -- the topology section ------------------------------------------------------------------
def _topology_with(tmp_path: Path, agent: str, supervision: dict[str, Any]) -> Path:
    topology = yaml.safe_load((REPO / "examples" / "support_desk" / "topology.yaml").read_text())
    topology["agents"][agent]["supervision"] = supervision
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(topology))
    return path


MODEL = {"models": {"standard": "openai:supervisor-model"}}


def test_the_rubric_file_is_read_relative_to_the_topology(tmp_path: Path) -> None:
    (tmp_path / "rubric.md").write_text("Be kind.")
    topology = load_topology(_topology_with(tmp_path, "supervisor", {"model": MODEL, "rubric_file": "rubric.md"}))
    supervision = topology.agent("supervisor").supervision
    assert supervision is not None and supervision.rubric_text(topology.app_dir()) == "Be kind."


def test_a_missing_rubric_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    settings = SupervisionSettings.model_validate({"model": MODEL, "rubric_file": "nowhere.md"})
    with pytest.raises(ConfigurationError, match=r"Cannot read supervision.rubric_file '.*nowhere.md': No such file"):
        settings.rubric_text(tmp_path)


@pytest.mark.parametrize(
    ("agent", "supervision", "message"),
    [
        ("router", {"model": MODEL}, "supervision applies to the supervisor only, not to a router"),
        ("supervisor", {"model": MODEL, "rubric": "a", "rubric_file": "b"}, "supervision sets both rubric and rubric_file"),
        ("supervisor", {"model": {**MODEL, "max_steps": 3}}, "supervision.model sets ['max_steps']"),
        ("supervisor", {"model": MODEL, "max_revisions": 4}, "max_revisions"),
        ("supervisor", {"model": MODEL, "rubrik": "a"}, "rubrik"),
    ],
)
def test_a_wrong_section_is_refused_at_load(tmp_path: Path, agent: str, supervision: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as caught:
        load_topology(_topology_with(tmp_path, agent, supervision))
    assert message in str(caught.value)


def test_without_the_section_there_is_no_reviewer() -> None:
    assert Reviewer.from_settings(load_topology().agent("supervisor").supervision, None) is None


# -- the call, against a real HTTP server ---------------------------------------------------
@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    with LoopbackServer().running() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.delenv("AGENTSTREAM_MODEL", raising=False)
        yield srv


def _reviewer() -> Reviewer:
    settings = SupervisionSettings.model_validate({
        "model": {"models": {"standard": "openai:supervisor-model"}, "timeout_s": 5, "call_timeout_s": 5},
        "controls": {"retry": {"max_attempts": 1}},
        "rubric": "Never promise a date.",
    })
    return Reviewer(settings, None)


def _tool_reply(arguments: dict[str, Any]) -> Reply:
    call = tool_call("call-1", REVIEW_TOOL, json.dumps(arguments))
    return Reply(body=completion({"content": None, "tool_calls": [call]}, finish="tool_calls"))


def test_the_reviewer_offers_the_review_tool_and_returns_the_checked_verdict(server: LoopbackServer) -> None:
    server.replies.append(_tool_reply({**VALID, "verdict": "escalate", "feedback": "needs a manager"}))
    got = asyncio.run(_reviewer().review("t-1", RESULTS))
    assert isinstance(got, Review) and (got.verdict, got.feedback) == ("escalate", "needs a manager")
    body = server.requests[0]["json"]
    assert [tool["function"]["name"] for tool in body["tools"]] == [REVIEW_TOOL]
    assert "Never promise a date." in body["messages"][0]["content"]
    assert "Refund my last payment and close my account" in body["messages"][-1]["content"]


def test_a_503_is_returned_as_the_reason_to_combine(server: LoopbackServer) -> None:
    server.replies.append(error(503, "The server is overloaded.", None, "server_error"))
    got = asyncio.run(_reviewer().review("t-1", RESULTS))
    assert isinstance(got, str) and got.startswith("model openai:supervisor-model unavailable: ModelServerError: "), got


def test_an_invalid_verdict_is_returned_as_the_reason_to_combine(server: LoopbackServer) -> None:
    server.replies.append(_tool_reply({**VALID, "verdict": "maybe"}))
    got = asyncio.run(_reviewer().review("t-1", RESULTS))
    assert got == "model openai:supervisor-model answer invalid: verdict must be one of ['publish', 'revise', 'escalate'], got 'maybe'"


def test_results_without_the_tasks_input_are_not_reviewed(server: LoopbackServer) -> None:
    got = asyncio.run(_reviewer().review("t-1", [{**r, "input": None} for r in RESULTS]))
    assert got == "the specialist results do not carry the task's input" and server.requests == []
