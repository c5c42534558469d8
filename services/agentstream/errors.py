"""The one exception root of agentstream; each layer subclasses it with a meaning."""

from __future__ import annotations


class AgentStreamError(Exception):
    """Base of every error agentstream raises on purpose."""


class ConfigurationError(AgentStreamError):
    """A setting, topology entry or argument is wrong; the message names it and the fix."""


class BrokerUnavailableError(AgentStreamError):
    """No Kafka broker could be reached or started."""


class UnknownAgentTypeError(AgentStreamError):
    """A task asked for an agent type the deployment does not run (a permanent error)."""


class ToolDefinitionError(ConfigurationError):
    """A tool function cannot be exposed to a model (missing or unsupported type hints,
    duplicate name, allowlist naming an unregistered tool)."""


class InconsistentResultsError(AgentStreamError, ValueError):
    """Specialist results handed to the supervisor do not belong to one task."""


class SubmitError(AgentStreamError):
    """The broker did not acknowledge every submitted task (client.py Submitter); its cause
    is what failed, its message adds the command line's advice."""
