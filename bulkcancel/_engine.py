"""The run: targets -> per-quota-key cancel queues -> reconciler -> emit, under one task group.

Shape of the data flow:

    targets ──> a queue per quota key ──> up to ``concurrency`` cancel workers per key
                                                          │ accepted / refused-but-maybe-running
                                                          v
                              reconciler (``_reconciler.Reconciler``, this class's base):
                              a heap of operations by next poll time; GETs or sweeps
                                  v
                               emit(result)  (journal outcome, report, progress)

The input is read ahead of the cancels up to ``max_pending`` operations between "taken" and
"settled" (then it waits, woken by the reconciler). Each quota key has its own queue and
workers, so a key waiting for its pacer holds no worker another key could use; the client's
slots bound what is in flight. The input may be an async iterable (a drain's re-listings).

Stops keep their promises: after ``stop()`` no new cancel attempt starts; accepted cancels are
reconciled until the grace ends, and then settled from what was last seen, with no further
call. Per-operation failures are results; a journal that cannot write stops the run the same
graceful way (``StopReason.JOURNAL_FAILED``) and ``run`` still returns every result.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._classify import classify, done_outcome, needs_get
from bulkcancel._client import OperationsClient
from bulkcancel._engine_options import EngineOptions, EngineStats, ReconcileMode
from bulkcancel._errors import RecordingError
from bulkcancel._models import OperationResult, Outcome, StopReason, Target
from bulkcancel._names import parent_of, quota_key
from bulkcancel._reconciler import SENT, TAKEN, Reconciler

__all__ = ["Emit", "Engine", "EngineOptions", "EngineStats", "JournalSink", "ReconcileMode"]


class JournalSink(Protocol):
    """Where progress is recorded. Any method may raise ``JournalError`` (a ``RecordingError``):
    the engine then stops with ``StopReason.JOURNAL_FAILED`` and calls the journal no more."""

    async def intent(self, name: str) -> None: ...
    def answer(
        self, name: str, accepted: bool, detail: Mapping[str, object] | None = None
    ) -> None: ...
    def outcome(self, result: OperationResult) -> None: ...


Emit = Callable[[OperationResult], Awaitable[None]]


class Engine(Reconciler):
    """One bulk cancel. Not reusable: build one per run, inside the event loop."""

    def __init__(
        self,
        client: OperationsClient,
        options: EngineOptions | None = None,
        *,
        journal: JournalSink | None = None,
        clock: Callable[[], float] = time.monotonic,  # asyncio's clock; anyio's costs ~1µs more
    ) -> None:
        super().__init__(client, options or EngineOptions(), clock)
        self._journal = journal
        #: Why the run stopped early, or None.
        self.stop_reason: StopReason | None = None
        self._stopped = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._emit: Emit | None = None
        #: the input: a plain iterator is read to its end even after a stop (each remaining
        #: target reported ``not_attempted``); an async one is not read past a stop
        self._targets: Iterator[Target] = iter(())
        self._feed: AsyncIterable[Target] | None = None
        #: taken from the input and waiting for room (backpressure)
        self._held: Target | None = None
        #: cancels not started yet, per quota key; how many workers each key has
        self._queues: dict[str, deque[Target]] = {}
        self._workers: dict[str, int] = {}
        self._queued = 0
        self._pool: anyio.abc.TaskGroup | None = None
        self._room = anyio.Event()  # set when the input may go on (see _release)

    # -- control ---------------------------------------------------------------------------

    def stop(self, reason: StopReason = StopReason.INTERRUPTED) -> None:
        """Graceful: start no new cancel attempt (retries included), reconcile accepted cancels
        for the grace period, then settle the rest from what was last seen."""
        if self._stopping:
            return
        self._stopping = True
        self.stop_reason = reason
        self._clip = self._clock() + self._opt.grace
        self._stop_cancels()
        self._stopped.set()
        self._wake.set()
        self._room.set()

    def abort(self) -> None:
        """Hard: stop at once. Everything unsettled is still reported."""
        self.stop()
        self._client.stop()
        if self._scope is not None:
            self._scope.cancel()

    def _stop_cancels(self) -> None:
        # No new cancel, retries included, while GETs go on: the grace reads back what was
        # accepted. When the grace ends, ``client.stop()`` refuses everything.
        self._client.stop_cancels()

    # -- the run ---------------------------------------------------------------------------

    async def run(self, targets: Iterable[Target] | AsyncIterable[Target], emit: Emit) -> None:
        """Cancel and reconcile every target; ``emit`` gets each one's result exactly once.

        ``targets`` may be an async iterable (a drain feeding what re-listings find): it is read
        with ``async for``, its end is the end of input, and a stop ends the reading there —
        every target taken from it is reported, nothing more is asked of it."""
        self._emit = emit
        if isinstance(targets, AsyncIterable):
            self._feed = targets
        else:
            self._targets = iter(targets)
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as watch:
                    watch.start_soon(self._watch_grace)
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._reconciler)
                        async with anyio.create_task_group() as self._pool:
                            self._pool.start_soon(self._produce)
                        # (Each parent was readied as its last cancel was answered.)
                        self._cancels_done = True
                        self._wake.set()
                    watch.cancel_scope.cancel()  # all settled: no grace to watch
        except Exception:
            # A failure ends the run (credentials that cannot be refreshed, say): the caller
            # reports what the engine took as possibly sent. Cancels still queued were never
            # sent: say so first. The input is read ahead of the cancels, so there can be many.
            self._client.stop()
            with anyio.CancelScope(shield=True):
                for name, sent in list(self._in_cancel.items()):
                    if not sent:
                        del self._in_cancel[name]
                        self._answer_counted(name)
                        await self._not_attempted(name)
            raise
        # Aborted, grace over, or done: anything not settled is reported now, outside the scope.
        self._client.stop()
        await self._settle_leftovers()

    async def _produce(self) -> None:
        if self._feed is not None:
            async for target in self._feed:
                await self._take(target)
                if self._stopping:
                    break  # a stop ends the reading: what was taken is reported
        else:
            for target in self._targets:
                await self._take(target)
        self._input_done = True
        for key in list(self._parents):
            if key not in self._unanswered:
                self._parent_answered(key)

    async def _take(self, target: Target) -> None:
        """One target from the input: passed on, reported, or handed to the cancel pool."""
        if target.result is not None:
            await self._pass_on(target.result)
            return
        if self._client.fatal is not None and not self._stopping:
            self.stop(self._client.fatal)
        if self._stopping:
            await self._not_attempted(target.name)
            return
        if target.listed is not None:
            finished = done_outcome(target.listed)
            if finished is not None:
                details = finished.details | {"found_done": True}
                await self._finish(target.name, finished.outcome, details)
                return
        # Held where an abort finds it before any wait: nothing taken is ever lost.
        self._held = target
        while len(self._pending) + len(self._in_cancel) >= self._opt.max_pending:
            if self._stopping:
                break
            # Backpressure: the reconciler is behind. _release wakes us.
            self._room = anyio.Event()
            await self._room.wait()
        self._held = None
        if self._stopping:
            await self._not_attempted(target.name)
            return
        if target.accepted_before:
            self._schedule(target.name, None, accepted=True, calls=0)
            return
        self._in_cancel[target.name] = TAKEN
        key = parent_of(target.name)
        self._unanswered[key] = self._unanswered.get(key, 0) + 1
        await self._queue_cancel(target)

    async def _queue_cancel(self, target: Target) -> None:
        """Queue the cancel by quota key; each key gets up to ``concurrency`` workers of its own.

        One pool taking targets in input order would let a throttled key's backlog occupy every
        worker (each waiting for that key's pacer) while a free key waits behind it. With a
        queue and a worker cap per key, a waiting key holds only its own workers; the client's
        slots still bound what is in flight, whichever keys hold them."""
        key = quota_key(target.name)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(target)
        workers = self._workers.get(key, 0)
        if workers < self._opt.concurrency:
            self._workers[key] = workers + 1
            assert self._pool is not None
            self._pool.start_soon(self._cancel_worker, key, queue)
        self._queued += 1
        if self._queued % self._opt.concurrency == 0:
            # The input is read ahead of the workers (up to max_pending): let them run now
            # and then, so a long input does not hold the loop.
            await anyio.lowlevel.checkpoint()

    async def _cancel_worker(self, key: str, queue: deque[Target]) -> None:
        try:
            while queue:
                await self._cancel(queue.popleft())
        finally:
            # Done with this key for now: a target queued later starts a new worker.
            self._workers[key] -= 1
            if not self._workers[key]:
                del self._workers[key]
                if not queue:
                    self._queues.pop(key, None)

    async def _cancel(self, target: Target) -> None:
        name = target.name
        if self._stopping or not await self._record_intent(name):
            del self._in_cancel[name]
            self._answer_counted(name)
            self._release()
            await self._not_attempted(name)
            return
        self._in_cancel[name] = SENT
        started = self._clock()
        answer = await self._client.cancel(name)
        self._costs.record_cancel(self._clock() - started)
        del self._in_cancel[name]
        if self._client.fatal is not None and not self._stopping:
            self.stop(self._client.fatal)  # a doomed run stops within one answer
        if answer.kind is AnswerKind.STOPPED:
            # Never sent (or a retry never sent): the journal keeps it unanswered, so a
            # rerun sends it again.
            self._answer_counted(name)
            self._release()
            await self._not_attempted(name, cancel_in_flight=answer.attempts > 0)
            return
        self._record_answer(name, answer)
        if needs_get(answer):
            self._schedule(name, answer, accepted=answer.ok, calls=answer.attempts)
            self._answer_counted(name)  # after it joined its parent (which it may create)
        else:
            self._answer_counted(name)
            self._release()
            verdict = classify(answer, None, accepted=False)
            await self._finish(name, verdict.outcome, verdict.details, answer.attempts)

    def _answer_counted(self, name: str) -> None:
        """A cancel taken from the input is answered (or will never be sent). The last one of
        a parent, once the input is done, tells the reconciler nothing more joins it."""
        key = parent_of(name)
        left = self._unanswered[key] - 1
        if left:
            self._unanswered[key] = left
            return
        del self._unanswered[key]
        if self._input_done:
            self._parent_answered(key)

    def _release(self) -> None:
        """Wake the waiting input once the reconciler has caught up to half the bound (so it
        takes a batch at a time, not one target per settle)."""
        if len(self._pending) + len(self._in_cancel) <= self._opt.max_pending // 2:
            self._room.set()

    # -- journal ---------------------------------------------------------------------------

    async def _record_intent(self, name: str) -> bool:
        """True when the cancel may be sent: the journal (if any) holds the intent."""
        if self._journal is None:
            return not self._stopping
        try:
            await self._journal.intent(name)
        except (RecordingError, OSError):
            self._journal_failed()
            return False
        return True

    def _record_answer(self, name: str, answer: Answer) -> None:
        if self._journal is not None:
            try:
                self._journal.answer(name, answer.ok, None if answer.ok else answer.summary())
            except (RecordingError, OSError):
                self._journal_failed()

    def _journal_failed(self) -> None:
        # Progress can no longer be recorded: send nothing more, settle what was sent, and
        # report it all. The journal is not called again (it may end in a torn line).
        self._journal = None
        self.stop(StopReason.JOURNAL_FAILED)
        self.stop_reason = StopReason.JOURNAL_FAILED  # it decides the exit code over a signal

    async def _watch_grace(self) -> None:
        """Ends the run when the grace is over, whatever the workers are waiting for (a
        server that never answers, the pacer): the grace is a bound."""
        await self._stopped.wait()
        await anyio.sleep(max(0.0, self._clip - self._clock()))
        self._end_grace()

    def _end_grace(self) -> None:
        """The grace is a bound: no more calls; what is unsettled is settled from the last
        observation by ``_settle_leftovers`` once the run's scope is cancelled."""
        self._client.stop()
        if self._scope is not None:
            self._scope.cancel()

    # -- settling --------------------------------------------------------------------------

    async def _not_attempted(self, name: str, **extra: Any) -> None:
        reason = self.stop_reason.value if self.stop_reason else "not attempted"
        details: dict[str, Any] = {"reason": reason, **extra}
        await self._finish(name, Outcome.NOT_ATTEMPTED, details)

    async def _pass_on(self, result: OperationResult) -> None:
        assert self._emit is not None
        await self._emit(result)

    async def _finish(
        self, name: str, outcome: Outcome, details: dict[str, Any], calls: int = 0
    ) -> None:
        if calls:
            details["requests"] = calls
        result = OperationResult(name, outcome, details)
        if self._journal is not None:
            try:
                self._journal.outcome(result)
            except (RecordingError, OSError):
                self._journal_failed()
        assert self._emit is not None
        await self._emit(result)

    async def _settle_leftovers(self) -> None:
        held, self._held = self._held, None
        if held is not None and held.accepted_before:
            # Accepted in an earlier run and not reconciled in this one.
            verdict = classify(None, None, accepted=True)
            verdict.details.update(resumed=True, interrupted=True)
            await self._finish(held.name, verdict.outcome, verdict.details)
        elif held is not None:
            await self._not_attempted(held.name)
        for name, sent in list(self._in_cancel.items()):
            del self._in_cancel[name]
            self._answer_counted(name)
            if sent:  # the server may have seen it; a rerun with the journal sends it again
                await self._not_attempted(name, cancel_in_flight=True)
            else:
                await self._not_attempted(name)
        for pending in list(self._pending.values()):
            if not pending.settled:
                verdict = classify(pending.cancel, pending.last_get, accepted=pending.accepted)
                verdict.details["interrupted"] = True
                await self._settle(pending, verdict)
        for target in self._targets:
            if target.result is not None:
                await self._pass_on(target.result)
            else:
                await self._not_attempted(target.name)
