"""A worker's start-up calls to the cluster are asked again while they get no answer: a
broker's stall of some seconds made a router exit 1 at its start in CI ("Failed to get
metadata: Local: Broker transport failure"). A refusal is raised as it is."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from agentstream import unanswered
from agentstream.errors import BrokerUnavailableError
from agentstream.runtime.topics import ensure_changelogs, require_topics

TASKS, CHANGELOG = "tasks", "router-seen-changelog"


@pytest.fixture(autouse=True)
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between tries, counted rather than slept (a unit test does no waiting)."""
    waited: list[float] = []
    monkeypatch.setattr(unanswered, "_pause", waited.append)
    return waited


def _failed(code: int) -> KafkaException:
    return KafkaException(KafkaError(code, "Failed to get metadata: Local: Broker transport failure"))


class _Admin:
    """An admin client whose listings fail with ``listing_errors`` in turn, then list
    ``topics``; its CreateTopics fail with ``create_errors`` in turn, then create."""

    def __init__(self, topics: dict[str, int], listing_errors: Sequence[int] = (),
                 create_errors: Sequence[int] = ()) -> None:
        self.topics = topics
        self.listing_errors, self.create_errors = list(listing_errors), list(create_errors)
        self.listings = 0
        self.created: list[NewTopic] = []

    def list_topics(self, timeout: float) -> Any:
        self.listings += 1
        if self.listing_errors:
            raise _failed(self.listing_errors.pop(0))
        listed = {name: SimpleNamespace(partitions=dict.fromkeys(range(count)), error=None)
                  for name, count in self.topics.items()}
        return SimpleNamespace(topics=listed)

    def create_topics(self, new: list[NewTopic], *, operation_timeout: float, request_timeout: float) -> dict[str, Future[None]]:
        # The request's own timeouts: a future's result(timeout) would raise Python's TimeoutError.
        assert operation_timeout > 0 and request_timeout > 0
        self.created.extend(new)
        future: Future[None] = Future()
        if self.create_errors:
            future.set_exception(KafkaException(KafkaError(self.create_errors.pop(0))))
        else:
            self.topics[new[0].topic] = new[0].num_partitions
            future.set_result(None)
        return {new[0].topic: future}


# Listed here, not taken from unanswered.UNANSWERED: a code dropped from there must fail.
NO_ANSWER = pytest.mark.parametrize("error", [KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                              KafkaError.REQUEST_TIMED_OUT])


@NO_ANSWER
def test_a_listing_without_an_answer_is_asked_again(pauses: list[float], error: int) -> None:
    admin = _Admin({TASKS: 3}, listing_errors=[error])
    assert require_topics(admin, [TASKS], "h:9092", ask_again=True) == {TASKS: [0, 1, 2]}  # type: ignore[arg-type]
    assert admin.listings == 2
    assert pauses == [unanswered.RETRY_WAIT_S]


def test_a_command_or_a_request_is_answered_at_once_not_asked_again(pauses: list[float]) -> None:
    # A gateway request or `agentstream lag` has its own time budget (and a thread held meanwhile).
    admin = _Admin({TASKS: 3}, listing_errors=[KafkaError._TRANSPORT])
    with pytest.raises(KafkaException):
        require_topics(admin, [TASKS], "h:9092")  # type: ignore[arg-type]
    assert admin.listings == 1 and pauses == []


def test_a_try_again_is_logged_with_what_got_no_answer(caplog: pytest.LogCaptureFixture) -> None:
    admin = _Admin({TASKS: 3}, listing_errors=[KafkaError._TRANSPORT])
    with caplog.at_level("WARNING", logger=unanswered.__name__):
        require_topics(admin, [TASKS], "h:9092", ask_again=True)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        f"Metadata got no answer ({_failed(KafkaError._TRANSPORT)}); asking again in 1 s (try 2 of {unanswered.ATTEMPTS})"]


def test_changelogs_are_listed_and_created_again_while_no_answer_comes(pauses: list[float]) -> None:
    # The second CreateTopics meets the topic the first one created before its answer was lost.
    admin = _Admin({}, listing_errors=[KafkaError._TRANSPORT],
                   create_errors=[KafkaError._TIMED_OUT, KafkaError.TOPIC_ALREADY_EXISTS])
    ensure_changelogs(admin, [CHANGELOG], 3, bootstrap="h:9092")  # type: ignore[arg-type]
    assert admin.listings == 2
    assert [t.topic for t in admin.created] == [CHANGELOG, CHANGELOG]
    assert pauses == [unanswered.RETRY_WAIT_S] * 2


@pytest.mark.parametrize("error", [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED])
def test_a_refused_listing_is_raised_as_it_is_at_once(pauses: list[float], error: int) -> None:
    admin = _Admin({TASKS: 3}, listing_errors=[error])
    with pytest.raises(KafkaException) as raised:
        require_topics(admin, [TASKS], "h:9092", ask_again=True)  # type: ignore[arg-type]
    assert raised.value.args[0].code() == error
    assert admin.listings == 1 and pauses == []


def test_a_refused_create_is_raised_as_it_is_at_once(pauses: list[float]) -> None:
    admin = _Admin({}, create_errors=[KafkaError.POLICY_VIOLATION])
    with pytest.raises(KafkaException) as raised:
        ensure_changelogs(admin, [CHANGELOG], 3, bootstrap="h:9092")  # type: ignore[arg-type]
    assert raised.value.args[0].code() == KafkaError.POLICY_VIOLATION
    assert len(admin.created) == 1 and pauses == []


@NO_ANSWER
def test_no_answer_in_every_try_names_the_call_and_the_cluster(pauses: list[float], error: int) -> None:
    admin = _Admin({TASKS: 3}, listing_errors=[error] * unanswered.ATTEMPTS)
    with pytest.raises(BrokerUnavailableError, match=(
            f"^Could not list the topics of the cluster at h:9092: Metadata got no answer in {unanswered.ATTEMPTS} "
            r"tries \(.*\)\. Check that it is up and reachable, then start again\.$")):
        require_topics(admin, [TASKS], "h:9092", ask_again=True)  # type: ignore[arg-type]
    assert admin.listings == unanswered.ATTEMPTS
    assert pauses == [unanswered.RETRY_WAIT_S] * (unanswered.ATTEMPTS - 1)


def test_a_create_without_an_answer_in_every_try_names_the_changelog(pauses: list[float]) -> None:
    admin = _Admin({}, create_errors=[KafkaError._TIMED_OUT] * unanswered.ATTEMPTS)
    with pytest.raises(BrokerUnavailableError, match=f"^Could not create changelog {CHANGELOG} on the cluster at h:9092: "
                                                     f"CreateTopics got no answer in {unanswered.ATTEMPTS} tries"):
        ensure_changelogs(admin, [CHANGELOG], 3, bootstrap="h:9092")  # type: ignore[arg-type]
    assert len(admin.created) == unanswered.ATTEMPTS
