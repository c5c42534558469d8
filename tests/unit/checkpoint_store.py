"""One partition of a specialist's ``checkpoints`` table in memory, for the unit tests of
the approval desk and the lifecycle: the reads they make (``scan``, ``get``) and a JSON
``put`` that stands for a persisted write."""

from __future__ import annotations

import json
from typing import Any


class MemoryPartition:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v in sorted(self.data.items()) if k.startswith(prefix)]

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> None:
        """Write ``value`` as JSON; None deletes (a tombstone)."""
        if value is None:
            self.data.pop(key.encode(), None)
        else:
            self.data[key.encode()] = json.dumps(value).encode()

    def value(self, key: str) -> Any:
        return json.loads(self.data[key.encode()])
