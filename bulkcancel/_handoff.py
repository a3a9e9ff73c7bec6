"""A zero-buffer hand-off of jobs from one planner to idle workers."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Handoff"]

_T = TypeVar("_T")


class Handoff(Generic[_T]):
    """The planner hands each job to an idle worker, waiting while none is idle: a zero-buffer
    memory stream without anyio's checkpoints and ``WouldBlock`` round trips (a job per
    operation is the hot path of a GET run). Plain asyncio futures, as the client's slots are:
    the engine runs on anyio's asyncio backend only, where a cancelled worker's future is
    cancelled with it and skipped here. A worker cancelled after it was handed a job drops it;
    that happens only when the whole run is cancelled, and what is unsettled is then settled
    from the last observation."""

    def __init__(self) -> None:
        self._idle: deque[asyncio.Future[_T | None]] = deque()
        self._room: asyncio.Future[None] | None = None  # the planner, waiting for a worker
        self._closed = False

    async def put(self, job: _T) -> None:
        while True:
            idle = self._idle
            while idle:
                worker = idle.popleft()
                if not worker.done():  # else cancelled while it waited
                    worker.set_result(job)
                    return
            self._room = room = asyncio.get_running_loop().create_future()
            try:
                await room
            finally:
                self._room = None

    async def get(self) -> _T | None:
        """The next job; None once the planner has closed the hand-off."""
        if self._closed:
            return None
        worker: asyncio.Future[_T | None] = asyncio.get_running_loop().create_future()
        self._idle.append(worker)
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)
        return await worker

    def close(self) -> None:
        self._closed = True
        for worker in self._idle:
            if not worker.done():
                worker.set_result(None)
        self._idle.clear()
