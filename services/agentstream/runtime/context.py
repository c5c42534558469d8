"""What a handler knows about the record it is given."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MessageContext:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

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
