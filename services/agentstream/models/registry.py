"""Build a ``Model`` from a ``provider:model`` id; the one place that knows all providers.

Provider modules are imported here only when their provider is asked for, so a
deployment on the scripted model never needs (or imports) a provider SDK.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from agentstream.models.base import Model
from agentstream.models.config import ModelSettings, parse_model_id, read_secret
from agentstream.models.pricing import DEFAULT_PRICE_TABLE, PriceTable
from agentstream.models.scripted import ScriptedModel
from agentstream.settings import (
    ANTHROPIC_API_KEY_ENV,
    ANTHROPIC_BASE_URL_ENV,
    OPENAI_API_KEY_ENV,
    OPENAI_BASE_URL_ENV,
)


def create_model(
    model_id: str,
    settings: ModelSettings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    prices: PriceTable = DEFAULT_PRICE_TABLE,
) -> Model:
    """The model ``model_id`` names, configured from ``settings`` (call timeout, output
    cap, temperature) and credentials from ``environ`` (default ``os.environ``).

    ``model_id`` is taken as given; apply ``effective_model_id`` or
    ``ModelSettings.model_for`` first to honour ``AGENTSTREAM_MODEL``.
    """
    provider, name = parse_model_id(model_id)
    settings = settings or ModelSettings()
    env = os.environ if environ is None else environ
    if provider == "scripted":
        return ScriptedModel(model_id=f"scripted:{name}", rules=settings.scripted)
    if provider == "openai":
        from agentstream.models.openai_provider import OpenAIChatModel

        return OpenAIChatModel(
            name,
            base_url=env.get(OPENAI_BASE_URL_ENV) or None,
            api_key=read_secret(OPENAI_API_KEY_ENV, env),
            timeout_s=settings.call_timeout_s,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            prices=prices,
        )
    from agentstream.models.anthropic_provider import AnthropicModel

    return AnthropicModel(
        name,
        api_key=read_secret(ANTHROPIC_API_KEY_ENV, env),
        base_url=env.get(ANTHROPIC_BASE_URL_ENV) or None,
        timeout_s=settings.call_timeout_s,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        prices=prices,
    )
