"""The run: targets -> cancel pool -> reconciler -> emit, under one anyio task group.

Shape of the data flow (each arrow a bounded hand-off, so a slow stage slows the one before it):

    targets ──> memory stream (size = concurrency) ──> N cancel workers
                                                          │ accepted / refused-but-maybe-running
                                                          v
                              reconciler: a heap of operations by next poll time
                                  │ due: per-operation GET, or one list sweep per parent
                                  v
                               emit(result)  (journal outcome, report, progress)

Per-operation failures are results; the only exceptions that leave ``run`` are bugs and the
journal failing to write (a run that cannot record what it does must stop).
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._classify import Verdict, classify, done_outcome, is_done, needs_get
from bulkcancel._client import OperationsClient
from bulkcancel._models import OperationResult, Outcome, StopReason, Target
from bulkcancel._names import parent_of


class ReconcileMode(StrEnum):
    GET = "get"  # one GET per operation per poll
    LIST = "list"  # one list sweep per parent settles a page of operations per call
    AUTO = "auto"  # list where enough targets share a parent, GET elsewhere


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
    #: a parent is swept at most this often; operations due in between wait for the next sweep.
    sweep_gap: float = 1.0
    #: after a graceful stop, how long accepted cancels are still reconciled.
    grace: float = 5.0
    #: at most this many operations between "sent to the cancel pool" and "settled": the cancel
    #: pool waits for the reconciler beyond it, so memory stays flat however long the input.
    max_pending: int = 20_000


class JournalSink(Protocol):
    async def intent(self, name: str) -> None: ...
    def answer(
        self, name: str, accepted: bool, detail: Mapping[str, object] | None = None
    ) -> None: ...
    def outcome(self, result: OperationResult) -> None: ...


Emit = Callable[[OperationResult], Awaitable[None]]


@dataclass(eq=False, slots=True)
class _Pending:
    """An operation in the reconciler."""

    name: str
    parent: str
    cancel: Answer | None
    accepted: bool
    deadline_at: float
    interval: float
    due: float
    calls: int = 0
    last_get: Answer | None = None
    force_get: bool = False
    settled: bool = False


@dataclass(eq=False, slots=True)
class _Sweep:
    parent: str
    due: list[_Pending]


@dataclass(slots=True)
class EngineStats:
    sweeps: int = 0
    sweep_pages: int = 0
    settled_by_list: int = 0
    list_disabled: list[str] = field(default_factory=list)


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
        self._clip = float("inf")  # after a graceful stop: reconcile no later than this
        self._scope: anyio.CancelScope | None = None
        self._emit: Emit | None = None
        self._targets: Iterator[Target] = iter(())
        #: Taken from the targets, not yet answered: name -> whether its cancel was sent.
        self._in_cancel: dict[str, bool] = {}
        self._pending: dict[str, _Pending] = {}
        self._by_parent: dict[str, dict[str, _Pending]] = {}
        self._heap: list[tuple[float, int, _Pending]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self._room = anyio.Event()  # set when the pending set has room again
        #: when the sleeping reconciler will wake by itself (-inf while it is awake)
        self._wake_at = -math.inf
        self._cancels_done = False
        self._reconciling = 0
        self._sweep_running: set[str] = set()
        self._sweep_next: dict[str, float] = {}  # parent -> earliest start of its next sweep
        self._no_list: set[str] = set()

    # -- control ---------------------------------------------------------------------------

    def stop(self, reason: StopReason = StopReason.INTERRUPTED) -> None:
        """Graceful: send no new cancel, finish what is in flight, reconcile accepted cancels
        for the grace period, report the rest as not attempted."""
        if self._stopping:
            return
        self._stopping = True
        self.stop_reason = reason
        self._clip = self._clock() + self._opt.grace
        self._wake.set()

    def abort(self) -> None:
        """Hard: stop at once. Everything unsettled is still reported."""
        self.stop()
        if self._scope is not None:
            self._scope.cancel()

    # -- the run ---------------------------------------------------------------------------

    async def run(self, targets: Iterable[Target], emit: Emit) -> None:
        self._emit = emit
        self._targets = iter(targets)
        send, receive = anyio.create_memory_object_stream[Target](self._opt.concurrency)
        with anyio.CancelScope() as self._scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._reconciler)
                async with anyio.create_task_group() as pool:
                    pool.start_soon(self._produce, send)
                    for _ in range(self._opt.concurrency):
                        pool.start_soon(self._cancel_worker, receive.clone())
                    receive.close()
                self._cancels_done = True
                self._wake.set()
        # Aborted, or done: anything not settled is reported now, outside the cancelled scope.
        await self._settle_leftovers()

    async def _produce(self, send: MemoryObjectSendStream[Target]) -> None:
        async with send:
            for target in self._targets:
                if target.result is not None:
                    assert self._emit is not None
                    await self._emit(target.result)
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
                while len(self._pending) + len(self._in_cancel) >= self._opt.max_pending:
                    # Backpressure: the reconciler is behind. Woken when it catches up, and
                    # re-checked now and then whatever happens (no wake-up can be missed).
                    self._room = anyio.Event()
                    with anyio.move_on_after(0.25):
                        await self._room.wait()
                if target.accepted_before:
                    self._schedule(target.name, None, accepted=True, calls=0)
                    continue
                self._in_cancel[target.name] = False
                await _put(send, target)

    async def _cancel_worker(self, receive: MemoryObjectReceiveStream[Target]) -> None:
        async with receive:
            async for target in _drain(receive):
                name = target.name
                if self._stopping:
                    del self._in_cancel[name]
                    await self._not_attempted(name)
                    continue
                self._in_cancel[name] = True
                if self._journal is not None:
                    await self._journal.intent(name)
                answer = await self._client.cancel(name)
                del self._in_cancel[name]
                if answer.kind is AnswerKind.STOPPED:
                    # Never sent (or a retry never sent): the journal keeps it unanswered, so a
                    # rerun sends it again.
                    await self._not_attempted(name, cancel_in_flight=answer.attempts > 0)
                    continue
                if self._journal is not None:
                    self._journal.answer(name, answer.ok, None if answer.ok else answer.summary())
                if needs_get(answer):
                    self._schedule(name, answer, accepted=answer.ok, calls=answer.attempts)
                else:
                    verdict = classify(answer, None, accepted=False)
                    await self._finish(name, verdict.outcome, verdict.details, answer.attempts)

    # -- reconciler ------------------------------------------------------------------------

    def _schedule(self, name: str, cancel: Answer | None, *, accepted: bool, calls: int) -> None:
        now = self._clock()
        opt = self._opt
        # A refused cancel needs one GET, now; an accepted one is polled until the deadline.
        deadline_at = now + opt.deadline if accepted else now
        first = min(now + opt.poll_initial, deadline_at) if accepted else now
        pending = _Pending(
            name,
            sys.intern(parent_of(name)),
            cancel,
            accepted,
            deadline_at,
            opt.poll_initial,
            first,
            calls,
        )
        self._pending[name] = pending
        self._by_parent.setdefault(pending.parent, {})[name] = pending
        self._push(pending)

    def _push(self, pending: _Pending) -> None:
        heapq.heappush(self._heap, (pending.due, next(self._seq), pending))
        if pending.due < self._wake_at:  # only when the reconciler would otherwise sleep past it
            self._wake.set()

    async def _reconciler(self) -> None:
        send, receive = anyio.create_memory_object_stream[_Pending | _Sweep](0)
        async with anyio.create_task_group() as tg:
            for _ in range(self._opt.concurrency):
                tg.start_soon(self._reconcile_worker, receive.clone())
            receive.close()
            async with send:
                while True:
                    heap = self._heap
                    while heap and heap[0][2].settled:
                        heapq.heappop(heap)
                    if not heap:
                        if self._cancels_done and not self._reconciling:
                            return
                        await self._wait(None)
                        continue
                    now = self._clock()
                    due_at = min(heap[0][0], self._clip)
                    if due_at > now:
                        # Wake a little late so that one wake-up gathers everything due close
                        # together (polls are half a second apart at least: nobody notices).
                        await self._wait(due_at - now + _COALESCE)
                        continue
                    due: list[_Pending] = []
                    while heap and min(heap[0][0], self._clip) <= now:
                        pending = heapq.heappop(heap)[2]
                        if not pending.settled:
                            due.append(pending)
                    for job in self._plan(due, now):
                        self._reconciling += 1
                        await _put(send, job)

    async def _wait(self, delay: float | None) -> None:
        self._wake_at = math.inf if delay is None else self._clock() + delay
        with anyio.move_on_after(delay):
            await self._wake.wait()
        self._wake_at = -math.inf  # awake: nobody needs to ring
        self._wake = anyio.Event()

    def _plan(self, due: list[_Pending], now: float) -> list[_Pending | _Sweep]:
        """Turn due operations into jobs: a list sweep where a parent has enough of them."""
        jobs: list[_Pending | _Sweep] = []
        groups: dict[str, list[_Pending]] = {}
        for pending in due:
            if pending.force_get or self._opt.reconcile is ReconcileMode.GET:
                jobs.append(pending)
            else:
                groups.setdefault(pending.parent, []).append(pending)
        for parent, members in groups.items():
            if not self._use_list(parent):
                jobs.extend(members)
                continue
            if parent in self._sweep_running or now < self._sweep_next.get(parent, 0.0):
                # A sweep is running or just ran: these wait for the next one.
                retry_at = max(self._sweep_next.get(parent, 0.0), now + self._opt.poll_initial)
                for pending in members:
                    pending.due = retry_at
                    self._push(pending)
                continue
            self._sweep_running.add(parent)
            jobs.append(_Sweep(parent, members))
        return jobs

    def _use_list(self, parent: str) -> bool:
        if parent in self._no_list or self._stopping:
            # While stopping, the grace period is short and sweeps would be deferred past it.
            return False
        if self._opt.reconcile is ReconcileMode.LIST:
            return True
        return len(self._by_parent.get(parent, ())) >= self._opt.list_threshold

    async def _reconcile_worker(
        self, receive: MemoryObjectReceiveStream[_Pending | _Sweep]
    ) -> None:
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

    async def _poll(self, pending: _Pending) -> None:
        if pending.settled:
            return
        answer = await self._client.get(pending.name)
        pending.calls += answer.attempts
        pending.force_get = False
        if not pending.settled:  # a list sweep may have settled it meanwhile
            await self._observe(pending, answer)

    async def _observe(self, pending: _Pending, answer: Answer) -> None:
        """Settle or reschedule after a GET (or a listing entry) for this operation."""
        pending.last_get = answer
        now = self._clock()
        running = answer.ok and answer.body is not None and not is_done(answer.body)
        final = not running or not pending.accepted or now >= min(pending.deadline_at, self._clip)
        if final:
            passed = running and pending.accepted
            verdict = classify(
                pending.cancel, answer, accepted=pending.accepted, deadline_passed=passed
            )
            await self._settle(pending, verdict)
            return
        pending.interval = min(pending.interval * self._opt.poll_factor, self._opt.poll_max)
        pending.due = min(now + pending.interval, pending.deadline_at)
        self._push(pending)

    async def _sweep(self, sweep: _Sweep) -> None:
        """List the parent's operations page by page; settle every pending one found done."""
        parent = sweep.parent
        self._sweep_next[parent] = self._clock() + self._opt.sweep_gap
        self.stats.sweeps += 1
        due = {p.name: p for p in sweep.due}
        seen_ours = 0
        token: str | None = None
        tokens_seen: set[str] = set()
        failed = False
        while True:
            answer = await self._client.list_page(
                parent, page_size=self._opt.list_page_size, page_token=token
            )
            self.stats.sweep_pages += 1
            if not answer.ok or answer.body is None:
                failed = True
                break
            operations = answer.body.get("operations") or []
            mine = self._by_parent.get(parent, {})
            for operation in operations if isinstance(operations, list) else ():
                name = operation.get("name") if isinstance(operation, dict) else None
                pending = mine.get(name) if isinstance(name, str) else None
                if pending is None or pending.settled:
                    continue
                seen_ours += 1
                listed = Answer(AnswerKind.OK, 200, body=operation)
                if pending.name in due:
                    del due[pending.name]
                    await self._observe(pending, listed)
                elif is_done(operation):
                    self.stats.settled_by_list += 1
                    await self._observe(pending, listed)
            next_token = answer.body.get("nextPageToken")
            if not isinstance(next_token, str) or not next_token:
                break
            if next_token in tokens_seen:  # a server that repeats itself would loop forever
                failed = True
                break
            tokens_seen.add(next_token)
            token = next_token
        pages = len(tokens_seen) + 1
        wasteful = self._opt.reconcile is ReconcileMode.AUTO and pages > max(seen_ours, 1)
        if failed or wasteful:
            # Listing is unsupported here, or costs more calls than the GETs it replaces (the
            # parent is mostly other operations): reconcile this parent by GET from now on.
            self._no_list.add(parent)
            self.stats.list_disabled.append(parent)
        self._sweep_running.discard(parent)
        for pending in due.values():  # due, but not in the listing: ask directly
            if not pending.settled:
                pending.force_get = True
                pending.due = self._clock()
                self._push(pending)

    # -- settling --------------------------------------------------------------------------

    async def _settle(self, pending: _Pending, verdict: Verdict) -> None:
        pending.settled = True
        self._pending.pop(pending.name, None)
        if len(self._pending) < self._opt.max_pending // 2:
            self._room.set()
        siblings = self._by_parent.get(pending.parent)
        if siblings is not None:
            siblings.pop(pending.name, None)
            if not siblings:
                del self._by_parent[pending.parent]
        details = verdict.details  # classify builds a fresh dict for every verdict
        if pending.accepted and pending.cancel is None:
            details["resumed"] = True
        await self._finish(pending.name, verdict.outcome, details, pending.calls)

    async def _not_attempted(self, name: str, **extra: Any) -> None:
        details: dict[str, Any] = {"reason": self.stop_reason or "not attempted", **extra}
        await self._finish(name, Outcome.NOT_ATTEMPTED, details)

    async def _finish(
        self, name: str, outcome: Outcome, details: dict[str, Any], calls: int = 0
    ) -> None:
        if calls:
            details["requests"] = calls
        result = OperationResult(name, outcome, details)
        if self._journal is not None:
            self._journal.outcome(result)
        assert self._emit is not None
        await self._emit(result)

    async def _settle_leftovers(self) -> None:
        assert self._emit is not None
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
                await self._emit(target.result)
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
