"""A TCP proxy in front of a one-broker cluster that drops the connection of some requests
for the whole topic list, as a broker that stalls or restarts for a moment is met.

A request for the whole topic list is one an application makes (``list_topics()``):
librdkafka's own metadata refreshes ask for the topics it knows of, or for none. Every one
is cut while cutting is on (``cutting``), as a broker's blip drops them; librdkafka asks a
dropped request again itself, within some hundred ms, and those tries are cut too. The
cut request never reaches the broker; both sockets of its connection are closed.
Everything else is coordinator_refuser.py's proxy (it refuses nothing unless told to).
"""

from __future__ import annotations

import threading

from .coordinator_refuser import _FLEXIBLE_FROM, METADATA, CoordinatorRefuser, _Cursor


class ListingCutter(CoordinatorRefuser):
    """While ``cutting`` is set, every request for the whole topic list is cut; ``cut``
    counts those cut, ``listings`` every such request."""

    def __init__(self, upstream: str) -> None:
        self._cut_lock = threading.Lock()
        self.cutting = False
        self.cut = 0
        self.listings = 0
        super().__init__(upstream)

    def _cuts(self, api: int, version: int, cursor: _Cursor) -> bool:
        if api != METADATA:
            return False
        try:
            listing = _asks_every_topic(version, cursor)
        except IndexError as exc:
            self.misread.append(f"Metadata v{version} request: {exc}")
            return False
        if not listing:
            return False
        with self._cut_lock:
            self.listings += 1
            cutting = self.cutting
            self.cut += int(cutting)
        return cutting


def _asks_every_topic(version: int, cursor: _Cursor) -> bool:
    """Whether a Metadata request (``cursor`` after its correlation id) asks for every topic:
    a null topic array from v1 on; an empty one in v0, which has no null."""
    flexible = version >= _FLEXIBLE_FROM[METADATA]
    cursor.string(flexible=False)  # client id: never compact
    if flexible:
        cursor.skip_tags()
    topics = cursor.count(flexible)
    return topics == 0 if version == 0 else topics < 0
