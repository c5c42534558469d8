"""agentstream: a Kafka-native runtime that takes multi-agent LLM systems to production."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The task clients, imported on first use (a worker needs none of them): the one shape
# (task_client.py), over Kafka (kafka_client.py) and over HTTP (gateway_client.py, which
# needs httpx: the `client` extra).
_LAZY = {
    "TaskClient": "task_client", "AsyncTaskClient": "task_client", "TaskClientError": "task_client",
    "StreamEvent": "task_client", "Client": "kafka_client", "AsyncClient": "kafka_client",
    "GatewayClient": "gateway_client", "AsyncGatewayClient": "gateway_client", "GatewayError": "gateway_client",
    "GatewayEvent": "gateway_client",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"agentstream.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'agentstream' has no attribute {name!r}")
