"""The supervisor: gathers the specialist results of a task into one final result."""

from __future__ import annotations

from agentstream.supervisor.combine import combine, is_complete

__all__ = ["combine", "is_complete"]
