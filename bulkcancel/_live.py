"""What the live display reads while a run goes on, and the names files it reads from.

Kept beside the application (``_app``) rather than in it: the snapshot is the one piece that
runs on another thread (rich's refresh thread), so it reads counters and nothing else.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from bulkcancel import _ui
from bulkcancel._inputs import NameInput, aiter_inputs
from bulkcancel._logging import event
from bulkcancel._report import ReportWriter
from bulkcancel._run import BulkRun

__all__ = ["Progress", "RunStatus", "read_names_files"]


class RunStatus(Protocol):
    """What the application knows that the run does not: signals heard, targets counted."""

    @property
    def signals(self) -> list[int]: ...

    @property
    def count(self) -> int | None: ...


#: Rate and throttling are measured over this many recent seconds (at least: since the last
#: snapshot this long ago, when snapshots are further apart, as a log's progress lines are).
_WINDOW = 5.0


class Progress:
    """Builds the live display's :class:`_ui.ProgressSnapshot` from the run's own counters.

    Called by rich from its refresh thread: it only reads counters (and keeps a few recent
    samples, under a lock, for the request rate). ``accepted`` counts cancels the server
    accepted (the run's client counts them as they are answered); ``throttling`` means a
    throttle answer (429) arrived within the last few seconds (since the snapshot before,
    when snapshots are further apart: a log's progress lines).
    """

    def __init__(
        self,
        run: BulkRun,
        writer: ReportWriter,
        state: RunStatus,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._writer = writer
        self._state = state
        self._clock = clock
        stats = run.client.stats  # (from the start: a log's first line has a rate too)
        self._samples = deque([(clock(), stats.total, stats.throttled)])
        self._lock = threading.Lock()

    def _phase(self) -> _ui.Phase:
        run, state = self._run, self._state
        if state.signals:
            return _ui.Phase.STOPPING
        if state.count is None or run.config.dry_run:
            return _ui.Phase.LISTING
        drained = run.drain.status if run.drain is not None else None
        watching = drained is not None and drained.quiet_since is not None and not drained.ended
        if watching and run.cancels.in_flight == 0:
            return _ui.Phase.WATCHING
        if run.all_taken and run.cancels.in_flight == 0:
            return _ui.Phase.RECONCILING
        return _ui.Phase.CANCELLING

    def _recent(self) -> tuple[float, bool]:
        """The request rate and whether a throttle came, since the latest sample at least
        ``_WINDOW`` old (or the oldest). Keeping that one sample matters where snapshots are
        far apart: with only the samples of the last five seconds, a progress line every 30 s
        measured over no time at all, said 0 req/s and never saw a throttle."""
        stats = self._run.client.stats
        now, total, throttled = self._clock(), stats.total, stats.throttled
        with self._lock:
            samples = self._samples
            samples.append((now, total, throttled))
            while len(samples) > 1 and now - samples[1][0] >= _WINDOW:
                samples.popleft()
            then, total_then, throttled_then = samples[0]
        rate = (total - total_then) / (now - then) if now - then >= 0.5 else 0.0
        return rate, throttled > throttled_then

    def __call__(self) -> _ui.ProgressSnapshot:
        run = self._run
        rate, throttling = self._recent()
        stats = run.resolver.stats if run.resolver is not None else None
        total = self._state.count
        quiet_for = until_quiet = None
        drain = run.drain
        if drain is not None:
            drained = drain.status
            until_quiet = drained.until_quiet
            if total is not None:
                total += drained.appeared
            if drained.quiet_since is not None and drained.ended is None:
                # The drain's clock is the loop's: time.monotonic on asyncio, as is ours.
                quiet_for = max(0.0, self._clock() - drained.quiet_since)
        return _ui.ProgressSnapshot(
            phase=self._phase(),
            total=total,
            quiet_for=quiet_for,
            until_quiet=until_quiet,
            listed=stats.given + stats.listed if stats is not None else 0,
            sent=run.cancels.answered,
            accepted=run.cancels.accepted,
            settled=self._writer.count,
            rate=rate,
            throttled=run.client.stats.throttled,
            throttling=throttling,
            dry_run=run.config.dry_run,
            totals=dict(self._writer.totals),
        )


async def read_names_files(paths: Sequence[str]) -> AsyncIterator[NameInput]:
    """Every input of each names file in turn (``-`` is stdin), read without blocking the loop:
    a Ctrl-C while stdin is still open is handled at once."""
    for path in paths:
        if path == "-":
            event("reading names from stdin")
        async for item in aiter_inputs(path):
            yield item
