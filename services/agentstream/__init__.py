"""agentstream: a Kafka-native runtime that takes multi-agent LLM systems to production."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# The HTTP gateway's clients (agentstream/gateway_client.py), imported on first use: they
# need httpx (the `client` extra), which a worker does not.
_GATEWAY_CLIENT = ("GatewayClient", "AsyncGatewayClient", "GatewayError", "GatewayEvent")

__all__ = ["__version__", *_GATEWAY_CLIENT]


def __getattr__(name: str) -> Any:
    if name in _GATEWAY_CLIENT:
        from agentstream import gateway_client

        return getattr(gateway_client, name)
    raise AttributeError(f"module 'agentstream' has no attribute {name!r}")
