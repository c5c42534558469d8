"""Counters of what the controls did, per model and per agent run.

A guarded model is shared by many concurrent runs, so its own counters cannot tell one
task's retries from another's. Each run therefore opens a ``collect_stats`` scope (a
context variable, copied into the tasks it spawns) and every control adds to the scope's
counters as well as to the model's lifetime counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Literal

Counter = Literal[
    "calls", "attempts", "retries", "cache_hits", "cache_misses", "circuit_rejections", "fallbacks", "minimum_viable"
]


@dataclass
class ControlStats:
    """How many times each control acted.

    ``calls``: ``complete`` calls a guarded model served (cache hits included);
    ``attempts``: requests that reached the provider (retries included);
    ``retries``: attempts after the first of a call, the number usage reports;
    ``cache_hits``/``cache_misses``: lookups in the response cache;
    ``circuit_rejections``: calls refused at once by an open breaker;
    ``fallbacks``: times a fallback chain moved on to its next model;
    ``minimum_viable``: times a chain ran out of models and answered with the
    minimum viable answer.
    """

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    circuit_rejections: int = 0
    fallbacks: int = 0
    minimum_viable: int = 0

    def add(self, counter: Counter, n: int = 1) -> None:
        self.__dict__[counter] += n  # a field's value, without two attribute calls (every model call counts)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _COUNTERS}

    def acted(self) -> bool:
        """Whether any control acted (every run asks; cheaper than ``as_dict``)."""
        return any(getattr(self, name) for name in _COUNTERS)

    def usage_extras(self) -> dict[str, int]:
        """The counters a task's usage carries next to tokens and cost."""
        return {"retries": self.retries, "fallbacks": self.fallbacks, "cache_hits": self.cache_hits}


# The counter names, read once: ``dataclasses.fields`` builds its answer on every call.
_COUNTERS = tuple(f.name for f in fields(ControlStats))

_scope: ContextVar[ControlStats | None] = ContextVar("agentstream_control_stats", default=None)


@contextmanager
def collect_stats() -> Iterator[ControlStats]:
    """Count what the controls do inside the block (and in tasks it spawns)."""
    stats = ControlStats()
    token = _scope.set(stats)
    try:
        yield stats
    finally:
        _scope.reset(token)


def record(own: ControlStats, counter: Counter, n: int = 1) -> None:
    """Add to a control's lifetime counters and to the current run's, if one collects."""
    own.add(counter, n)
    scoped = _scope.get()
    if scoped is not None and scoped is not own:
        scoped.add(counter, n)
