"""Model ids, the AGENTSTREAM_MODEL override, prices, typed settings, secrets, create_model."""

from __future__ import annotations

import logging
import subprocess
import sys
import types
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

import agentstream.models as models_package
from agentstream.errors import AgentStreamError, ConfigurationError
from agentstream.models import (
    AnthropicModel,
    ContextTooLongError,
    ModelAuthError,
    ModelPrice,
    ModelSettings,
    OpenAIChatModel,
    PermanentModelError,
    PriceTable,
    ProviderNotInstalledError,
    RateLimitedError,
    ScriptedModel,
    TransientModelError,
    Usage,
    cost_usd,
    create_model,
    effective_model_id,
    parse_model_id,
    read_secret,
)
from agentstream.models import errors as model_errors


def test_parse_model_id() -> None:
    assert parse_model_id("openai:gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert parse_model_id("anthropic:claude-haiku-4-5") == ("anthropic", "claude-haiku-4-5")
    assert parse_model_id("scripted:default") == ("scripted", "default")
    assert parse_model_id("openai:llama3.1:8b") == ("openai", "llama3.1:8b")  # Ollama tags keep their colon


@pytest.mark.parametrize("bad", ["gpt-4o", "openai:", ":gpt-4o", "azure:gpt-4o", ""])
def test_bad_model_ids_name_the_valid_providers(bad: str) -> None:
    with pytest.raises(ConfigurationError, match=r"valid providers are \['anthropic', 'openai', 'scripted'\]"):
        parse_model_id(bad)


def test_env_override_wins_over_the_configured_model() -> None:
    assert effective_model_id("scripted:default", {}) == "scripted:default"
    assert effective_model_id("scripted:default", {"AGENTSTREAM_MODEL": ""}) == "scripted:default"
    assert effective_model_id("scripted:default", {"AGENTSTREAM_MODEL": "openai:gpt-4o-mini"}) == "openai:gpt-4o-mini"
    with pytest.raises(ConfigurationError, match=r"^AGENTSTREAM_MODEL: Unknown model provider 'gpt'"):
        effective_model_id("scripted:default", {"AGENTSTREAM_MODEL": "gpt:4o"})


def test_env_override_applies_to_every_tier() -> None:
    settings = ModelSettings(models={"simple": "openai:gpt-4o-mini", "standard": "openai:gpt-4o"})
    env = {"AGENTSTREAM_MODEL": "anthropic:claude-haiku-4-5"}
    assert {settings.model_for(tier, env) for tier in ("simple", "standard", "complex")} == {env["AGENTSTREAM_MODEL"]}
    assert settings.model_for("simple", {}) == "openai:gpt-4o-mini"
    assert settings.model_for("complex", {}) == "openai:gpt-4o"  # unset tier: the standard model
    assert settings.model_for(None, {}) == "openai:gpt-4o"


def test_price_table_defaults_and_overrides() -> None:
    usage = Usage(input_tokens=2_000_000, output_tokens=500_000)
    assert cost_usd("openai:gpt-4o-mini", usage) == pytest.approx(2 * 0.15 + 0.5 * 0.60)
    assert cost_usd("openai:gpt-4.1-mini-2025-04-14", usage) == pytest.approx(2 * 0.40 + 0.5 * 1.60)  # longest key
    assert cost_usd("scripted:default", usage) == 0.0
    assert cost_usd("scripted:anything", usage) == 0.0

    table = PriceTable(
        {"openai:gpt-4o-mini": {"input": 1.0, "output": 2.0}, "openai:my-*": ModelPrice(input=0.1, output=0.1)}
    )
    assert table.cost_usd("openai:gpt-4o-mini", usage) == pytest.approx(2.0 + 1.0)  # an override beats a default
    assert table.cost_usd("openai:gpt-4o-mini-2024-07-18", usage) == pytest.approx(0.6)  # defaults still apply
    assert table.cost_usd("openai:my-vllm", usage) == pytest.approx(0.25)
    with pytest.raises(ValidationError):
        PriceTable({"openai:x": {"input": 1.0, "outptu": 2.0}})


def test_each_table_keeps_its_own_answer_per_model_id() -> None:
    """Prices are looked up once per model id and table (every call is priced): a lookup
    answered before must not leak into another table, nor shadow a model id seen later."""
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    default = PriceTable()
    assert default.cost_usd("openai:gpt-4o", usage) == pytest.approx(12.5)
    assert default.cost_usd("openai:gpt-4o", usage) == pytest.approx(12.5)  # the kept answer
    assert default.cost_usd("openai:gpt-4o-2024-08-06", usage) == pytest.approx(12.5)  # a new id: its pattern
    assert default.cost_usd("openai:gpt-4o-mini", usage) == pytest.approx(0.75)  # not gpt-4o's kept price
    changed = PriceTable({"openai:gpt-4o": {"input": 1.0, "output": 1.0}})
    assert changed.cost_usd("openai:gpt-4o", usage) == pytest.approx(2.0)  # the override, not the default's answer
    assert changed.cost_usd("openai:gpt-4o-2024-08-06", usage) == pytest.approx(12.5)
    assert default.cost_usd("openai:gpt-4o", usage) == pytest.approx(12.5)
    assert default.price_for("openai:nothing-like-it") is None
    assert default.price_for("openai:nothing-like-it") is None  # a miss is kept as a miss


def test_unpriced_model_costs_nothing_but_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable()
    with caplog.at_level(logging.WARNING, logger="agentstream.models.pricing"):
        assert table.cost_usd("openai:unknown-model", Usage(10, 10)) == 0.0
        assert table.cost_usd("openai:unknown-model", Usage(10, 10)) == 0.0
    assert caplog.text.count("no price for model openai:unknown-model") == 1


def test_model_settings_defaults_and_validation() -> None:
    settings = ModelSettings()
    assert settings.models == {"standard": "scripted:default"}
    assert settings.max_steps == 8 and settings.fallbacks == ()
    with pytest.raises(ValidationError, match="frozen"):
        ModelSettings.__setattr__(settings, "max_steps", 3)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"max_step": 3}, "unknown key 'max_step'; valid keys are ["),
        ({"models": {"simple": "openai:gpt-4o-mini"}}, "models needs a 'standard' entry"),
        ({"models": {"standard": "gpt-4o"}}, "not of the form provider:model"),
        ({"models": {"standard": "openai:gpt-4o", "hard": "openai:o3"}}, "models.hard"),
        ({"fallbacks": ["azure:gpt-4o"]}, "Unknown model provider 'azure'"),
        ({"budget_usd": 0}, "budget_usd"),
        ({"timeout_s": 10, "call_timeout_s": 30}, "call_timeout_s (30.0) exceeds the task's timeout_s (10.0)"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ModelSettings.from_mapping(raw, where="agent 'billing'")
    assert str(caught.value).startswith("Invalid agent 'billing':")
    assert message in str(caught.value)


def test_unknown_key_message_lists_the_valid_keys() -> None:
    with pytest.raises(ConfigurationError) as caught:
        ModelSettings.from_mapping({"modles": {}})
    assert "'models'" in str(caught.value) and "'fallbacks'" in str(caught.value)


def test_system_prompt_file_is_read_relative_to_a_base_dir(tmp_path: Path) -> None:
    (tmp_path / "billing.md").write_text("You are billing.", encoding="utf-8")
    assert ModelSettings(system_prompt_file=Path("billing.md")).system_prompt(tmp_path) == "You are billing."
    with pytest.raises(ConfigurationError, match="Cannot read system_prompt_file"):
        ModelSettings(system_prompt_file=Path("missing.md")).system_prompt(tmp_path)


def test_secrets_come_from_env_or_file_and_never_show(tmp_path: Path) -> None:
    assert read_secret("OPENAI_API_KEY", {}) is None
    from_env = read_secret("OPENAI_API_KEY", {"OPENAI_API_KEY": "sk-env-123"})
    assert from_env is not None and from_env.get_secret_value() == "sk-env-123"
    secret_file = tmp_path / "key"
    secret_file.write_text("sk-file-456\n", encoding="utf-8")
    from_file = read_secret("OPENAI_API_KEY", {"OPENAI_API_KEY_FILE": str(secret_file)})
    assert from_file is not None and from_file.get_secret_value() == "sk-file-456"
    assert "sk-file-456" not in repr(from_file) and "sk-file-456" not in str(from_file)
    with pytest.raises(ConfigurationError, match="Cannot read OPENAI_API_KEY_FILE"):
        read_secret("OPENAI_API_KEY", {"OPENAI_API_KEY_FILE": str(tmp_path / "nope")})


def test_provider_reprs_hide_the_key() -> None:
    openai_model = OpenAIChatModel(
        "gpt-4o-mini", api_key=SecretStr("sk-secret-openai"), base_url="http://127.0.0.1:9/v1"
    )
    anthropic_model = AnthropicModel("claude-haiku-4-5", api_key=SecretStr("sk-secret-anthropic"))
    assert "sk-secret" not in repr(openai_model) and "sk-secret" not in repr(vars(openai_model).get("api_key"))
    assert "sk-secret" not in repr(anthropic_model)


def test_create_model_per_provider(tmp_path: Path) -> None:
    scripted = create_model("scripted:default")
    assert isinstance(scripted, ScriptedModel) and scripted.model_id == "scripted:default"

    key_file = tmp_path / "openai"
    key_file.write_text("sk-x", encoding="utf-8")
    env = {"OPENAI_API_KEY_FILE": str(key_file), "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    settings = ModelSettings(call_timeout_s=7, temperature=0.3, max_tokens=99)
    openai_model = create_model("openai:gpt-4o-mini", settings, environ=env)
    assert isinstance(openai_model, OpenAIChatModel)
    assert (openai_model.model_id, openai_model.base_url, openai_model.timeout_s) == (
        "openai:gpt-4o-mini",
        "http://127.0.0.1:9/v1",
        7,
    )
    assert (openai_model.temperature, openai_model.max_tokens) == (0.3, 99)

    anthropic_model = create_model("anthropic:claude-haiku-4-5", settings, environ={"ANTHROPIC_API_KEY": "sk-a"})
    assert isinstance(anthropic_model, AnthropicModel) and anthropic_model.max_tokens == 99


def test_create_model_without_the_sdk_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ProviderNotInstalledError) as caught:
        create_model("anthropic:claude-haiku-4-5", environ={"ANTHROPIC_API_KEY": "sk-a"})
    assert "pip install 'agentstream[anthropic]'" in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)


def test_error_hierarchy_by_meaning() -> None:
    assert issubclass(TransientModelError, model_errors.ModelError)
    assert issubclass(model_errors.ModelError, AgentStreamError)
    for transient in (
        RateLimitedError,
        model_errors.ModelTimeoutError,
        model_errors.ModelServerError,
        model_errors.ModelConnectionError,
    ):
        assert issubclass(transient, TransientModelError) and not issubclass(transient, PermanentModelError)
    for permanent in (ModelAuthError, model_errors.BadRequestError, ContextTooLongError):
        assert issubclass(permanent, PermanentModelError) and not issubclass(permanent, TransientModelError)
    error = RateLimitedError("slow down", model_id="openai:x", retry_after=2.5)
    assert (error.retry_after, error.model_id, str(error)) == (2.5, "openai:x", "slow down")
    assert model_errors.ModelServerError("boom").retry_after is None


def test_importing_the_package_does_not_import_the_sdks() -> None:
    code = "import sys, agentstream.models; print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_all_lists_the_public_names() -> None:
    # Submodules are left out whichever of them other tests have imported so far.
    public = {
        name
        for name, value in vars(models_package).items()
        if not name.startswith("_") and name != "annotations" and not isinstance(value, types.ModuleType)
    }
    assert set(models_package.__all__) == public
