"""The exact-match response cache: RocksDB-backed, TTL, skipped for sampling settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentstream.controls import (
    GuardedModel,
    ResponseCache,
    cache_allowed,
    cache_key,
    collect_stats,
)
from agentstream.errors import ConfigurationError
from agentstream.models import Message, ModelResponse, ScriptedModel, ToolCall, Usage
from tests import support_desk

CONVERSATION = [
    Message("system", "You are the billing support specialist."),
    Message("user", "Was invoice INV-1002 paid?"),
]
TOOLS = support_desk.registry().schemas(support_desk.allowlist("billing"))
RESPONSE = ModelResponse(
    None, (ToolCall("call_0_0", "lookup_invoice", {"invoice_id": "INV-1002"}),), Usage(120, 14, 0.0021), "m"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_key_is_a_hash_of_everything_that_shapes_the_reply() -> None:
    base = cache_key("m", CONVERSATION, TOOLS)
    assert len(base) == 32 and base == cache_key("m", list(CONVERSATION), [dict(t) for t in TOOLS])
    variants = {
        cache_key("other", CONVERSATION, TOOLS),
        cache_key("m", CONVERSATION[:1], TOOLS),
        cache_key("m", [*CONVERSATION[:1], Message("user", "Was invoice INV-1003 paid?")], TOOLS),
        cache_key("m", CONVERSATION, TOOLS[:1]),
        cache_key("m", CONVERSATION, TOOLS, {"temperature": 0}),
    }
    assert base not in variants and len(variants) == 5


def test_round_trip_expiry_and_counters(tmp_path: Path) -> None:
    clock = Clock()
    with ResponseCache(tmp_path / "cache", ttl_s=60, now=clock) as cache:
        key = cache_key("m", CONVERSATION, TOOLS)
        assert cache.get(key) is None
        cache.put(key, RESPONSE)
        assert cache.get(key) == RESPONSE
        clock.now += 60
        assert cache.get(key) is None  # expired, and dropped
        assert (cache.hits, cache.misses) == (1, 2)


def test_entries_survive_a_restart_and_purge_drops_the_expired(tmp_path: Path) -> None:
    clock = Clock()
    key = cache_key("m", CONVERSATION, TOOLS)
    with ResponseCache(tmp_path / "cache", ttl_s=60, now=clock) as cache:
        cache.put(key, RESPONSE)
        cache.put(b"old", RESPONSE)
    with ResponseCache(tmp_path / "cache", ttl_s=60, now=clock) as cache:
        assert cache.get(key) == RESPONSE
        clock.now += 61
        assert cache.purge_expired() == 2


def test_a_cache_hit_avoids_the_model_call_and_costs_nothing(tmp_path: Path) -> None:
    log: list[tuple[str, int]] = []
    with ResponseCache(tmp_path / "cache") as cache:
        guarded = GuardedModel(ScriptedModel(call_log=log), cache=cache)

        async def twice() -> tuple[ModelResponse, ModelResponse]:
            with collect_stats() as stats:
                first = await guarded.complete(CONVERSATION, TOOLS)
                second = await guarded.complete(CONVERSATION, TOOLS)
            assert (stats.cache_misses, stats.cache_hits, stats.attempts) == (1, 1, 1)
            return first, second

        first, second = asyncio.run(twice())
    assert len(log) == 1  # the second call never reached the model
    assert second.tool_calls == first.tool_calls and second.model == first.model
    assert first.usage.input_tokens > 0 and second.usage == Usage(0, 0, 0.0)


@pytest.mark.parametrize(("temperature", "deterministic"), [(0.7, True), (None, False)])
def test_sampling_settings_skip_the_cache(tmp_path: Path, temperature: float | None, deterministic: bool) -> None:
    log: list[tuple[str, int]] = []
    with ResponseCache(tmp_path / "cache") as cache:
        guarded = GuardedModel(
            ScriptedModel(call_log=log), cache=cache, temperature=temperature, deterministic=deterministic
        )
        for _ in range(2):
            asyncio.run(guarded.complete(CONVERSATION, TOOLS))
        assert len(log) == 2 and cache.hits == cache.misses == 0


def test_cache_allowed() -> None:
    assert cache_allowed(None) and cache_allowed(0.0)
    assert not cache_allowed(0.2) and not cache_allowed(0.0, deterministic=False)


def test_a_closed_cache_says_so(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache")
    cache.close()
    with pytest.raises(ConfigurationError, match="has been closed"):
        cache.get(b"k")
    with pytest.raises(ConfigurationError, match="ttl_s"):
        ResponseCache(tmp_path / "other", ttl_s=0)
