"""With no write-ahead log, a store's writes reach disk when its memtable is flushed; the
processor asks every store it holds to flush once its oldest unflushed write is old
(runtime/store.py ``MAX_UNFLUSHED_S``), after each checkpoint, so a start after a kill -9
never replays from an offset older than the changelog's tombstones reach back."""

from __future__ import annotations

from agentstream.runtime.processor import Processor


class _Store:
    def __init__(self) -> None:
        self.asked: list[float | None] = []

    def flush_if_older(self, age_s: float | None = None, now: float | None = None) -> bool:
        self.asked.append(now)
        return False


class _Table:
    def __init__(self, *stores: _Store) -> None:
        self.stores = dict(enumerate(stores))


def test_every_store_of_every_table_is_asked_with_one_reading_of_the_clock() -> None:
    processor = Processor("flush", "localhost:9", "flush", "unused-state-dir")  # no I/O until run()
    stores = [_Store() for _ in range(3)]
    processor.tables = {"dedupe": _Table(stores[0], stores[1]), "sessions": _Table(stores[2])}  # type: ignore[dict-item]
    processor._flush_old_memtables()
    assert all(len(store.asked) == 1 for store in stores)
    assert len({store.asked[0] for store in stores}) == 1 and stores[0].asked[0] is not None
