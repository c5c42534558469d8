"""What a processor checks and creates on the cluster before it joins its group."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from agentstream.runtime.errors import MissingTopicError, ProcessorError

APPLY_HINT = "create the topology's topics with `agentstream topology apply`"


def require_topics(
    admin: AdminClient, topics: Iterable[str], bootstrap: str | None = None, timeout: float = 30.0
) -> dict[str, list[int]]:
    """The partitions of each of ``topics``, or MissingTopicError naming every missing one
    (and the cluster, when ``bootstrap`` is given).

    Looked up in the full topic list only: a Metadata request that names a topic makes a
    broker with auto-creation (Tansu, always) create it with its default partition count.
    """
    metadata = admin.list_topics(timeout=timeout)
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


def co_partitioned_inputs(admin: AdminClient, processor: str, topics: Iterable[str]) -> int:
    """The partition count every input shares; an error if one is missing or differs."""
    counts = {topic: len(partitions) for topic, partitions in require_topics(admin, topics).items()}
    if len(set(counts.values())) > 1:
        raise ProcessorError(
            f"Inputs of processor {processor!r} are not co-partitioned: {counts}. "
            "Give every input topic the same partition count."
        )
    return next(iter(counts.values()))


def ensure_changelogs(
    admin: AdminClient, changelogs: Iterable[str], partitions: int, config: Mapping[str, str] | None = None
) -> None:
    """Create missing compacted changelog topics (with ``config``, e.g. the topology's compaction
    settings); refuse one with another partition count."""
    existing = admin.list_topics(timeout=30).topics
    for topic in changelogs:
        meta = existing.get(topic)
        if meta is not None and meta.error is None:
            if len(meta.partitions) != partitions:
                raise ProcessorError(
                    f"Changelog {topic!r} has {len(meta.partitions)} partitions but the inputs have "
                    f"{partitions}; they must match."
                )
            continue
        try:
            topic_config = {**(config or {}), "cleanup.policy": "compact"}
            admin.create_topics([NewTopic(topic, partitions, config=topic_config)])[topic].result(30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
