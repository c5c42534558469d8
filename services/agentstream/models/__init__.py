"""The Model interface and its providers; services depend on the interface only.

Provider SDKs (``openai``, ``anthropic``) are optional extras: importing this package
never imports them; building a provider's model does, or says how to install it.
"""

from __future__ import annotations

from agentstream.models.anthropic_provider import AnthropicModel
from agentstream.models.base import (
    Message,
    Model,
    ModelResponse,
    ToolCall,
    Usage,
    current_task_key,
    task_scope,
)
from agentstream.models.config import (
    DEFAULT_MODEL_ID,
    PROVIDERS,
    ModelSettings,
    effective_model_id,
    parse_model_id,
    read_secret,
)
from agentstream.models.errors import (
    BadRequestError,
    ContextTooLongError,
    ModelAuthError,
    ModelConnectionError,
    ModelError,
    ModelServerError,
    ModelTimeoutError,
    PermanentModelError,
    ProviderNotInstalledError,
    RateLimitedError,
    TransientModelError,
)
from agentstream.models.openai_provider import OpenAIChatModel
from agentstream.models.pricing import DEFAULT_PRICES, ModelPrice, PriceTable, cost_usd
from agentstream.models.registry import create_model
from agentstream.models.scripted import SCRIPTED_MARKER, ScriptedModel
from agentstream.settings import MODEL_ENV
from agentstream.tier import TIERS, Tier

__all__ = [
    "DEFAULT_MODEL_ID",
    "DEFAULT_PRICES",
    "MODEL_ENV",
    "PROVIDERS",
    "SCRIPTED_MARKER",
    "TIERS",
    "AnthropicModel",
    "BadRequestError",
    "ContextTooLongError",
    "Message",
    "Model",
    "ModelAuthError",
    "ModelConnectionError",
    "ModelError",
    "ModelPrice",
    "ModelResponse",
    "ModelServerError",
    "ModelSettings",
    "ModelTimeoutError",
    "OpenAIChatModel",
    "PermanentModelError",
    "PriceTable",
    "ProviderNotInstalledError",
    "RateLimitedError",
    "ScriptedModel",
    "Tier",
    "ToolCall",
    "TransientModelError",
    "Usage",
    "cost_usd",
    "create_model",
    "current_task_key",
    "effective_model_id",
    "parse_model_id",
    "read_secret",
    "task_scope",
]
