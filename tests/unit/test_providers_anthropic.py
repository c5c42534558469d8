"""AnthropicModel through the real ``anthropic`` SDK against a Messages API server on 127.0.0.1.

Same loopback server as the OpenAI tests (a real socket, nothing in the SDK mocked),
speaking Anthropic's wire format: content blocks, ``tool_use`` / ``tool_result``,
``{"type": "error", "error": {...}}`` bodies and the 529 "overloaded" status.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from agentstream.errors import ConfigurationError
from agentstream.models import (
    AnthropicModel,
    BadRequestError,
    ContextTooLongError,
    Message,
    ModelAuthError,
    ModelServerError,
    ModelTimeoutError,
    ProviderNotInstalledError,
    RateLimitedError,
    ToolCall,
)
from agentstream.models.anthropic_provider import to_anthropic
from agentstream.specialist.loop import run_agent
from tests import support_desk
from tests.unit.test_providers_openai import LoopbackServer, Reply

TOOLS = support_desk.registry().schemas(["lookup_order"])
MODEL = "claude-haiku-4-5"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer().running() as srv:
        yield srv


def anthropic_model(server: LoopbackServer, **kwargs: Any) -> AnthropicModel:
    kwargs.setdefault("timeout_s", 5.0)
    return AnthropicModel(MODEL, base_url=server.url, api_key=SecretStr("sk-ant-test"), **kwargs)


def message(content: list[dict[str, Any]], stop: str = "end_turn", usage: tuple[int, int] = (20, 5)) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def error(status: int, kind: str, text: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": text}}, headers or {})


CONVERSATION = [Message("system", "You are terse."), Message("user", "Where is order 12345?")]


def test_plain_text_reply(server: LoopbackServer) -> None:
    server.replies.append(Reply(body=message([{"type": "text", "text": "It shipped."}], usage=(1_000_000, 0))))
    response = asyncio.run(anthropic_model(server, max_tokens=64).complete(CONVERSATION, []))

    assert response.text == "It shipped." and response.tool_calls == ()
    assert response.model == f"anthropic:{MODEL}"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1_000_000, 0)
    assert response.usage.cost_usd == pytest.approx(1.00)  # claude-haiku-4-5 input list price
    sent = server.requests[0]
    assert sent["path"] == "/v1/messages"
    # SDK 2.x sends the key as a bearer token; 0.x/1.x as x-api-key.
    key_headers = {sent["headers"].get("x-api-key"), sent["headers"].get("authorization")}
    assert key_headers & {"sk-ant-test", "Bearer sk-ant-test"}
    assert "anthropic-version" in sent["headers"]
    assert sent["json"]["system"] == "You are terse."  # separated from the turns
    assert sent["json"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Where is order 12345?"}]}
    ]
    assert sent["json"]["max_tokens"] == 64


def test_temperature_is_dropped_where_the_api_version_rejects_it(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.replies.append(Reply(body=message([{"type": "text", "text": "ok"}])))
    model = anthropic_model(server, temperature=0.2)
    asyncio.run(model.complete(CONVERSATION, []))
    if model.temperature is None:  # SDK 2.x: API version 2026-10-21
        assert "temperature" not in server.requests[0]["json"]
        assert "temperature=0.2 not sent" in caplog.text
    else:
        assert server.requests[0]["json"]["temperature"] == 0.2


def test_tool_use_and_the_follow_up_turn_with_tool_results(server: LoopbackServer) -> None:
    tool_use: list[dict[str, Any]] = [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_a", "name": "lookup_order", "input": {"order_id": "12345"}},
        {"type": "tool_use", "id": "toolu_b", "name": "lookup_order", "input": {"order_id": "999"}},
    ]
    server.replies += [
        Reply(body=message(tool_use, stop="tool_use")),
        Reply(body=message([{"type": "text", "text": "12345 shipped; 999 does not exist."}])),
    ]
    model = anthropic_model(server)

    first = asyncio.run(model.complete(CONVERSATION, TOOLS))
    assert first.text == "Let me check."
    assert first.tool_calls == (
        ToolCall("toolu_a", "lookup_order", {"order_id": "12345"}),
        ToolCall("toolu_b", "lookup_order", {"order_id": "999"}),
    )
    schema = TOOLS[0]
    assert server.requests[0]["json"]["tools"] == [
        {"name": schema["name"], "description": schema["description"], "input_schema": schema["parameters"]}
    ]

    follow_up = [
        *CONVERSATION,
        Message("assistant", first.text, tool_calls=first.tool_calls),
        Message("tool", '{"status": "shipped"}', tool_call_id="toolu_a", name="lookup_order"),
        Message("tool", "Error: no order 999", tool_call_id="toolu_b", name="lookup_order"),
    ]
    second = asyncio.run(model.complete(follow_up, TOOLS))
    assert second.text == "12345 shipped; 999 does not exist."
    assert server.requests[1]["json"]["messages"][1:] == [
        {"role": "assistant", "content": tool_use},
        {
            "role": "user",  # both results in one user turn, as the API requires
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_a",
                    "content": '{"status": "shipped"}',
                    "is_error": False,
                },
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "Error: no order 999", "is_error": True},
            ],
        },
    ]


def test_agent_loop_runs_on_the_provider(server: LoopbackServer) -> None:
    server.replies += [
        Reply(body=message([{"type": "tool_use", "id": "t1", "name": "lookup_order", "input": {"order_id": "1001"}}])),
        Reply(body=message([{"type": "text", "text": "Your order is on its way."}])),
    ]
    task = {"task_id": "t1", "session_id": "s1", "input": "Where is order 1001?"}
    outcome = asyncio.run(run_agent(task, "billing", anthropic_model(server), support_desk.registry(), ["lookup_order"]))

    assert outcome.status == "COMPLETED" and outcome.output == "Your order is on its way."
    assert outcome.usage["llm_calls"] == 2 and outcome.usage["input_tokens"] == 40
    last_turn = server.requests[1]["json"]["messages"][-1]
    assert last_turn["role"] == "user" and last_turn["content"][0]["tool_use_id"] == "t1"


def test_cache_tokens_count_as_input(server: LoopbackServer) -> None:
    body = message([{"type": "text", "text": "ok"}])
    body["usage"].update(cache_creation_input_tokens=100, cache_read_input_tokens=50)
    server.replies.append(Reply(body=body))
    assert asyncio.run(anthropic_model(server).complete(CONVERSATION, [])).usage.input_tokens == 170


def test_429_is_rate_limited_with_retry_after(server: LoopbackServer) -> None:
    server.replies.append(
        error(429, "rate_limit_error", "Number of requests has exceeded your rate limit", {"retry-after": "12"})
    )
    with pytest.raises(RateLimitedError) as caught:
        asyncio.run(anthropic_model(server).complete(CONVERSATION, []))
    assert caught.value.retry_after == 12.0
    assert len(server.requests) == 1


@pytest.mark.parametrize(("status", "kind"), [(500, "api_error"), (529, "overloaded_error")])
def test_5xx_and_overloaded_are_transient_server_errors(server: LoopbackServer, status: int, kind: str) -> None:
    server.replies.append(error(status, kind, "Overloaded" if status == 529 else "Internal server error"))
    with pytest.raises(ModelServerError) as caught:
        asyncio.run(anthropic_model(server).complete(CONVERSATION, []))
    assert f"HTTP {status}" in str(caught.value)


def test_401_is_an_auth_error(server: LoopbackServer) -> None:
    server.replies.append(error(401, "authentication_error", "invalid x-api-key"))
    with pytest.raises(ModelAuthError) as caught:
        asyncio.run(anthropic_model(server).complete(CONVERSATION, []))
    assert "sk-ant-test" not in str(caught.value)


def test_prompt_too_long_is_context_too_long(server: LoopbackServer) -> None:
    server.replies.append(error(400, "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"))
    with pytest.raises(ContextTooLongError):
        asyncio.run(anthropic_model(server).complete(CONVERSATION, []))


def test_other_400_is_a_bad_request(server: LoopbackServer) -> None:
    server.replies.append(error(400, "invalid_request_error", "messages.0.content: Field required"))
    with pytest.raises(BadRequestError) as caught:
        asyncio.run(anthropic_model(server).complete(CONVERSATION, []))
    assert not isinstance(caught.value, ContextTooLongError)


def test_a_stalled_server_times_out(server: LoopbackServer) -> None:
    server.replies.append(Reply(stall=True))
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError):
        asyncio.run(anthropic_model(server, timeout_s=0.5).complete(CONVERSATION, []))
    assert time.monotonic() - started < 3


def test_turns_alternate_and_empty_text_is_dropped() -> None:
    system, turns = to_anthropic(
        [
            Message("system", "A."),
            Message("system", "B."),
            Message("user", "first"),
            Message("user", "second"),
            Message("assistant", "", tool_calls=(ToolCall("x", "search_kb", {"query": "q"}),)),
            Message("tool", "[]", tool_call_id="x", name="search_kb"),
            Message("user", "and then?"),
        ]
    )
    assert system == "A.\n\nB."
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
    assert [block["type"] for block in turns[1]["content"]] == ["tool_use"]
    assert [block["type"] for block in turns[2]["content"]] == ["tool_result", "text"]  # results first


def test_missing_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        AnthropicModel(MODEL)


def test_missing_sdk_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)  # makes `import anthropic` fail
    with pytest.raises(ProviderNotInstalledError, match=r"pip install 'agentstream\[anthropic\]'"):
        AnthropicModel(MODEL, api_key=SecretStr("k"))
