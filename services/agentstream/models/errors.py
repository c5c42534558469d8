"""Model-call errors by meaning: transient (worth retrying) versus permanent.

Providers translate their SDK's exceptions into these at the boundary, so the controls
(retries, breaker, fallback) decide on meaning alone and never import a provider SDK.
"""

from __future__ import annotations

from agentstream.errors import AgentStreamError, ConfigurationError


class ModelError(AgentStreamError):
    """A model call failed. ``model_id`` names the model when the raiser knows it."""

    def __init__(self, message: str, *, model_id: str | None = None) -> None:
        super().__init__(message)
        self.model_id = model_id


class TransientModelError(ModelError):
    """The same call may succeed later. ``retry_after`` is the provider's hint in seconds."""

    def __init__(self, message: str, *, model_id: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, model_id=model_id)
        self.retry_after = retry_after


class RateLimitedError(TransientModelError):
    """The provider refused the call for quota (HTTP 429)."""


class ModelTimeoutError(TransientModelError):
    """No complete reply within the per-call timeout."""


class ModelServerError(TransientModelError):
    """The provider failed on its side (HTTP 5xx, Anthropic 529 overloaded)."""


class ModelConnectionError(TransientModelError):
    """The provider could not be reached (DNS, refused, reset)."""


class PermanentModelError(ModelError):
    """Retrying the same call cannot help; fall back or fail the task."""


class ModelAuthError(PermanentModelError):
    """The API key is missing, wrong, or lacks permission (HTTP 401/403)."""


class BadRequestError(PermanentModelError):
    """The provider rejected the request as malformed (HTTP 400/404/422)."""


class ContextTooLongError(BadRequestError):
    """The messages exceed the model's context window; compress history or pick a bigger model."""


class ProviderNotInstalledError(ConfigurationError):
    """A provider's optional SDK is not installed; the message gives the pip command."""

    def __init__(self, provider: str, package: str) -> None:
        super().__init__(
            f"The {provider!r} model provider needs the {package!r} package, which is not installed. "
            f"Install it with: pip install 'agentstream[{provider}]'"
        )
        self.provider = provider
        self.package = package
