"""What a handler knows about the record it is given."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class MessageContext:
    """Topic, partition, offset, key, headers and timestamp of one record.

    A plain slotted class rather than a frozen dataclass: one is built per record, and
    the frozen dataclass's ``__init__`` costs about twice as much.
    """

    __slots__ = ("topic", "partition", "offset", "key", "headers", "timestamp_ms")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]],
        timestamp_ms: int,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.headers = headers
        self.timestamp_ms = timestamp_ms

    def __repr__(self) -> str:
        return f"MessageContext({self.where})"

    @property
    def where(self) -> str:
        """``topic[partition]@offset``: the form every per-message log line uses."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def key_str(self) -> str:
        return self.key.decode("utf-8", "replace") if self.key is not None else ""

    def header(self, name: str) -> bytes | None:
        for header_name, value in self.headers:
            if header_name == name:
                return value
        return None


# The record being handled; spawned work inherits it (tables read its partition).
current_context: ContextVar[MessageContext] = ContextVar("agentstream_context")


@contextmanager
def in_partition(topic: str, partition: int) -> Iterator[None]:
    """Work of an assigned partition outside any record's handling (an assignment hook):
    tables read and write ``partition``'s stores meanwhile, as in a handler of ``topic``."""
    token = current_context.set(MessageContext(topic, partition, -1, None, (), 0))
    try:
        yield
    finally:
        current_context.reset(token)
