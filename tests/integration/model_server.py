"""An OpenAI-compatible model provider for the integration tests and for trying the demo
offline on the real-provider path: ``LoopbackServer`` (a real HTTP server on 127.0.0.1,
tests/unit/test_providers_openai.py) answering ``/v1/chat/completions`` the way a provider
does, so every call goes through the official ``openai`` SDK.

The helpers tell the three kinds of request apart by the tool each one offers (the
router's ``route_task``, the supervisor's ``review``; a specialist offers its app's tools)
and build the replies. ``AppModel`` answers any app: it routes by the specialists'
descriptions, calls one of the specialist's tools, answers by quoting the tool results,
and publishes the reviewed answer. Run it standalone for ``make demo``:

    .venv/bin/python -m tests.integration.model_server --port 8400
    AGENTSTREAM_MODEL=openai:gpt-4o-mini OPENAI_BASE_URL=http://127.0.0.1:8400/v1 make demo
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from agentstream.router.classifier import ROUTE_TOOL
from agentstream.settings import MODEL_ENV, OPENAI_API_KEY_ENV, OPENAI_BASE_URL_ENV
from agentstream.supervisor.review import REVIEW_TOOL
from tests.unit.test_providers_openai import LoopbackServer, Reply, completion, tool_call

# A model the price table knows, so a result's cost_usd follows from the server's usage.
MODEL = "openai:gpt-4o-mini"
# How long a test's model server may hold a call back (until the test releases it, as
# every such test also does when it ends), and the limits of a model whose calls a test
# holds: longer, or a held call times out and is asked again, and the test counts a request
# too many (stop 43's CI: a review held past a 10 s call_timeout_s on a loaded machine was
# reviewed twice). The hold outlasts the waits a test makes while it holds (up to 60 s for
# a changelog key, then a kill), so a held call is not answered early either.
HOLD_S = 180
HELD_CALL_LIMITS = {"timeout_s": 2 * HOLD_S, "call_timeout_s": HOLD_S + 30}
# What a tool's parameter is filled with, by the parameter's name: an *_id with an id such
# as INV-1002 or MSA-2041, an email with an address; any other with the task's text.
_FILLERS = {"_id": re.compile(r"\b[A-Z]{2,}-\d+\b"), "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+\w")}
_WORD = re.compile(r"[a-z0-9]+")


def openai_env(server: LoopbackServer, model: str = MODEL) -> dict[str, str]:
    """The environment that puts every agent on ``server``: ``AGENTSTREAM_MODEL`` overrides
    every model id of the topology, and the SDK reads its standard variables."""
    return {MODEL_ENV: model, OPENAI_BASE_URL_ENV: server.url + "/v1", OPENAI_API_KEY_ENV: "sk-test"}


def offered_tools(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The functions a chat-completions request offers, by name."""
    return {tool["function"]["name"]: tool["function"] for tool in body.get("tools") or []}


def is_route_request(body: Mapping[str, Any]) -> bool:
    return ROUTE_TOOL in offered_tools(body)


def is_review_request(body: Mapping[str, Any]) -> bool:
    return REVIEW_TOOL in offered_tools(body)


def text_reply(text: str, usage: tuple[int, int] = (12, 3)) -> Reply:
    return Reply(body=completion({"content": text}, usage=usage))


def tool_reply(calls: Sequence[tuple[str, Mapping[str, Any]]], usage: tuple[int, int] = (12, 3)) -> Reply:
    """A reply calling each (name, arguments) of ``calls``, as a provider's tool calls."""
    wire = [tool_call(f"call_{i}", name, json.dumps(dict(arguments))) for i, (name, arguments) in enumerate(calls, 1)]
    return Reply(body=completion({"content": None, "tool_calls": wire}, finish="tool_calls", usage=usage))


def tool_results(body: Mapping[str, Any]) -> list[str]:
    """The tool results the request carries since its last user turn (the loop's current step)."""
    results: list[str] = []
    for message in body["messages"]:
        if message["role"] == "user":
            results = []
        elif message["role"] == "tool":
            results.append(str(message["content"]))
    return results


def last_user_text(body: Mapping[str, Any]) -> str:
    return next(str(m["content"]) for m in reversed(body["messages"]) if m["role"] == "user")


class AppModel:
    """A provider that answers any agentstream app plausibly, without an LLM; keeps every
    request body (thread-safe: the server answers requests on threads)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def answer(self, request: dict[str, Any]) -> Reply:
        body = request["json"]
        with self._lock:
            self.requests.append(body)
        if is_route_request(body):
            return route(body)
        if is_review_request(body):
            return review("publish", _answers(last_user_text(body)), "")
        if tool_results(body):
            return text_reply("From our records: " + " ".join(tool_results(body)))
        call = pick_tool_call(offered_tools(body), last_user_text(body))
        return tool_reply([call]) if call else text_reply(f"About your request: {last_user_text(body)}")


def route(body: Mapping[str, Any]) -> Reply:
    """Route to the specialist whose description (in the system prompt) shares the most
    words with the task; the first one when none shares any."""
    known = offered_tools(body)[ROUTE_TOOL]["parameters"]["properties"]["agent_types"]["items"]["enum"]
    words = set(_WORD.findall(last_user_text(body).lower()))
    described = dict(re.findall(r"^- (\S+): (.*)$", body["messages"][0]["content"], re.MULTILINE))
    overlap = {t: len(words & set(_WORD.findall(described.get(t, t).lower()))) for t in known}
    best = max(known, key=lambda t: overlap[t])
    return tool_reply([(ROUTE_TOOL, {"agent_types": [best], "tier": "standard", "confidence": 0.9})])


def review(verdict: str, answer: str, feedback: str, usage: tuple[int, int] = (12, 3)) -> Reply:
    """A ``review`` call with ``verdict``, as the supervisor's model gives it."""
    arguments = {"verdict": verdict, "answer": answer, "feedback": feedback, "confidence": 0.9}
    return tool_reply([(REVIEW_TOOL, arguments)], usage=usage)


def _answers(review_text: str) -> str:
    """The specialists' answers quoted in a review request (after "The specialists' answers:")."""
    return review_text.partition("The specialists' answers:\n")[2].strip() or review_text


def pick_tool_call(tools: Mapping[str, Mapping[str, Any]], text: str) -> tuple[str, dict[str, str]] | None:
    """A call of the first tool whose required parameters (strings) the task can fill."""
    for name, function in tools.items():
        parameters = function.get("parameters") or {}
        kinds = parameters.get("properties") or {}
        required = parameters.get("required") or []
        arguments = {p: _fill(p, text) for p in required if kinds.get(p, {}).get("type") == "string"}
        if len(arguments) == len(required) and all(value is not None for value in arguments.values()):
            return name, {p: str(value) for p, value in arguments.items()}
    return None


def _fill(parameter: str, text: str) -> str | None:
    """What ``text`` offers for ``parameter`` (see _FILLERS); None when it offers nothing."""
    for suffix, pattern in _FILLERS.items():
        if parameter.endswith(suffix):
            found = pattern.search(text)
            return found.group(0) if found else None
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description="An OpenAI-compatible stand-in provider for agentstream apps.")
    parser.add_argument("--port", type=int, default=8400, help="port on 127.0.0.1 (default 8400)")
    args = parser.parse_args()
    model = AppModel()
    with LoopbackServer(model.answer, port=args.port).running() as server:
        print(f"serving /v1/chat/completions on {server.url}/v1; Ctrl-C stops it", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print(f"answered {len(model.requests)} requests")


if __name__ == "__main__":
    main()
