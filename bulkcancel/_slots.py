"""What the client's calls wait in: the in-flight slots, and the cancel scopes a stop of the
cancels ends."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

import anyio

__all__ = ["CancelWait", "Slots"]


class Slots:
    """The in-flight slots: a counting semaphore whose free slot is taken without an await.

    Not anyio's (it yields to the loop twice per acquire, a cancel checkpoint and a shielded
    one, even when a slot is free: ~10% of a fast run), nor asyncio's (two coroutines per
    ``async with`` even then). A slot given back goes straight to the longest waiter (FIFO).
    Plain asyncio futures: the engine runs on anyio's asyncio backend only, where a cancelled
    task's future is cancelled with it."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        """A free slot, if there is one and nobody waits for it before us."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot (after ``take_now`` found none)."""
        if self.take_now():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot, then cancelled before using it: pass it on
            raise

    def give(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # (else cancelled while it waited)
                waiter.set_result(None)
                return
        self._free += 1


class CancelWait:
    """A cancel scope registered in ``waits`` while it is entered: ``stop_cancels`` cancels
    what is there. A class, not a ``@contextmanager`` generator: one per cancel call."""

    __slots__ = ("_scope", "_waits")

    def __init__(self, waits: set[anyio.CancelScope]) -> None:
        self._waits = waits
        self._scope = anyio.CancelScope()

    def __enter__(self) -> None:
        self._waits.add(self._scope.__enter__())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._waits.discard(self._scope)
        return self._scope.__exit__(exc_type, exc, tb)
