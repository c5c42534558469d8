"""One task at a time per session, in arrival order, without holding up other sessions."""

from __future__ import annotations

import asyncio


class SessionOrder:
    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Future[None]] = {}

    def enter(self, session: str) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """Take the next place of ``session``: (the turn to wait for, our own turn)."""
        previous = self._tails.get(session)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[session] = mine
        return previous, mine

    def leave(self, session: str, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self._tails.get(session) is mine:
            del self._tails[session]

    def has_places(self, session: str) -> bool:
        """Whether some task of ``session`` holds a place here."""
        return session in self._tails

    def followed(self, session: str, mine: asyncio.Future[None]) -> bool:
        """Whether a later task of ``session`` waits behind the place ``mine``."""
        return session in self._tails and self._tails[session] is not mine

    @staticmethod
    async def wait(previous: asyncio.Future[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])


class SessionPlaces:
    """The session order of one worker, plus the places of tasks away in a retry tier or
    waiting for a decision.

    A task that goes to a retry tier keeps its place: the session's later tasks wait for
    it, and its retry takes the place over when it comes back (or the place is restored
    from its checkpoint record after a rebalance). A task waiting for a decision keeps it
    only while a later task waits behind it (specialist/lifecycle.py ``_place``).
    """

    def __init__(self) -> None:
        self._order = SessionOrder()
        self._kept: dict[str, asyncio.Future[None]] = {}  # task in a retry tier -> its place

    def take(self, task_id: str, session: str) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """The place of an arriving task: the one it kept in a retry tier (nothing to
        wait for: the session was waiting for it), else the next place of ``session``."""
        kept = self._kept.pop(task_id, None)
        return (None, kept) if kept is not None else self._order.enter(session)

    def enter(self, session: str) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        return self._order.enter(session)

    def keep(self, task_id: str, mine: asyncio.Future[None]) -> None:
        """The task went to a retry tier: the session's later tasks wait for its return."""
        self._kept[task_id] = mine

    def restore(self, task_id: str, session: str) -> None:
        """Hold a place for ``task_id``, away in a retry tier since before this worker
        owned the partition, or waiting for a decision."""
        self._kept[task_id] = self._order.enter(session)[1]

    def holds(self, task_id: str) -> bool:
        return task_id in self._kept

    def has_places(self, session: str) -> bool:
        return self._order.has_places(session)

    def followed(self, session: str, mine: asyncio.Future[None]) -> bool:
        return self._order.followed(session, mine)

    def leave(self, session: str, mine: asyncio.Future[None]) -> None:
        self._order.leave(session, mine)
