"""Errors of the stream-processor runtime."""

from __future__ import annotations

from agentstream.errors import AgentStreamError


class ProcessorError(AgentStreamError):
    """The processor cannot go on (misuse, or the broker refused something essential)."""


class MissingTopicError(ProcessorError):
    """A topic a client needs is not on the cluster. No client creates one by using it: a
    broker that auto-creates topics would give it its default partition count and configs."""


class RestoreInterrupted(ProcessorError):
    """A stop was requested while tables were being restored; what was applied is kept."""


class CheckpointError(ProcessorError):
    """Outputs or changelog writes were not acknowledged, so source offsets stay uncommitted.

    The processor stops rather than commit: the uncommitted records are processed again
    by whoever owns the partition next, so nothing is lost.
    """


class HandlerError(AgentStreamError):
    """A handler failed on one record; ``where`` is ``topic[partition]@offset``."""

    def __init__(self, where: str, cause: BaseException) -> None:
        super().__init__(f"{where}: {type(cause).__name__}: {cause}")
        self.where = where
        self.cause = cause
