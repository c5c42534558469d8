"""The Model interface and its providers; services depend on the interface only."""

from __future__ import annotations

from agentstream.models.base import (
    Message,
    Model,
    ModelResponse,
    ToolCall,
    Usage,
    current_task_key,
    task_scope,
)
from agentstream.models.scripted import SCRIPTED_MARKER, ScriptedModel

__all__ = [
    "SCRIPTED_MARKER",
    "Message",
    "Model",
    "ModelResponse",
    "ScriptedModel",
    "ToolCall",
    "Usage",
    "current_task_key",
    "task_scope",
]
