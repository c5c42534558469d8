"""OpenAI-compatible chat completions through the official ``openai`` SDK.

Works with OpenAI and with servers that speak the same API (vLLM, Ollama, LiteLLM
proxy) through ``base_url`` or the SDK's standard ``OPENAI_BASE_URL``. The SDK is an
optional extra, imported when a model is built, never when this module is imported.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from agentstream.errors import ConfigurationError
from agentstream.models._translate import error_code, error_message, load_sdk, status_error
from agentstream.models.base import Message, ModelResponse, ToolCall, Usage
from agentstream.settings import OPENAI_API_KEY_ENV, OPENAI_BASE_URL_ENV
from agentstream.models.errors import (
    ModelConnectionError,
    ModelError,
    ModelServerError,
    ModelTimeoutError,
    PermanentModelError,
)
from agentstream.models.pricing import DEFAULT_PRICE_TABLE, PriceTable

# Local servers (Ollama, vLLM) ignore the key but the SDK refuses to start without one.
_NO_KEY = "unused"
# Key under which unparseable tool arguments reach the tool registry: its validation
# then tells the model the call was malformed, instead of the task failing.
INVALID_ARGUMENTS_KEY = "_invalid_json_arguments"


class OpenAIChatModel:
    """A ``Model`` over ``/chat/completions``. Retries belong to our controls, so the
    SDK's own retries are off by default (``max_retries=0``)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: SecretStr | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 0,
        temperature: float | None = None,
        max_tokens: int | None = None,
        prices: PriceTable = DEFAULT_PRICE_TABLE,
    ) -> None:
        self._sdk = load_sdk("openai", "openai")
        self.model = model
        self.model_id = f"openai:{model}"
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._prices = prices
        self.base_url = base_url or os.environ.get(OPENAI_BASE_URL_ENV) or None
        key = api_key.get_secret_value() if api_key else os.environ.get(OPENAI_API_KEY_ENV)
        if not key and self.base_url is None:
            raise ConfigurationError(
                f"No API key for {self.model_id}: set {OPENAI_API_KEY_ENV} (or {OPENAI_API_KEY_ENV}_FILE), "
                f"or set {OPENAI_BASE_URL_ENV} to a server that needs none."
            )
        self._client = self._sdk.AsyncOpenAI(
            api_key=key or _NO_KEY, base_url=self.base_url, timeout=timeout_s, max_retries=max_retries
        )

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self.model_id!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        request: dict[str, Any] = {"model": self.model, "messages": [_to_openai(m) for m in messages]}
        if tools:
            request["tools"] = [{"type": "function", "function": dict(schema)} for schema in tools]
        if self.temperature is not None:
            request["temperature"] = self.temperature
        if self.max_tokens is not None:
            # The current name; OpenAI's reasoning models reject the older ``max_tokens``.
            request["max_completion_tokens"] = self.max_tokens
        # The SDK's timeout bounds each socket phase; the deadline bounds the whole call,
        # so a server that trickles bytes cannot hold a worker.
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                completion = await self._client.chat.completions.create(**request)
        except (TimeoutError, self._sdk.OpenAIError) as exc:
            raise self._translate(exc, expired=deadline.expired()) from exc
        return self._response(completion)

    def _translate(self, exc: Exception, *, expired: bool) -> ModelError:
        sdk, model_id = self._sdk, self.model_id
        # APITimeoutError first: it subclasses APIConnectionError.
        if expired or isinstance(exc, (TimeoutError, sdk.APITimeoutError)):
            return ModelTimeoutError(f"{model_id}: no reply within {self.timeout_s} s", model_id=model_id)
        if isinstance(exc, sdk.APIConnectionError):
            return ModelConnectionError(
                f"{model_id}: cannot reach {self.base_url or 'OpenAI'}: {exc}", model_id=model_id
            )
        if isinstance(exc, sdk.APIStatusError):
            message = error_message(exc.body, str(exc))
            code = getattr(exc, "code", None) or error_code(exc.body)
            return status_error(exc.status_code, message, code=code, headers=exc.response.headers, model_id=model_id)
        if isinstance(exc, sdk.APIResponseValidationError):
            return ModelServerError(
                f"{model_id}: the server's reply is not a chat completion: {exc}", model_id=model_id
            )
        return PermanentModelError(f"{model_id}: {type(exc).__name__}: {exc}", model_id=model_id)

    def _response(self, completion: Any) -> ModelResponse:
        choices = getattr(completion, "choices", None)
        if not choices:
            raise ModelServerError(f"{self.model_id}: the reply has no choices", model_id=self.model_id)
        message = choices[0].message
        calls = tuple(_from_openai_call(call) for call in message.tool_calls or () if call.type == "function")
        text = message.content if message.content is not None else message.refusal
        usage = _usage(completion.usage)
        usage = Usage(usage.input_tokens, usage.output_tokens, self._prices.cost_usd(self.model_id, usage))
        return ModelResponse(text=text, tool_calls=calls, usage=usage, model=self.model_id)


def _to_openai(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content or ""}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    elif message.content is None:
        out["content"] = ""  # only an assistant turn with tool calls may omit content
    return out


def _from_openai_call(call: Any) -> ToolCall:
    raw = call.function.arguments or "{}"
    try:
        arguments = json.loads(raw)
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        arguments = {INVALID_ARGUMENTS_KEY: raw}
    return ToolCall(id=call.id, name=call.function.name, arguments=arguments)


def _usage(usage: Any) -> Usage:
    # Some compatible servers omit usage; 0 keeps the loop going, budgets then rely on steps.
    if usage is None:
        return Usage(0, 0)
    return Usage(int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0))
