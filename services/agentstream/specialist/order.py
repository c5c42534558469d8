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

    @staticmethod
    async def wait(previous: asyncio.Future[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
