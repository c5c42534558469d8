"""Which tool calls need a human's approval: the ``approvals:`` section of a specialist.

Per tool, ``require`` is ``always``, ``never`` or ``when``; ``when`` is a list of
comparisons on the call's arguments, and the call needs approval if ANY of them holds::

    approvals:
      refund_invoice: {require: always, deadline_s: 86400, on_deadline: deny}
      close_account: {require: always, deadline_s: 3600, on_deadline: escalate, escalate_to: team-leads}
      issue_credit:
        require: when
        when: [{argument: amount, op: ">", value: 100}]

No expression language on purpose (no eval): a comparison names one argument, one of six
operators and a literal. A comparison that cannot be judged — the argument is missing, or
a number is compared with a string — counts as holding: an unsure gate asks a human.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

Op = Literal["==", "!=", ">", ">=", "<", "<="]
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}
DEFAULT_DEADLINE_S = 86400.0  # a day: a human on another shift still answers in time


class Comparison(BaseModel):
    """``<argument> <op> <value>`` on one call's arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argument: str = Field(min_length=1)
    op: Op
    value: str | int | float | bool

    def holds(self, arguments: Mapping[str, Any]) -> bool:
        if self.argument not in arguments:
            return True  # cannot judge: ask
        actual = arguments[self.argument]
        if self.op not in ("==", "!=") and not _comparable(actual, self.value):
            return True  # "abc" > 100 cannot be judged: ask
        return bool(_OPS[self.op](actual, self.value))


class DeadlinePolicy(BaseModel):
    """How long a request waits for a human, and what happens when the deadline passes.
    Also the supervisor's escalations' (``supervision.approval``, supervisor/escalation.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deadline_s: PositiveFloat = DEFAULT_DEADLINE_S
    on_deadline: Literal["deny", "escalate"] = "deny"
    # escalate: at the deadline the request goes again to this approver group, with a new
    # deadline of deadline_s; at that one the call is denied.
    escalate_to: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _escalate_with_group(self) -> DeadlinePolicy:
        if (self.on_deadline == "escalate") != (self.escalate_to is not None):
            raise ValueError("on_deadline: escalate needs escalate_to: <approver group>, and escalate_to goes only "
                             f"with on_deadline: escalate (got on_deadline: {self.on_deadline}, "
                             f"escalate_to: {self.escalate_to!r})")
        return self


class ApprovalPolicy(DeadlinePolicy):
    """One tool's approval rule, its deadline and what happens when the deadline passes."""

    require: Literal["always", "never", "when"] = "always"
    when: tuple[Comparison, ...] = ()

    @model_validator(mode="after")
    def _when_with_rule(self) -> ApprovalPolicy:
        if self.require == "when" and not self.when:
            raise ValueError("require: when needs a list `when: [{argument, op, value}, ...]`; "
                             "or use require: always / never")
        if self.require != "when" and self.when:
            raise ValueError(f"`when` comparisons apply only with require: when, not require: {self.require}; "
                             "set require: when or drop `when`")
        return self

    def needs_approval(self, arguments: object) -> bool:
        """Whether a call with ``arguments`` (the model's JSON object) waits for a human."""
        if self.require == "when":
            if not isinstance(arguments, Mapping):
                return True  # not an object: nothing to compare, ask
            return any(comparison.holds(arguments) for comparison in self.when)
        return self.require == "always"


def _comparable(actual: object, expected: object) -> bool:
    def number(x: object) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    return (number(actual) and number(expected)) or (isinstance(actual, str) and isinstance(expected, str))
