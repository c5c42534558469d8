"""The tenancy errors: an authentication or authorization failure with its HTTP status."""

from __future__ import annotations

from agentstream.errors import AgentStreamError

UNAUTHENTICATED = 401  # no credential, or one that does not verify
FORBIDDEN = 403  # a valid credential that may not do this


class AuthError(AgentStreamError):
    """A request is refused: ``status`` is 401 (no or bad credential) or 403 (valid but not
    allowed). The message is safe to show the caller: it never holds the credential."""

    def __init__(self, message: str, status: int = UNAUTHENTICATED) -> None:
        super().__init__(message)
        self.status = status
