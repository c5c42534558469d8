"""The one exception root of agentstream; each layer subclasses it with a meaning."""

from __future__ import annotations


class AgentStreamError(Exception):
    """Base of every error agentstream raises on purpose."""


class ConfigurationError(AgentStreamError):
    """A setting, topology entry or argument is wrong; the message names it and the fix."""


class BrokerUnavailableError(AgentStreamError):
    """No Kafka broker could be reached or started."""
