"""A configuration file's YAML read as a mapping, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agentstream.errors import ConfigurationError


def yaml_mapping(yaml_text: str, source: Path, what: str, expected: str = "a mapping") -> dict[str, Any]:
    """The top-level mapping of ``yaml_text``, read from ``source`` (``what``: "topology", "tenants")."""
    try:
        raw = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"The {what} file {source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"The {what} file {source} must hold {expected} at the top level.")
    return raw
