"""Tables: named key/value state of a processor, one RocksDB store per assigned partition.

Inside a handler a table reads and writes the store of the partition the record came
from (like a faust table), so all of a session's state sits next to its events.
Values are JSON by default (agentstream.jsoncodec); pass ``dumps``/``loads`` for another encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from agentstream import jsoncodec
from agentstream.runtime.context import current_context
from agentstream.runtime.errors import ProcessorError
from agentstream.runtime.store import PartitionStore

_MISSING = object()
class Table:
    def __init__(
        self,
        name: str,
        changelog_topic: str,
        dumps: Callable[[Any], bytes] = jsoncodec.dumps,
        loads: Callable[[bytes], Any] = jsoncodec.loads,
    ) -> None:
        self.name = name
        self.changelog_topic = changelog_topic
        self._dumps = dumps
        self._loads = loads
        self.stores: dict[int, PartitionStore] = {}

    def _store(self) -> PartitionStore:
        try:
            partition = current_context.get().partition
        except LookupError:
            raise ProcessorError(
                f"Table {self.name!r} was used outside a handler; use table.partition(p) there."
            ) from None
        return self.partition(partition)

    def partition(self, partition: int) -> PartitionStore:
        try:
            return self.stores[partition]
        except KeyError:
            raise ProcessorError(
                f"Table {self.name!r} has no store for partition {partition}: "
                f"it is not assigned to this worker (assigned: {sorted(self.stores)})."
            ) from None

    @staticmethod
    def _key(key: str | bytes) -> bytes:
        return key.encode() if isinstance(key, str) else key

    def encode_key(self, key: str | bytes) -> bytes:
        return self._key(key)

    def encode_value(self, value: Any) -> bytes:
        return self._dumps(value)

    def decode_value(self, raw: bytes) -> Any:
        return self._loads(raw)

    def get(self, key: str | bytes, default: Any = None) -> Any:
        found = self._store().get_value(self._key(key), self._loads)
        return default if found is None else found

    def __getitem__(self, key: str | bytes) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str | bytes, value: Any) -> None:
        # The value is kept as is until the checkpoint serialises it (once per key per
        # commit interval): assign a new value rather than mutating a stored one.
        self._store().put_value(self._key(key), value, self._dumps)

    def __delitem__(self, key: str | bytes) -> None:
        self._store().delete(self._key(key))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, bytes)):
            return False
        return self._store().get_value(self._key(key), self._loads) is not None

    def items_of(self, partition: int) -> Iterator[tuple[str, Any]]:
        for key, raw in self.partition(partition).items():
            yield key.decode("utf-8", "replace"), self._loads(raw)
