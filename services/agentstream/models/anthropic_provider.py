"""Anthropic's Messages API through the official ``anthropic`` SDK.

The provider-neutral conversation becomes Anthropic's shape: system prompts move to the
top-level ``system`` field, tool calls are ``tool_use`` blocks of the assistant turn and
tool results ``tool_result`` blocks of the next user turn. The SDK is an optional extra,
imported when a model is built, never when this module is imported.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from agentstream.errors import ConfigurationError
from agentstream.models._translate import error_code, error_message, load_sdk, status_error
from agentstream.models.base import Message, ModelResponse, ToolCall, Usage
from agentstream.settings import ANTHROPIC_API_KEY_ENV, ANTHROPIC_BASE_URL_ENV
from agentstream.models.errors import (
    ModelConnectionError,
    ModelError,
    ModelServerError,
    ModelTimeoutError,
    PermanentModelError,
)
from agentstream.models.pricing import DEFAULT_PRICE_TABLE, PriceTable

log = logging.getLogger(__name__)

# A proxy at a custom base URL may need no key, but the SDK refuses to send without one.
_NO_KEY = "unused"
# The agent loop's convention for a failed tool; Anthropic lets us flag it as such.
_TOOL_ERROR_PREFIX = "Error:"


class AnthropicModel:
    """A ``Model`` over ``/v1/messages``. ``max_tokens`` is required by the API; retries
    belong to our controls, so the SDK's own retries are off by default."""

    def __init__(
        self,
        model: str,
        *,
        api_key: SecretStr | None = None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_tokens: int = 1024,
        temperature: float | None = None,
        max_retries: int = 0,
        prices: PriceTable = DEFAULT_PRICE_TABLE,
    ) -> None:
        self._sdk = load_sdk("anthropic", "anthropic")
        self.model = model
        self.model_id = f"anthropic:{model}"
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._prices = prices
        self.base_url = base_url or os.environ.get(ANTHROPIC_BASE_URL_ENV) or None
        key = api_key.get_secret_value() if api_key else os.environ.get(ANTHROPIC_API_KEY_ENV)
        if not key and self.base_url is None:
            raise ConfigurationError(
                f"No API key for {self.model_id}: set {ANTHROPIC_API_KEY_ENV} (or {ANTHROPIC_API_KEY_ENV}_FILE)."
            )
        self._client = self._sdk.AsyncAnthropic(
            api_key=key or _NO_KEY, base_url=self.base_url, timeout=timeout_s, max_retries=max_retries
        )
        # SDK 2.x speaks API version 2026-10-21, which answers 400 to any sampling
        # parameter; older SDKs accept it. Dropping it (loudly) keeps one config usable
        # for both providers, e.g. when AGENTSTREAM_MODEL switches every agent to Claude.
        if temperature is not None and "temperature" not in inspect.signature(self._client.messages.create).parameters:
            log.warning(
                "%s: temperature=%s not sent: anthropic %s's API version rejects sampling parameters",
                self.model_id,
                temperature,
                getattr(self._sdk, "__version__", "?"),
            )
            self.temperature = None

    def __repr__(self) -> str:
        return f"AnthropicModel({self.model_id!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        system, turns = to_anthropic(messages)
        request: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": turns}
        if system:
            request["system"] = system
        if tools:
            request["tools"] = [
                {"name": t["name"], "description": t.get("description", ""), "input_schema": t["parameters"]}
                for t in tools
            ]
        if self.temperature is not None:
            request["temperature"] = self.temperature
        # The SDK's timeout bounds each socket phase; the deadline bounds the whole call.
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                reply = await self._client.messages.create(**request)
        except (TimeoutError, self._sdk.AnthropicError) as exc:
            raise self._translate(exc, expired=deadline.expired()) from exc
        return self._response(reply)

    def _translate(self, exc: Exception, *, expired: bool) -> ModelError:
        sdk, model_id = self._sdk, self.model_id
        # APITimeoutError first: it subclasses APIConnectionError.
        if expired or isinstance(exc, (TimeoutError, sdk.APITimeoutError)):
            return ModelTimeoutError(f"{model_id}: no reply within {self.timeout_s} s", model_id=model_id)
        if isinstance(exc, sdk.APIConnectionError):
            where = self.base_url or "Anthropic"
            return ModelConnectionError(f"{model_id}: cannot reach {where}: {exc}", model_id=model_id)
        if isinstance(exc, sdk.APIStatusError):
            # 529 "overloaded" is >= 500, so it is a transient ModelServerError like any 5xx.
            message = error_message(exc.body, str(exc))
            code = getattr(exc, "error_code", None) or error_code(exc.body)
            return status_error(exc.status_code, message, code=code, headers=exc.response.headers, model_id=model_id)
        if isinstance(exc, sdk.APIResponseValidationError):
            return ModelServerError(f"{model_id}: the server's reply is not a message: {exc}", model_id=model_id)
        return PermanentModelError(f"{model_id}: {type(exc).__name__}: {exc}", model_id=model_id)

    def _response(self, reply: Any) -> ModelResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in reply.content or ():
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                calls.append(ToolCall(id=block.id, name=block.name, arguments=dict(block.input or {})))
            # Other blocks (thinking, server tools) carry nothing the loop acts on.
        usage = _usage(reply.usage)
        usage = Usage(usage.input_tokens, usage.output_tokens, self._prices.cost_usd(self.model_id, usage))
        text = "".join(texts) or None
        return ModelResponse(text=text, tool_calls=tuple(calls), usage=usage, model=self.model_id)


def to_anthropic(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt and the alternating user/assistant turns of ``messages``.

    Consecutive messages of one role merge into one turn (the API requires alternation):
    all tool results of a round go back together in a single user turn, first.
    """
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue  # the API rejects empty turns and empty text blocks
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        content = message.content or ""
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": content,
                "is_error": content.startswith(_TOOL_ERROR_PREFIX),
            }
        ]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in message.tool_calls]
    return blocks


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage(0, 0)
    # Prompt-cache reads and writes are input tokens too; Anthropic counts them apart.
    cached = (getattr(usage, "cache_creation_input_tokens", 0) or 0) + (
        getattr(usage, "cache_read_input_tokens", 0) or 0
    )
    return Usage(int(usage.input_tokens or 0) + cached, int(usage.output_tokens or 0))
