"""A question to the cluster asked again while it gets no answer.

A broker that stalls for some seconds (a starved machine, a long pause: seen in CI) or
restarts drops a request's connection or lets it time out. librdkafka asks a dropped
request again itself, but within some hundred milliseconds (at most twice, its debug log
says), and a client that has just learnt the cluster's brokers sometimes fails it at once.
Asked again here a second later, a request waits up to its own timeout for a broker to be
up. Any other error is an answer (a denied ACL, an existing topic) and is raised as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from agentstream.errors import BrokerUnavailableError

log = logging.getLogger(__name__)

__all__ = ["ATTEMPTS", "RETRY_WAIT_S", "UNANSWERED", "asked", "error_code", "unanswered"]

ATTEMPTS = 3
# Between two tries: a refused connection (a broker restarting) fails in milliseconds, and
# three tries without a wait would all fall in the same moment.
RETRY_WAIT_S = 1.0
# No answer came: the client's own timeout, a dropped connection, no broker up, or the broker's
# own timeout of the request (a CreateTopics it could not finish in time).
UNANSWERED = frozenset({KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                        KafkaError.REQUEST_TIMED_OUT})

_Answer = TypeVar("_Answer")


def asked(question: Callable[[], _Answer], *, call: str, purpose: str) -> _Answer:
    """``question`` asked up to ATTEMPTS times, RETRY_WAIT_S apart, while no answer comes.

    No answer in any try is a BrokerUnavailableError: ``purpose`` (what could not be done,
    naming the broker's address), ``call`` (the request, e.g. "Metadata") and what to check.
    """
    def said_again(state: RetryCallState) -> None:
        failed = state.outcome.exception() if state.outcome else None
        log.warning("%s got no answer (%s); asking again in %g s (try %d of %d)", call, failed, RETRY_WAIT_S,
                    state.attempt_number + 1, ATTEMPTS)

    ask = Retrying(stop=stop_after_attempt(ATTEMPTS), retry=retry_if_exception(unanswered), reraise=True,
                   wait=wait_fixed(RETRY_WAIT_S), sleep=_pause, before_sleep=said_again)
    try:
        return ask(question)
    except KafkaException as exc:
        if not unanswered(exc):
            raise
        raise BrokerUnavailableError(
            f"{purpose}: {call} got no answer in {ATTEMPTS} tries ({exc}). "
            "Check that it is up and reachable, then start again.") from exc


def unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` is a request that got no answer (rather than a refusal)."""
    return isinstance(exc, KafkaException) and error_code(exc) in UNANSWERED


def error_code(exc: KafkaException) -> int | None:
    """The code of the KafkaError ``exc`` carries, if it carries one."""
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _pause(seconds: float) -> None:
    """The wait between two tries (the unit tests count it instead of waiting)."""
    time.sleep(seconds)
