"""A fetched record as ``Processor._handle`` reads it (confluent_kafka's Message), or a
partition's end (the partition-EOF event), for tests that drive a processor without I/O."""

from __future__ import annotations

from confluent_kafka import KafkaError


class FetchedRecord:
    def __init__(self, topic: str, offset: int, *, partition: int = 0, value: bytes = b"v",
                 headers: list[tuple[str, bytes]] | None = None, timestamp_ms: int = 0, end: bool = False) -> None:
        self._topic, self._offset, self._partition = topic, offset, partition
        self._value, self._headers, self._timestamp_ms, self._end = value, headers, timestamp_ms, end

    def error(self) -> KafkaError | None:
        return KafkaError(KafkaError._PARTITION_EOF) if self._end else None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)
