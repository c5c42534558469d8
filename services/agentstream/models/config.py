"""Model configuration: ``provider:model`` ids, per-agent model settings, credentials.

The environment variables the model layer reads are named in settings.py. API keys come only from
the environment or from files (``<NAME>_FILE``, e.g. a mounted Kubernetes secret), are
held as ``SecretStr`` and never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from agentstream.errors import ConfigurationError
from agentstream.models.scripted_rules import ScriptedRule
from agentstream.settings import MODEL_ENV, SECRET_FILE_SUFFIX
from agentstream.tier import DEFAULT_TIER, Tier

PROVIDERS = ("anthropic", "openai", "scripted")
DEFAULT_MODEL_ID = "scripted:default"

def parse_model_id(text: str) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` → ``("openai", "gpt-4o-mini")``.

    Only the first colon separates: Ollama names such as ``llama3.1:8b`` keep theirs.
    """
    provider, sep, model = text.strip().partition(":")
    if not sep or not model.strip():
        raise ConfigurationError(
            f"Model id {text!r} is not of the form provider:model "
            f"(e.g. openai:gpt-4o-mini); valid providers are {list(PROVIDERS)}."
        )
    if provider not in PROVIDERS:
        raise ConfigurationError(
            f"Unknown model provider {provider!r} in model id {text!r}; valid providers are {list(PROVIDERS)}."
        )
    return provider, model.strip()


def effective_model_id(configured: str, environ: Mapping[str, str] | None = None) -> str:
    """The model an agent runs: ``AGENTSTREAM_MODEL`` when set, else ``configured``.

    The override is deliberate and global — one variable moves the whole pipeline onto a
    real provider — so it is validated here rather than failing on the first task.
    """
    env = os.environ if environ is None else environ
    override = (env.get(MODEL_ENV) or "").strip()
    chosen = override or configured
    try:
        parse_model_id(chosen)
    except ConfigurationError as exc:
        if override:
            raise ConfigurationError(f"{MODEL_ENV}: {exc}") from None
        raise
    return chosen


def read_secret(name: str, environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """``$NAME`` or the content of the file at ``$NAME_FILE``; None when neither is set."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value:
        return SecretStr(value.strip())
    path = env.get(name + SECRET_FILE_SUFFIX)
    if not path:
        return None
    try:
        content = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read {name + SECRET_FILE_SUFFIX}={path}: {exc.strerror}.") from None
    if not content:
        raise ConfigurationError(f"The secret file {name + SECRET_FILE_SUFFIX}={path} is empty.")
    return SecretStr(content)


def _check_model_id(value: str) -> str:
    try:
        parse_model_id(value)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None
    return value.strip()


class ModelSettings(BaseModel):
    """How one agent type uses models: a model per complexity tier, fallbacks and limits.

    ``timeout_s`` bounds a whole task (wall clock); ``call_timeout_s`` one model call.
    ``max_tokens`` caps the output of one call (Anthropic requires a cap);
    ``budget_tokens``/``budget_usd`` bound a whole task. ``fallbacks`` are tried in order
    when the tier's model fails permanently or its breaker is open.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[Tier, str] = Field(default_factory=lambda: {DEFAULT_TIER: DEFAULT_MODEL_ID})
    fallbacks: tuple[str, ...] = ()
    max_steps: int = Field(default=8, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    call_timeout_s: float = Field(default=60.0, gt=0)
    budget_usd: float | None = Field(default=None, gt=0)
    budget_tokens: int | None = Field(default=None, gt=0)
    max_tokens: int = Field(default=1024, gt=0)
    tools: tuple[str, ...] = ()
    system_prompt_file: Path | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    # History compression: past this many (estimated) tokens, older turns of the loop's
    # conversation are replaced by a summary; the last ``history_keep_recent`` turns stay.
    history_max_tokens: int | None = Field(default=None, gt=0)
    history_keep_recent: int = Field(default=6, ge=0)
    # What the offline ScriptedModel calls for this agent type (scripted_rules.py).
    scripted: tuple[ScriptedRule, ...] = ()

    @field_validator("models")
    @classmethod
    def _valid_models(cls, value: dict[Tier, str]) -> dict[Tier, str]:
        if DEFAULT_TIER not in value:
            raise ValueError(f"models needs a {DEFAULT_TIER!r} entry, the model of untiered tasks")
        return {tier: _check_model_id(model_id) for tier, model_id in value.items()}

    @field_validator("fallbacks")
    @classmethod
    def _valid_fallbacks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_model_id(model_id) for model_id in value)

    @model_validator(mode="after")
    def _timeouts(self) -> ModelSettings:
        if self.call_timeout_s > self.timeout_s:
            raise ValueError(f"call_timeout_s ({self.call_timeout_s}) exceeds the task's timeout_s ({self.timeout_s})")
        return self

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], where: str = "model settings") -> ModelSettings:
        """Validate ``raw``; a bad or unknown key fails with its name and the valid keys."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigurationError(describe_errors(exc, where, cls)) from None

    def model_for(self, tier: Tier | None = None, environ: Mapping[str, str] | None = None) -> str:
        """The model id for ``tier`` (the standard tier's when unset), after the env override."""
        configured = self.models.get(tier or DEFAULT_TIER) or self.models[DEFAULT_TIER]
        return effective_model_id(configured, environ)

    def system_prompt(self, base_dir: Path | None = None) -> str | None:
        """The system prompt file's text; a relative path is read from ``base_dir``."""
        if self.system_prompt_file is None:
            return None
        path = self.system_prompt_file
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"Cannot read system_prompt_file {path}: {exc.strerror}.") from None


def describe_errors(exc: ValidationError, where: str, model: type[BaseModel]) -> str:
    """One line per problem; unknown keys are named with the keys that are valid."""
    valid = sorted(model.model_fields)
    lines = [f"Invalid {where}:"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or where
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key {str(err['loc'][-1])!r}; valid keys are {valid}")
        else:
            lines.append(f"  {loc}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)
