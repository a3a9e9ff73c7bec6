"""The run: targets -> cancel pool -> reconciler -> emit, under one anyio task group.

Shape of the data flow (each arrow a bounded hand-off, so a slow stage slows the one before it):

    targets ──> memory stream (size = concurrency) ──> N cancel workers
                                                          │ accepted / refused-but-maybe-running
                                                          v
                              reconciler: a heap of operations by next poll time
                                  │ due: per-operation GET, or a sweep of a parent's listing
                                  v
                               emit(result)  (journal outcome, report, progress)

Sweeps start while cancels are still going out and settle operations page by page; a sweep that
reaches the cancels still on the wire pauses there and resumes from the same page later (see
``_reconcile.Parent``). GET or list is chosen per parent by measured cost (``prefer_list``).

Stops keep their promises: after ``stop()`` no new cancel attempt starts; accepted cancels are
reconciled until the grace ends, and then settled from what was last seen, with no further
call. Per-operation failures are results; a journal that cannot write stops the run the same
graceful way (``StopReason.JOURNAL_FAILED``) and ``run`` still returns every result.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._classify import Verdict, classify, done_outcome, is_done, malformed, needs_get
from bulkcancel._client import OperationsClient
from bulkcancel._errors import RecordingError
from bulkcancel._models import OperationResult, Outcome, StopReason, Target
from bulkcancel._names import parent_of
from bulkcancel._reconcile import Costs, Parent, Pending, prefer_list


class ReconcileMode(StrEnum):
    GET = "get"  # one GET per operation per poll
    LIST = "list"  # sweeps of each parent's listing settle a page of operations per call
    AUTO = "auto"  # per parent, whichever costs less (calls when the rate binds, else time)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    concurrency: int = 32
    deadline: float = 120.0
    poll_initial: float = 0.5
    poll_factor: float = 1.5
    poll_max: float = 10.0
    reconcile: ReconcileMode = ReconcileMode.AUTO
    #: auto mode lists a parent when at least this many of its operations await reconciliation.
    list_threshold: int = 8
    list_page_size: int = 500
    #: after a complete pass over a parent's listing, the next pass starts no sooner than this.
    sweep_gap: float = 1.0
    #: most pages one sweep fetches; past it the sweep ends and the parent goes to GET.
    sweep_page_budget: int = 2_000
    #: after a graceful stop, how long accepted cancels are still reconciled.
    grace: float = 5.0
    #: at most this many operations between "taken from the input" and "settled": the input
    #: waits for the reconciler beyond it, so memory stays flat however long the input.
    max_pending: int = 20_000

    def __post_init__(self) -> None:
        # A zero poll interval would let the reconciler go round without ever waiting.
        positive = {"poll_initial": self.poll_initial, "poll_max": self.poll_max}
        for label, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be a positive number of seconds, not {value!r}")
        if not self.poll_factor >= 1:
            raise ValueError(f"poll_factor must be at least 1, not {self.poll_factor!r}")
        for label, value in {"deadline": self.deadline, "grace": self.grace}.items():
            if not value >= 0:
                raise ValueError(f"{label} must not be negative, not {value!r}")
        counts = {
            "concurrency": self.concurrency,
            "max_pending": self.max_pending,
            "sweep_page_budget": self.sweep_page_budget,
            "list_threshold": self.list_threshold,
        }
        for label, count in counts.items():
            if count < 1:
                raise ValueError(f"{label} must be at least 1, not {count!r}")
        if self.list_page_size < 0 or self.sweep_gap < 0:
            raise ValueError("list_page_size and sweep_gap must not be negative")


class JournalSink(Protocol):
    """Where progress is recorded. Any method may raise ``JournalError`` (a ``RecordingError``):
    the engine then stops with ``StopReason.JOURNAL_FAILED`` and calls the journal no more."""

    async def intent(self, name: str) -> None: ...
    def answer(
        self, name: str, accepted: bool, detail: Mapping[str, object] | None = None
    ) -> None: ...
    def outcome(self, result: OperationResult) -> None: ...


Emit = Callable[[OperationResult], Awaitable[None]]


@dataclass(eq=False, slots=True)
class _Sweep:
    parent: Parent
    due: list[Pending]


@dataclass(slots=True)
class EngineStats:
    sweeps: int = 0
    sweep_pages: int = 0
    #: every operation a listing settled
    settled_by_list: int = 0
    list_disabled: list[str] = field(default_factory=list)


_TAKEN, _SENT = False, True  # values of Engine._in_cancel


class Engine:
    """One bulk cancel. Not reusable: build one per run, inside the event loop."""

    def __init__(
        self,
        client: OperationsClient,
        options: EngineOptions | None = None,
        *,
        journal: JournalSink | None = None,
        clock: Callable[[], float] = time.monotonic,  # asyncio's clock; anyio's costs ~1µs more
    ) -> None:
        self._client = client
        self._opt = options or EngineOptions()
        self._journal = journal
        self._clock = clock
        self.stats = EngineStats()
        #: Why the run stopped early, or None.
        self.stop_reason: StopReason | None = None
        self._stopping = False
        self._stopped = anyio.Event()
        self._clip = math.inf  # after a graceful stop: reconcile no later than this
        self._scope: anyio.CancelScope | None = None
        self._emit: Emit | None = None
        self._targets: Iterator[Target] = iter(())
        #: an async input (a drain's re-listings); a stop stops consuming it
        self._async_targets: AsyncIterator[Target] | None = None
        self._input_wait: anyio.CancelScope | None = None
        #: Handed to the cancel pool, not yet answered: name -> whether its cancel was sent.
        self._in_cancel: dict[str, bool] = {}
        #: taken from the input and waiting for room (backpressure)
        self._held: Target | None = None
        self._pending: dict[str, Pending] = {}
        self._parents: dict[str, Parent] = {}
        self._heap: list[tuple[float, int, Pending]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self._room = anyio.Event()  # set when the input may go on (see _release)
        #: when the sleeping reconciler will wake by itself (-inf while it is awake)
        self._wake_at = -math.inf
        #: parents whose sweep should (re)start now, not at the next due time
        self._ready: set[str] = set()
        self._input_done = False
        self._cancels_done = False
        self._reconciling = 0
        self._costs = Costs()
        self._rate_window = (0.0, 0)  # (when, client requests then): the rate actually reached
        self._rate_binds = False

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
        if self._input_wait is not None:
            self._input_wait.cancel()  # an async input waiting for more: stop consuming it
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
        """Work through ``targets``; an async iterable is consumed with ``async for`` (its end
        is the end of input) and a stop stops consuming it."""
        self._emit = emit
        if isinstance(targets, AsyncIterable):
            self._async_targets = aiter(targets)
        else:
            self._targets = iter(targets)
        send, receive = anyio.create_memory_object_stream[Target](self._opt.concurrency)
        with anyio.CancelScope() as self._scope:
            async with anyio.create_task_group() as watch:
                watch.start_soon(self._watch_grace)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._reconciler)
                    async with anyio.create_task_group() as pool:
                        pool.start_soon(self._produce, send)
                        for _ in range(self._opt.concurrency):
                            pool.start_soon(self._cancel_worker, receive.clone())
                        receive.close()
                    self._cancels_done = True
                    self._ready.update(self._parents)  # nothing more joins: sweep what is left
                    self._wake.set()
                watch.cancel_scope.cancel()  # all settled: no grace to watch
        # Aborted, grace over, or done: anything not settled is reported now, outside the scope.
        self._client.stop()
        await self._settle_leftovers()

    async def _produce(self, send: MemoryObjectSendStream[Target]) -> None:
        async with send:
            async for target in self._inputs():
                if target.result is not None:
                    await self._pass_on(target.result)
                    continue
                if self._client.fatal is not None and not self._stopping:
                    self.stop(self._client.fatal)
                if self._stopping:
                    await self._not_attempted(target.name)
                    continue
                if target.listed is not None:
                    finished = done_outcome(target.listed)
                    if finished is not None:
                        await self._finish(
                            target.name, finished.outcome, finished.details | {"found_done": True}
                        )
                        continue
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
                    continue
                if target.accepted_before:
                    self._schedule(target.name, None, accepted=True, calls=0)
                    continue
                self._in_cancel[target.name] = _TAKEN
                await _put(send, target)
            self._input_done = True

    async def _inputs(self) -> AsyncIterator[Target]:
        for target in self._targets:
            yield target
        source = self._async_targets
        while source is not None and not self._stopping:
            taken: Target | None = None
            with anyio.CancelScope() as self._input_wait:
                try:
                    taken = await anext(source)
                except StopAsyncIteration:
                    break
            self._input_wait = None
            if taken is None:  # a stop cancelled the wait: nothing was taken
                break
            yield taken  # reported like any other target: not_attempted if stopping

    async def _cancel_worker(self, receive: MemoryObjectReceiveStream[Target]) -> None:
        async with receive:
            async for target in _drain(receive):
                name = target.name
                if self._stopping or not await self._record_intent(name):
                    del self._in_cancel[name]
                    self._release()
                    await self._not_attempted(name)
                    continue
                self._in_cancel[name] = _SENT
                answer = await self._client.cancel(name)
                del self._in_cancel[name]
                if self._client.fatal is not None and not self._stopping:
                    self.stop(self._client.fatal)  # a doomed run stops within one answer
                if answer.kind is AnswerKind.STOPPED:
                    # Never sent (or a retry never sent): the journal keeps it unanswered, so a
                    # rerun sends it again.
                    self._release()
                    await self._not_attempted(name, cancel_in_flight=answer.attempts > 0)
                    continue
                self._record_answer(name, answer)
                if needs_get(answer):
                    self._schedule(name, answer, accepted=answer.ok, calls=answer.attempts)
                else:
                    self._release()
                    verdict = classify(answer, None, accepted=False)
                    await self._finish(name, verdict.outcome, verdict.details, answer.attempts)

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

    # -- reconciler ------------------------------------------------------------------------

    def _schedule(self, name: str, cancel: Answer | None, *, accepted: bool, calls: int) -> None:
        now = self._clock()
        opt = self._opt
        # A refused cancel needs one GET, now; an accepted one is polled until the deadline.
        deadline_at = now + opt.deadline if accepted else now
        first = min(now + opt.poll_initial, deadline_at) if accepted else now
        key = sys.intern(parent_of(name))
        parent = self._parents.get(key)
        if parent is None:
            parent = self._parents[key] = Parent(key)
        pending = Pending(name, key, cancel, accepted, deadline_at, opt.poll_initial, first, calls)
        pending.joined_pass = parent.pass_no
        self._pending[name] = pending
        parent.members[name] = pending
        parent.joined += 1
        self._push(pending)
        if parent.joined >= self._sweep_trigger(parent) and self._listing(parent):
            self._ready.add(key)
            if self._wake_at > now:
                self._wake.set()

    def _sweep_trigger(self, parent: Parent) -> int:
        """How many operations joining a parent are worth a sweep before anyone is due: about a
        page of them, so a sweep following the cancels fetches each page about once."""
        per_page = parent.page_entries or self._opt.list_page_size or 50
        return max(self._opt.list_threshold, min(int(per_page), self._opt.max_pending // 4))

    def _push(self, pending: Pending) -> None:
        heapq.heappush(self._heap, (pending.due, next(self._seq), pending))
        if pending.due < self._wake_at:  # only when the reconciler would otherwise sleep past it
            self._wake.set()

    async def _reconciler(self) -> None:
        send, receive = anyio.create_memory_object_stream[Pending | _Sweep](0)
        async with anyio.create_task_group() as tg:
            for _ in range(self._opt.concurrency):
                tg.start_soon(self._reconcile_worker, receive.clone())
            receive.close()
            async with send:
                while True:
                    now = self._clock()
                    if now >= self._clip:
                        self._end_grace()
                        return
                    heap = self._heap
                    while heap and heap[0][2].settled:
                        heapq.heappop(heap)
                    if not heap:
                        if self._cancels_done and not self._reconciling:
                            return
                        await self._wait(None if math.isinf(self._clip) else self._clip - now)
                        continue
                    due_at = min(heap[0][0], self._clip)
                    if due_at > now and not self._ready:
                        # Wake a little late so that one wake-up gathers everything due close
                        # together (polls are half a second apart at least: nobody notices).
                        await self._wait(due_at - now + _COALESCE)
                        continue
                    due: list[Pending] = []
                    while heap and heap[0][0] <= now:
                        pending = heapq.heappop(heap)[2]
                        if not pending.settled:
                            due.append(pending)
                    for job in self._plan(due, now):
                        self._reconciling += 1
                        await _put(send, job)

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

    async def _wait(self, delay: float | None) -> None:
        self._wake_at = math.inf if delay is None else self._clock() + delay
        with anyio.move_on_after(delay):
            await self._wake.wait()
        self._wake_at = -math.inf  # awake: nobody needs to ring
        self._wake = anyio.Event()

    def _plan(self, due: list[Pending], now: float) -> list[Pending | _Sweep]:
        """Turn due operations (and parents ready for a sweep) into jobs."""
        jobs: list[Pending | _Sweep] = []
        groups: dict[str, list[Pending]] = {key: [] for key in self._ready}
        self._ready.clear()
        self._measure_rate(now)
        for pending in due:
            if pending.force_get or self._opt.reconcile is ReconcileMode.GET:
                jobs.append(pending)
            else:
                groups.setdefault(pending.parent, []).append(pending)
        for key, members in groups.items():
            parent = self._parents.get(key)
            if parent is None or not parent.members:
                continue
            if not self._listing(parent) or not self._list_pays(parent, members):
                jobs.extend(members)
                continue
            if parent.sweeping or (not parent.in_pass and now < parent.next_sweep):
                # A sweep is running or a pass just ended: these wait for the next one.
                retry_at = max(parent.next_sweep, now + self._opt.poll_initial)
                for pending in members:
                    pending.due = retry_at
                    self._push(pending)
                continue
            parent.sweeping = True
            parent.joined = 0
            jobs.append(_Sweep(parent, members))
        return jobs

    def _listing(self, parent: Parent) -> bool:
        if parent.no_list or self._stopping or self._opt.reconcile is ReconcileMode.GET:
            # While stopping, the grace is short: one GET each is the bounded way.
            return False
        if self._opt.reconcile is ReconcileMode.LIST:
            return True
        return len(parent.members) >= self._opt.list_threshold or parent.in_pass

    def _list_pays(self, parent: Parent, due: list[Pending]) -> bool:
        if self._opt.reconcile is ReconcileMode.LIST:
            return True
        if not due:  # an early sweep, ahead of any due time: costs nothing GETs would not
            return True
        return prefer_list(
            parent,
            len(due),
            rate_binds=self._rate_binds,
            concurrency=self._opt.concurrency,
            costs=self._costs,
        )

    def _measure_rate(self, now: float) -> None:
        """Does the ``--rate`` bind? Compare the request rate reached with the pacer's."""
        since, count = self._rate_window
        elapsed = now - since
        if elapsed < 0.5:
            return
        total = self._client.stats.total
        self._rate_window = (now, total)
        reached = (total - count) / elapsed
        rates = self._client.rates()
        ceiling = min(rates.values()) if rates else math.inf
        self._rate_binds = self._client.stats.throttled > 0 or reached >= 0.7 * ceiling

    async def _reconcile_worker(self, receive: MemoryObjectReceiveStream[Pending | _Sweep]) -> None:
        async with receive:
            async for job in _drain(receive):
                try:
                    if isinstance(job, _Sweep):
                        await self._sweep(job)
                    else:
                        await self._poll(job)
                finally:
                    self._reconciling -= 1
                    if self._reconciling == 0 or isinstance(job, _Sweep):
                        self._wake.set()  # the end may be reached, or a parent is free again

    async def _poll(self, pending: Pending) -> None:
        if pending.settled:
            return
        started = self._clock()
        answer = await self._client.get(pending.name)
        self._costs.record_get(self._clock() - started)
        pending.calls += answer.attempts
        pending.force_get = False
        if pending.settled:  # a sweep may have settled it meanwhile
            return
        if answer.kind is AnswerKind.STOPPED:
            # The run is ending: settle from what was last seen rather than call again.
            verdict = classify(pending.cancel, pending.last_get, accepted=pending.accepted)
            verdict.details["interrupted"] = True
            await self._settle(pending, verdict)
            return
        await self._observe(pending, answer)

    async def _observe(self, pending: Pending, answer: Answer) -> bool:
        """Settle or reschedule after a GET (or a listing entry); True when it settled."""
        pending.last_get = answer
        now = self._clock()
        body = answer.body
        # A malformed Operation is final too: polling it again until the deadline tells nothing.
        running = answer.ok and body is not None and not is_done(body) and malformed(body) is None
        final = not running or not pending.accepted or now >= min(pending.deadline_at, self._clip)
        if final:
            passed = running and pending.accepted
            verdict = classify(
                pending.cancel, answer, accepted=pending.accepted, deadline_passed=passed
            )
            await self._settle(pending, verdict)
            return True
        pending.interval = min(pending.interval * self._opt.poll_factor, self._opt.poll_max)
        pending.due = min(now + pending.interval, pending.deadline_at)
        self._push(pending)
        return False

    async def _sweep(self, sweep: _Sweep) -> None:
        """Walk the parent's listing from where its pass stands; settle what the pages show.

        Ends at the end of the listing, at the cancels still on the wire (the pass resumes
        there later), at the page budget or the deadline, or when the run stops."""
        parent = sweep.parent
        self.stats.sweeps += 1
        due = {p.name: p for p in sweep.due}
        if not parent.in_pass:
            parent.in_pass, parent.cursor, parent.pass_pages = True, None, 0
            parent.pass_no += 1
        pages = 0
        failed = complete = False
        tokens_seen: set[str] = set()
        horizon = min(self._clip, max((p.deadline_at for p in parent.members.values()), default=0))
        try:
            while not self._stopping:
                token = parent.cursor
                started = self._clock()
                answer = await self._client.list_page(
                    parent.name, page_size=self._opt.list_page_size, page_token=token
                )
                now = self._clock()
                pages += 1
                parent.pages += 1
                parent.pass_pages += 1
                self.stats.sweep_pages += 1
                if not answer.ok or answer.body is None:
                    failed = answer.kind is not AnswerKind.STOPPED
                    break
                operations = answer.body.get("operations")
                entries = operations if isinstance(operations, list) else []
                parent.record_page(now - started, len(entries))
                ours, on_the_wire = await self._take_page(parent, entries, due)
                next_token = answer.body.get("nextPageToken")
                if not isinstance(next_token, str) or not next_token:
                    complete = True
                    break
                if next_token in tokens_seen or next_token == token:
                    failed = True  # a server that repeats itself would page forever
                    break
                tokens_seen.add(next_token)
                ahead = on_the_wire or (ours == 0 and not self._input_done)
                if ahead and parent.paused_at != token:
                    # The cancels have not got this far: resume from this page later, once.
                    parent.paused_at = token
                    break
                parent.cursor = next_token
                if pages >= self._opt.sweep_page_budget or now >= horizon:
                    failed = True  # this listing costs more than it settles: GETs from here
                    break
                if self._opt.reconcile is ReconcileMode.AUTO and parent.wasteful():
                    failed = True
                    break
        finally:
            parent.sweeping = False
        if complete:
            self._pass_complete(parent)
        wasteful = self._opt.reconcile is ReconcileMode.AUTO and parent.wasteful()
        if (failed or wasteful) and not parent.no_list:
            parent.no_list = True
            self.stats.list_disabled.append(parent.name)
        now = self._clock()
        for pending in due.values():  # due and not on the pages walked
            if pending.settled or pending.force_get:  # (_pass_complete queued its GET)
                continue
            if parent.no_list:
                pending.force_get = True
                pending.due = now
            else:  # on a page the paused pass has not reached yet: the pass resumes for it
                pending.due = now + pending.interval
            self._push(pending)

    async def _take_page(
        self, parent: Parent, entries: list[Any], due: dict[str, Pending]
    ) -> tuple[int, bool]:
        """Settle from one page; returns how many of ours it showed, and whether any of them
        still has its cancel on the wire."""
        members = parent.members
        ours = 0
        on_the_wire = False
        for operation in entries:
            name = operation.get("name") if isinstance(operation, dict) else None
            if not isinstance(name, str):
                continue
            pending = members.get(name)
            if pending is None:
                if self._in_cancel.get(name) is _SENT:
                    on_the_wire = True
                    ours += 1
                continue
            ours += 1
            pending.seen_pass = parent.pass_no
            if pending.settled:
                continue
            listed = Answer(AnswerKind.OK, 200, body=operation)
            was_due = due.pop(name, None) is not None
            settles = was_due or is_done(operation) or malformed(operation) is not None
            if settles and await self._observe(pending, listed):
                self.stats.settled_by_list += 1
        parent.found += ours
        return ours, on_the_wire

    def _pass_complete(self, parent: Parent) -> None:
        parent.full_pass_pages = parent.pass_pages
        parent.in_pass, parent.cursor, parent.paused_at = False, None, None
        parent.next_sweep = self._clock() + self._opt.sweep_gap
        now = self._clock()
        for pending in parent.members.values():
            covered = pending.joined_pass < parent.pass_no  # this pass had to list it
            if covered and not pending.settled and pending.seen_pass != parent.pass_no:
                pending.force_get = True  # not in the listing: ask directly
                pending.due = now
                self._push(pending)

    # -- settling --------------------------------------------------------------------------

    async def _settle(self, pending: Pending, verdict: Verdict) -> None:
        pending.settled = True
        self._pending.pop(pending.name, None)
        self._release()
        parent = self._parents.get(pending.parent)
        if parent is not None:
            parent.members.pop(pending.name, None)
            idle = not (parent.members or parent.in_pass or parent.sweeping or parent.pages)
            if idle and not parent.no_list:  # nothing learnt worth keeping
                del self._parents[pending.parent]
        details = verdict.details  # classify builds a fresh dict for every verdict
        if pending.accepted and pending.cancel is None:
            details["resumed"] = True
        await self._finish(pending.name, verdict.outcome, details, pending.calls)

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


_T = TypeVar("_T")
#: seconds the reconciler may wake late so that operations due together go out together
_COALESCE = 0.01


async def _drain(receive: MemoryObjectReceiveStream[_T]) -> AsyncIterator[_T]:
    """Items as ``async for`` would give them, without a trip through the event loop for each
    one that is already waiting (anyio's ``receive`` checkpoints even when it need not block).
    Cancellation still reaches the worker at every await of its own, and when it blocks here."""
    while True:
        try:
            yield receive.receive_nowait()
        except anyio.WouldBlock:
            try:
                yield await receive.receive()
            except anyio.EndOfStream:
                return
        except anyio.EndOfStream:
            return


async def _put(send: MemoryObjectSendStream[_T], item: _T) -> None:
    """``send.send(item)`` without the checkpoint when a receiver is already waiting."""
    try:
        send.send_nowait(item)
    except anyio.WouldBlock:
        await send.send(item)
