"""agentstream: a Kafka-native runtime that takes multi-agent LLM systems to production."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
