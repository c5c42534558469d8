"""The case file of ``agentstream eval``::

    agent: billing                 # the specialist (``--agent`` wins)
    threshold: 0.8                 # the share of cases that must pass (``--threshold`` wins)
    judge: "openai:gpt-4o-mini"    # optional: the judge model (default: the agent's own model)
    cases:
      - id: invoice-status
        input: "What is the status of INV-1001?"
        status: COMPLETED          # the run's expected status (default COMPLETED)
        expect:
          - contains: ["INV-1001", "paid"]
          - regex: 'amount_due=0(\\.0+)?\\b'
          - exact: "..."
          - llm_judge:
              rubric: "States that the invoice is paid and cites the lookup."
              scripted: 'status=paid'   # what the offline judge checks (the scripted model cannot read a rubric)

A case passes when its run ends in ``status`` and every check passes; its score is the
mean of its checks' scores.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentstream.errors import ConfigurationError
from agentstream.models.config import describe_errors

DEFAULT_THRESHOLD = 0.8


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _compiles(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression ({exc}); escape characters meant literally") from None
    return pattern


class Rubric(_Strict):
    """What an LLM judge grades an answer against."""

    rubric: str = Field(min_length=1)
    scripted: str | None = None  # the regular expression the offline judge looks for instead

    @field_validator("scripted")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        return _compiles(value)


class Check(_Strict):
    """One scorer: exactly one of the fields."""

    contains: str | tuple[str, ...] | None = None
    regex: str | None = None
    exact: str | None = None
    llm_judge: Rubric | None = None

    @field_validator("regex")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        return _compiles(value)

    @model_validator(mode="after")
    def _one(self) -> Check:
        chosen = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"a check names exactly one scorer of {list(type(self).model_fields)}, got {chosen or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)


class Case(_Strict):
    id: str = Field(min_length=1)
    input: str = Field(min_length=1)
    tier: str | None = None
    status: Literal["COMPLETED", "FAILED"] = "COMPLETED"
    expect: tuple[Check, ...] = Field(min_length=1)


class CaseSet(_Strict):
    agent: str | None = None
    threshold: float | None = Field(default=None, ge=0, le=1)
    judge: str | None = None
    cases: tuple[Case, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> CaseSet:
        ids = [case.id for case in self.cases]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"case ids must be unique; used twice: {twice}")
        return self


def load_cases(path: Path) -> CaseSet:
    """The case set in ``path``; a bad file fails with what is wrong and where."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the case file {path}: {exc.strerror}.") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"The case file {path} is not valid YAML: {exc}") from None
    try:
        return CaseSet.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(describe_errors(exc, f"case file {path}", CaseSet)) from None
