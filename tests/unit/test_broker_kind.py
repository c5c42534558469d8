"""broker.is_tansu: a definite answer is cached; no answer is an error, never "Tansu"."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from agentstream import broker, unanswered
from agentstream.errors import BrokerUnavailableError


class _Node:
    id = 1


class _Cluster:
    def __init__(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id
        self.nodes = [_Node()]


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    broker.is_tansu.cache_clear()
    yield
    broker.is_tansu.cache_clear()


@pytest.fixture(autouse=True)
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between tries, counted rather than slept (a unit test does no waiting)."""
    waited: list[float] = []
    monkeypatch.setattr(unanswered, "_pause", waited.append)
    return waited


@pytest.mark.parametrize(("cluster_id", "configs", "error", "tansu"), [
    ("tansu_cluster", None, None, True),
    ("kraft-abc", {"log.dirs": object()}, None, False),
    ("kraft-abc", {}, None, True),  # no config entries: Tansu under another cluster id
    ("kraft-abc", None, KafkaError.POLICY_VIOLATION, True),  # refuses to describe its own configs
    ("kraft-abc", None, KafkaError.CLUSTER_AUTHORIZATION_FAILED, False),  # a secured cluster: not Tansu's settings
], ids=["tansu-id", "kafka", "no-configs", "refused", "denied-by-acl"])
def test_a_definite_answer_tells_the_broker(
    monkeypatch: pytest.MonkeyPatch, cluster_id: str, configs: dict[str, object] | None, error: int | None, tansu: bool,
) -> None:
    monkeypatch.setattr(broker, "AdminClient", _admin(cluster_id, configs, error))
    assert broker.is_tansu("h:9092") is tansu


@pytest.mark.parametrize("error", [KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN])
def test_no_answer_raises_and_is_not_cached_as_tansu(monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    # A Kafka too slow to answer under load was taken for Tansu for the process's lifetime.
    monkeypatch.setattr(broker, "AdminClient", _admin("kraft-abc", error=error))
    with pytest.raises(BrokerUnavailableError, match=r"h:9092 is Apache Kafka or Tansu.*Check that it is up"):
        broker.is_tansu("h:9092")
    monkeypatch.setattr(broker, "AdminClient", _admin("kraft-abc", {"log.dirs": object()}))
    assert broker.is_tansu("h:9092") is False  # asked again once it answers


# One question timing out under load could make a worker exit at its start (DescribeConfigs
# found by review; DescribeCluster, asked first, was not asked again at all).
QUESTIONS = pytest.mark.parametrize(("question", "counted"), [
    ("DescribeCluster", "cluster_questions"), ("DescribeConfigs", "questions")])


def _unanswered_admin(question: str, times: int) -> Any:
    silent = {"cluster_unanswered" if question == "DescribeCluster" else "unanswered": times}
    return _admin("kraft-abc", {"log.dirs": object()}, **silent)


def _done(result: Any = None, error: int | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(KafkaException(KafkaError(error)))
    return future


def _admin(cluster_id: str, configs: dict[str, object] | None = None, error: int | None = None,
           unanswered: int = 0, cluster_unanswered: int = 0) -> type:
    """An admin client whose DescribeConfigs times out ``unanswered`` times, then answers
    (its DescribeCluster ``cluster_unanswered`` times)."""
    asked: list[int] = []
    cluster_asked: list[int] = []

    class _Admin:
        questions = asked
        cluster_questions = cluster_asked

        def __init__(self, config: dict[str, Any]) -> None:
            pass

        def describe_cluster(self, request_timeout: float) -> Future[_Cluster]:
            cluster_asked.append(1)
            if len(cluster_asked) <= cluster_unanswered:
                return _done(error=KafkaError._TIMED_OUT)
            return _done(_Cluster(cluster_id))

        def describe_configs(self, resources: list[Any], request_timeout: float) -> dict[Any, Future[Any]]:
            asked.append(1)
            if len(asked) <= unanswered:
                return {resources[0]: _done(error=KafkaError._TIMED_OUT)}
            return {resources[0]: _done(configs, error)}

    return _Admin


@QUESTIONS
def test_a_busy_broker_is_asked_again_before_it_is_given_up(monkeypatch: pytest.MonkeyPatch, pauses: list[float],
                                                            question: str, counted: str) -> None:
    admin = _unanswered_admin(question, unanswered.ATTEMPTS - 1)
    monkeypatch.setattr(broker, "AdminClient", admin)
    assert broker.is_tansu("h:9092") is False
    assert len(getattr(admin, counted)) == unanswered.ATTEMPTS
    # A wait before each try again: a refused connection fails at once, so tries without one
    # would all fall in the moment a broker restarts.
    assert pauses == [unanswered.RETRY_WAIT_S] * (unanswered.ATTEMPTS - 1) and unanswered.RETRY_WAIT_S >= 0.5


@QUESTIONS
def test_no_answer_in_every_try_names_the_question_and_the_tries(monkeypatch: pytest.MonkeyPatch, pauses: list[float],
                                                                 question: str, counted: str) -> None:
    admin = _unanswered_admin(question, unanswered.ATTEMPTS)
    monkeypatch.setattr(broker, "AdminClient", admin)
    with pytest.raises(BrokerUnavailableError, match=f"{question} got no answer in {unanswered.ATTEMPTS} tries"):
        broker.is_tansu("h:9092")
    assert len(getattr(admin, counted)) == unanswered.ATTEMPTS
    if question == "DescribeCluster":
        assert admin.questions == []  # not asked for configs of a cluster it could not describe


@pytest.mark.parametrize(("address", "expected"), [
    ("kafka-0.kafka:9093", ("kafka-0.kafka", 9093)),
    ("kafka-0", ("kafka-0", 9092)),  # librdkafka's port when none is given
    ("[::1]:9094", ("::1", 9094)),
    ("[::1]", ("::1", 9092)),
    ("::1", ("::1", 9092)),
    ("2001:db8::8:1", ("2001:db8::8:1", 9092)),  # bare IPv6: all of it is the host
    ("kafka-0:abc", ("kafka-0", 9092)),
    ("kafka-0:²", ("kafka-0", 9092)),  # a digit to str.isdigit, not to int()
    ("127.0.0.1:70000", ("127.0.0.1", 70000)),  # not a port: takes_connections skips it
])
def test_a_bootstrap_address_gives_its_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert broker._host_and_port(address) == expected
