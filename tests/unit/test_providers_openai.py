"""OpenAIChatModel through the real ``openai`` SDK against a chat-completions server on 127.0.0.1.

The server is a real socket speaking the OpenAI wire format (request and response JSON,
error bodies, ``retry-after``); nothing in the SDK is mocked. It records each request so
the tests can check what the provider put on the wire.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from agentstream.errors import ConfigurationError
from agentstream.models import (
    BadRequestError,
    ContextTooLongError,
    Message,
    ModelAuthError,
    ModelConnectionError,
    ModelServerError,
    ModelTimeoutError,
    OpenAIChatModel,
    PermanentModelError,
    ProviderNotInstalledError,
    RateLimitedError,
    ToolCall,
)
from agentstream.models.openai_provider import INVALID_ARGUMENTS_KEY
from agentstream.specialist.loop import run_agent
from tests import support_desk

TOOLS = support_desk.registry().schemas(["lookup_order"])


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False  # hold the request until the test ends


class LoopbackServer:
    """Answers each POST with the next scripted ``Reply`` — or, once they are used up, with
    ``answer(request)`` — and records the request.

    Shared with test_providers_anthropic.py: one real HTTP server, two wire formats; and
    with the integration tests that point worker processes at it (``OPENAI_BASE_URL``).
    """

    def __init__(self, answer: Callable[[dict[str, Any]], Reply] | None = None, port: int = 0) -> None:
        self.replies: list[Reply] = []
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = {"path": self.path, "headers": headers, "json": body}
                outer.requests.append(request)
                reply = outer.replies.pop(0) if outer.replies or outer.answer is None else outer.answer(request)
                if reply.stall:
                    outer.release.wait(30)
                    return
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)  # port 0: any free one
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[LoopbackServer]:
        thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release.set()
            self.httpd.shutdown()
            self.httpd.server_close()
            thread.join(5)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer().running() as srv:
        yield srv


def openai_model(server: LoopbackServer, **kwargs: Any) -> OpenAIChatModel:
    kwargs.setdefault("timeout_s", 5.0)
    return OpenAIChatModel("gpt-4o-mini", base_url=server.url + "/v1", api_key=SecretStr("sk-test-key"), **kwargs)


def completion(message: dict[str, Any], finish: str = "stop", usage: tuple[int, int] = (12, 3)) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, "logprobs": None}
        ],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }


def error(status: int, message: str, code: str | None, kind: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return Reply(status, body, headers or {})


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


CONVERSATION = [Message("system", "You are terse."), Message("user", "Where is order 12345?")]


def test_plain_text_reply_with_usage_and_cost(server: LoopbackServer) -> None:
    server.replies.append(Reply(body=completion({"content": "It shipped."}, usage=(1_000_000, 1_000_000))))
    response = asyncio.run(openai_model(server, temperature=0.0, max_tokens=50).complete(CONVERSATION, []))

    assert response.text == "It shipped." and response.tool_calls == ()
    assert response.model == "openai:gpt-4o-mini"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1_000_000, 1_000_000)
    assert response.usage.cost_usd == pytest.approx(0.15 + 0.60)  # the gpt-4o-mini list price
    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-test-key"
    assert sent["json"]["model"] == "gpt-4o-mini"
    assert sent["json"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Where is order 12345?"},
    ]
    assert sent["json"]["temperature"] == 0.0 and sent["json"]["max_completion_tokens"] == 50
    assert "tools" not in sent["json"]


def test_tool_calls_and_the_follow_up_turn_with_results(server: LoopbackServer) -> None:
    calls = [tool_call("call_a", "lookup_order", '{"order_id": "12345"}'), tool_call("call_b", "lookup_order", "{oops")]
    server.replies += [
        Reply(body=completion({"content": None, "tool_calls": calls}, finish="tool_calls")),
        Reply(body=completion({"content": "Order 12345 shipped."})),
    ]
    model = openai_model(server)

    first = asyncio.run(model.complete(CONVERSATION, TOOLS))
    assert first.text is None
    assert first.tool_calls == (
        ToolCall("call_a", "lookup_order", {"order_id": "12345"}),
        # Malformed JSON from the model reaches the tool registry, which tells the model.
        ToolCall("call_b", "lookup_order", {INVALID_ARGUMENTS_KEY: "{oops"}),
    )
    assert server.requests[0]["json"]["tools"] == [{"type": "function", "function": TOOLS[0]}]

    follow_up = [
        *CONVERSATION,
        Message("assistant", None, tool_calls=first.tool_calls[:1]),
        Message("tool", '{"status": "shipped"}', tool_call_id="call_a", name="lookup_order"),
    ]
    second = asyncio.run(model.complete(follow_up, TOOLS))
    assert second.text == "Order 12345 shipped."
    assert server.requests[1]["json"]["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id": "12345"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"status": "shipped"}'},
    ]


def test_agent_loop_runs_on_the_provider(server: LoopbackServer) -> None:
    server.replies += [
        Reply(
            body=completion({"content": None, "tool_calls": [tool_call("c1", "lookup_order", '{"order_id": "1001"}')]})
        ),
        Reply(body=completion({"content": "Your order is on its way."})),
    ]
    task = {"task_id": "t1", "session_id": "s1", "input": "Where is order 1001?"}
    outcome = asyncio.run(run_agent(task, "billing", openai_model(server), support_desk.registry(), ["lookup_order"]))

    assert outcome.status == "COMPLETED" and outcome.output == "Your order is on its way."
    assert outcome.usage["llm_calls"] == 2 and outcome.usage["tool_calls"] == 1
    tool_message = server.requests[1]["json"]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "c1"


def test_429_is_rate_limited_with_retry_after(server: LoopbackServer) -> None:
    server.replies.append(
        error(429, "Rate limit reached for requests", "rate_limit_exceeded", "requests", {"retry-after": "7"})
    )
    with pytest.raises(RateLimitedError) as caught:
        asyncio.run(openai_model(server).complete(CONVERSATION, []))
    assert caught.value.retry_after == 7.0
    assert caught.value.model_id == "openai:gpt-4o-mini"
    assert len(server.requests) == 1  # the SDK did not retry on its own


def test_retry_after_ms_is_preferred(server: LoopbackServer) -> None:
    server.replies.append(error(429, "slow down", None, "requests", {"retry-after-ms": "1500", "retry-after": "9"}))
    with pytest.raises(RateLimitedError) as caught:
        asyncio.run(openai_model(server).complete(CONVERSATION, []))
    assert caught.value.retry_after == 1.5


def test_exhausted_quota_is_permanent(server: LoopbackServer) -> None:
    server.replies.append(error(429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota"))
    with pytest.raises(PermanentModelError):
        asyncio.run(openai_model(server).complete(CONVERSATION, []))


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_a_server_error(server: LoopbackServer, status: int) -> None:
    server.replies.append(error(status, "The server had an error", None, "server_error"))
    with pytest.raises(ModelServerError) as caught:
        asyncio.run(openai_model(server).complete(CONVERSATION, []))
    assert f"HTTP {status}" in str(caught.value)
    assert isinstance(caught.value.__cause__, Exception)  # the SDK error is kept as the cause


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors(server: LoopbackServer, status: int) -> None:
    server.replies.append(error(status, "Incorrect API key provided", "invalid_api_key", "invalid_request_error"))
    with pytest.raises(ModelAuthError) as caught:
        asyncio.run(openai_model(server).complete(CONVERSATION, []))
    assert "sk-test-key" not in str(caught.value)


def test_context_length_is_its_own_error(server: LoopbackServer) -> None:
    message = "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens."
    server.replies.append(error(400, message, "context_length_exceeded", "invalid_request_error"))
    with pytest.raises(ContextTooLongError):
        asyncio.run(openai_model(server).complete(CONVERSATION, []))


def test_context_length_recognised_by_message_alone(server: LoopbackServer) -> None:
    # vLLM and other compatible servers send the sentence without OpenAI's code.
    server.replies.append(error(400, "This model's maximum context length is 4096 tokens.", None, "BadRequestError"))
    with pytest.raises(ContextTooLongError):
        asyncio.run(openai_model(server).complete(CONVERSATION, []))


def test_other_400_is_a_bad_request(server: LoopbackServer) -> None:
    server.replies.append(error(400, "Invalid value for 'temperature'", "invalid_value", "invalid_request_error"))
    with pytest.raises(BadRequestError) as caught:
        asyncio.run(openai_model(server).complete(CONVERSATION, []))
    assert not isinstance(caught.value, ContextTooLongError)
    assert "Invalid value for 'temperature'" in str(caught.value)


def test_a_stalled_server_times_out(server: LoopbackServer) -> None:
    server.replies.append(Reply(stall=True))
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError):
        asyncio.run(openai_model(server, timeout_s=0.5).complete(CONVERSATION, []))
    assert time.monotonic() - started < 3


def test_a_closed_port_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = OpenAIChatModel("gpt-4o-mini", base_url=f"http://127.0.0.1:{port}/v1", api_key=SecretStr("k"), timeout_s=2)
    with pytest.raises(ModelConnectionError):
        asyncio.run(model.complete(CONVERSATION, []))


def test_honours_the_sdk_environment_variables(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    server.replies.append(Reply(body=completion({"content": "hi"})))
    model = OpenAIChatModel("gpt-4o-mini", timeout_s=5)
    assert asyncio.run(model.complete(CONVERSATION, [])).text == "hi"
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-from-env"
    assert "sk-from-env" not in repr(model)


def test_a_local_server_needs_no_key(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.replies.append(Reply(body=completion({"content": "hi"})))
    assert (
        asyncio.run(OpenAIChatModel("llama3.1:8b", base_url=server.url + "/v1").complete(CONVERSATION, [])).text == "hi"
    )


def test_missing_key_for_openai_itself_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        OpenAIChatModel("gpt-4o-mini")


def test_missing_sdk_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
    with pytest.raises(ProviderNotInstalledError, match=r"pip install 'agentstream\[openai\]'"):
        OpenAIChatModel("gpt-4o-mini", api_key=SecretStr("k"))
