"""What the ScriptedModel calls, as an app's configuration: planning rules per agent type.

The offline ScriptedModel knows no domain. An app tells it, per specialist, under the
agent's ``model:`` section of its topology, which pattern in the task text makes which
tool call::

    scripted:
      - {find: 'INV-\\d+', call: lookup_invoice, argument: invoice_id, case: upper}
      - {call: search_kb, argument: query, args: {category: billing}}

A rule with ``find`` makes one call per distinct match (the expression's first group if
it has one, else the whole match), passed as ``argument``; a rule without ``find`` makes
one call on every task, with the task text as ``argument`` (if any). ``args`` are added
to every call of the rule. Rules run in order; a tool the agent is not offered is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A rule without ``find`` passes the task text; a query of a few sentences is enough.
TEXT_ARGUMENT_CHARS = 200


class ScriptedRule(BaseModel):
    """One planning rule of the ScriptedModel (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    call: str = Field(min_length=1)
    find: str | None = None
    argument: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    case: Literal["upper", "lower"] | None = None

    @field_validator("find")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"find {value!r} is not a regular expression ({exc}); escape characters meant literally"
                ) from None
        return value

    @model_validator(mode="after")
    def _argument_for_matches(self) -> ScriptedRule:
        if self.find is not None and not self.argument:
            raise ValueError(
                f"the rule calling {self.call!r} finds {self.find!r} but names no argument to pass it in; "
                "add argument: <the tool's parameter>"
            )
        return self

    def calls(self, text: str) -> list[dict[str, Any]]:
        """The arguments of each call this rule makes for ``text`` (none: no match)."""
        if self.find is None:
            values = [" ".join(text.split())[:TEXT_ARGUMENT_CHARS]]
        else:
            found = re.finditer(self.find, text, re.IGNORECASE)
            values = list(dict.fromkeys(self._cased(m.group(1) if m.re.groups else m.group(0)) for m in found))
        return [{self.argument: value, **self.args} if self.argument else dict(self.args) for value in values]

    def _cased(self, value: str) -> str:
        return value.upper() if self.case == "upper" else value.lower() if self.case == "lower" else value


def plan_calls(rules: Sequence[ScriptedRule], text: str, offered: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls ``rules`` make for ``text``, in rule order, offered tools only."""
    return [(rule.call, args) for rule in rules if rule.call in offered for args in rule.calls(text)]
