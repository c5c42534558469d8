"""What a processor checks and creates on the cluster before it joins its group."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from agentstream.runtime.errors import MissingTopicError, ProcessorError
from agentstream.unanswered import asked, error_code

APPLY_HINT = "create the topology's topics with `agentstream topology apply`"
# The broker's time to create a topic, then the client's for the whole request: a broker
# that takes all of its time still answers before the client gives up.
_CREATE_OPERATION_TIMEOUT_S = 25.0
_CREATE_REQUEST_TIMEOUT_S = 30.0


def require_topics(
    admin: AdminClient, topics: Iterable[str], bootstrap: str | None = None, timeout: float = 30.0, *,
    ask_again: bool = False,
) -> dict[str, list[int]]:
    """The partitions of each of ``topics``, or MissingTopicError naming every missing one
    (and the cluster, when ``bootstrap`` is given).

    Looked up in the full topic list only: a Metadata request that names a topic makes a
    broker with auto-creation (Tansu, always) create it with its default partition count.
    ``ask_again``: a worker's start-up, which rides out a broker's blip (unanswered.py); a
    command or an HTTP request answers within ``timeout`` instead.
    """
    metadata = _topic_list(admin, bootstrap, timeout) if ask_again else admin.list_topics(timeout=timeout)
    found: dict[str, list[int]] = {}
    missing: list[str] = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            missing.append(topic)
        else:
            found[topic] = sorted(meta.partitions)
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        one = len(missing) == 1
        raise MissingTopicError(
            f"{'Topic' if one else 'Topics'} {listed} {'does' if one else 'do'} not exist"
            f"{f' on {bootstrap}' if bootstrap else ''}; {APPLY_HINT}."
        )
    return found


def _topic_list(admin: AdminClient, bootstrap: str | None, timeout: float) -> ClusterMetadata:
    """The cluster's metadata with every topic, asked again while no answer comes (a
    broker's stall of some seconds made a worker exit at its start in CI)."""
    return asked(lambda: admin.list_topics(timeout=timeout), call="Metadata",
                 purpose=f"Could not list the topics of {_cluster(bootstrap)}")


def co_partitioned_inputs(admin: AdminClient, processor: str, topics: Iterable[str], bootstrap: str | None = None) -> int:
    """The partition count every input shares; an error if one is missing or differs."""
    counts = {topic: len(partitions) for topic, partitions in require_topics(admin, topics, bootstrap, ask_again=True).items()}
    if len(set(counts.values())) > 1:
        raise ProcessorError(
            f"Inputs of processor {processor!r} are not co-partitioned: {counts}. "
            "Give every input topic the same partition count."
        )
    return next(iter(counts.values()))


def ensure_changelogs(
    admin: AdminClient, changelogs: Iterable[str], partitions: int, config: Mapping[str, str] | None = None,
    bootstrap: str | None = None,
) -> None:
    """Create missing compacted changelog topics (with ``config``, e.g. the topology's compaction
    settings); refuse one with another partition count."""
    existing = _topic_list(admin, bootstrap, 30).topics
    for topic in changelogs:
        meta = existing.get(topic)
        if meta is not None and meta.error is None:
            if len(meta.partitions) != partitions:
                raise ProcessorError(
                    f"Changelog {topic!r} has {len(meta.partitions)} partitions but the inputs have "
                    f"{partitions}; they must match."
                )
            continue
        _create(admin, NewTopic(topic, partitions, config={**(config or {}), "cleanup.policy": "compact"}), bootstrap)


def _create(admin: AdminClient, topic: NewTopic, bootstrap: str | None) -> None:
    """Create ``topic``; one that exists is created (by another worker, or by a try of ours
    whose answer was lost: CreateTopics is asked again while no answer comes)."""
    # Timeouts of the request itself: a future's own result(timeout) would raise Python's
    # TimeoutError, which is neither asked again nor an error the CLI reports.
    create = partial(admin.create_topics, [topic], operation_timeout=_CREATE_OPERATION_TIMEOUT_S,
                     request_timeout=_CREATE_REQUEST_TIMEOUT_S)
    try:
        asked(lambda: create()[topic.topic].result(), call="CreateTopics",
              purpose=f"Could not create changelog {topic.topic} on {_cluster(bootstrap)}")
    except KafkaException as exc:
        if error_code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def _cluster(bootstrap: str | None) -> str:
    """The cluster an error names."""
    return f"the cluster at {bootstrap}" if bootstrap else "the cluster"
