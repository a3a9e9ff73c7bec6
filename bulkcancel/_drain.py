"""Drain until quiet (``--until-quiet``): keep cancelling what keeps appearing.

After the first listing's targets, the parents are listed again, through the same server
filter and the same client-side selection (shards, ``--match``, ``--target``, ``--verb``,
``--older-than``), and every operation never seen before is handed to the engine as soon as
its page arrives. The drain ends when a complete re-listing pass that started at least
``until_quiet`` seconds after the last new operation was seen found nothing new.

The drain *is* the engine's input: an async iterable of targets (the engine consumes it with
``async for``, takes its end as the end of input, and stops consuming it when stopped). It
yields the spooled first selection, then what each pass finds.

The re-listing schedule (every call goes through the client, so it is paced by ``--rate``
like any other):

* the first pass starts ``first`` seconds after the first selection was handed over, where
  ``first = min(1 s, until_quiet / 4)``;
* after a pass that found something new, the next starts ``first`` seconds later (back fast);
* after a pass that found nothing, the interval doubles, up to
  ``cap = min(30 s, max(first, until_quiet / 4))``;
* a pass of P list calls is followed by at least ``P / (SHARE * rate)`` seconds: re-listing
  spends at most about a fifth of ``--rate`` on average, the rest is the cancels';
* a pass always starts at ``quiet_since + until_quiet`` (the confirming pass) if the interval
  would carry past it.

Each entry is judged once, the first time it is seen (``Resolver.add_relisted``): an operation
skipped by a selection flag stays skipped, whatever later passes show.

Time comes from the running loop (``anyio.current_time``/``anyio.sleep`` by default, both
injectable), so tests run the drain on virtual time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._classify import done_outcome
from bulkcancel._client import OperationsClient
from bulkcancel._engine import Emit, JournalSink
from bulkcancel._errors import RecordingError
from bulkcancel._logging import event
from bulkcancel._models import OperationResult, Outcome, Target
from bulkcancel._sources import ListingError, Resolver, iter_pages
from bulkcancel._views import listing_fields

__all__ = ["MAX_OPERATIONS_REASON", "Drain", "DrainStatus", "Schedule"]

#: The ``reason`` of operations a drain saw but did not cancel: ``--max-operations`` reached.
MAX_OPERATIONS_REASON = "max_operations"
#: Re-listing spends at most about this share of ``--rate`` on average.
SHARE = 0.2
#: A parent whose re-listing fails this many passes in a row is given up (one error record).
MAX_FAILED_PASSES = 3


class Schedule:
    """When the next re-listing pass starts (pure: the module docstring has the rules)."""

    def __init__(self, until_quiet: float, rate: float) -> None:
        self.until_quiet = until_quiet
        self.first = min(1.0, until_quiet / 4)
        self.cap = min(30.0, max(self.first, until_quiet / 4))
        self._rate = rate
        self.interval = self.first

    def after_pass(self, *, found_new: bool, calls: int) -> float:
        """The wait before the next pass, given what this one found and cost."""
        if found_new:
            self.interval = self.first
        else:
            self.interval = min(self.interval * 2, self.cap)
        return max(self.interval, calls / (SHARE * self._rate))

    def next_start(self, now: float, wait: float, quiet_since: float) -> float:
        """Start of the next pass: after ``wait``, but no later than the confirming pass."""
        return max(now, min(now + wait, quiet_since + self.until_quiet))


@dataclass(slots=True)
class DrainStatus:
    """The drain as the live display and the report read it (plain values only: rich reads
    them from its refresh thread)."""

    until_quiet: float
    #: re-listing passes completed (the first listing not counted)
    passes: int = 0
    #: operations the re-listing selected (never seen by the first listing)
    appeared: int = 0
    #: of those, not cancelled because ``--max-operations`` was reached
    over_limit: int = 0
    #: list calls the re-listing spent
    list_calls: int = 0
    #: on the loop's clock (``time.monotonic`` on asyncio): when the quiet period began
    quiet_since: float | None = None
    #: "quiet", "max_operations", "stopped" (a signal, or the client gave up) once ended
    ended: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "until_quiet_seconds": self.until_quiet,
            "passes": self.passes,
            "appeared": self.appeared,
            "over_limit": self.over_limit,
            "list_calls": self.list_calls,
            "ended": self.ended,
        }


class _Lister:
    """The client's ``list_page``, counted (a pass's cost decides the next wait)."""

    def __init__(self, client: OperationsClient) -> None:
        self._client = client
        self.calls = 0
        self.last: Answer | None = None

    async def list_page(self, parent: str, **kw: Any) -> Answer:
        self.calls += 1
        self.last = await self._client.list_page(parent, **kw)
        return self.last


class Drain:
    """The engine's input for a drain. Build after resolution; iterate once."""

    def __init__(
        self,
        client: OperationsClient,
        resolver: Resolver,
        parents: Iterable[str],
        first: Iterable[Target],
        *,
        until_quiet: float,
        rate: float,
        prepare: Callable[[Target], Target] = lambda target: target,
        filter_expr: str | None = None,
        page_size: int = 0,
        max_operations: int | None = None,
        journal: JournalSink | None = None,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._client = client
        self._lister = _Lister(client)
        self._resolver = resolver
        self._parents = list(dict.fromkeys(parents))
        self._first = iter(first)
        self._prepare = prepare
        self._filter = filter_expr
        self._page_size = page_size
        self._max = max_operations
        self._journal = journal
        self._clock = clock
        self._sleep = sleep
        self._schedule = Schedule(until_quiet, rate)
        self.status = DrainStatus(until_quiet)
        self._found: list[Target] = []
        self._failures: dict[str, int] = {}
        self._held: dict[str, OperationResult] = {}
        self._emit: Emit | None = None
        self._iterator: AsyncGenerator[Target, None] | None = None

    # -- the engine's input ----------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Target]:
        self._iterator = iterator = self._targets()
        return iterator

    async def close(self) -> None:
        """Close the iteration (the engine may have stopped consuming it mid-way)."""
        if self._iterator is not None:
            await self._iterator.aclose()

    async def _targets(self) -> AsyncGenerator[Target, None]:
        for target in self._first:
            yield target
        self._resolver.redirect(self._on_target, self._on_result)
        status, schedule = self.status, self._schedule
        status.quiet_since = self._clock()
        start = self._clock() + schedule.first
        event("draining", level=logging.INFO, until_quiet_seconds=schedule.until_quiet)
        while True:
            await self._sleep(max(0.0, start - self._clock()))
            started = self._clock()
            calls_before = self._lister.calls
            found_new = False
            complete = True
            for parent in list(self._parents):
                async with aclosing(self._relist(parent)) as found:
                    async for target in found:
                        found_new = True
                        yield target
                if parent in self._failures:
                    complete = False
                if self._gave_up():
                    status.ended = "stopped"
                    break
                for target in self._given_up(parent):
                    yield target
            if status.ended is not None:
                break
            status.passes += 1
            calls = self._lister.calls - calls_before
            now = self._clock()
            if self._over_limit():
                status.ended = MAX_OPERATIONS_REASON
                break
            if found_new:
                status.quiet_since = now
            elif complete and started >= status.quiet_since + schedule.until_quiet:
                status.ended = "quiet"
                break
            wait = schedule.after_pass(found_new=found_new, calls=calls)
            start = schedule.next_start(now, wait, status.quiet_since)
        event(
            "drain ended",
            level=logging.INFO,
            ended=status.ended,
            passes=status.passes,
            appeared=status.appeared,
        )
        await self._reread_held()

    async def _relist(self, parent: str) -> AsyncGenerator[Target, None]:
        """One parent's listing, from the first page; yields what is new, page by page."""
        position = 0
        try:
            async for entry in iter_pages(
                self._lister, parent, filter_expr=self._filter, page_size=self._page_size
            ):
                position += 1
                self._resolver.add_relisted(parent, position, entry)
                while self._found:
                    yield self._found.pop(0)
        except ListingError as exc:
            self._failures[parent] = self._failures.get(parent, 0) + 1
            answer = exc.answer
            event(
                "re-listing failed",
                level=logging.WARNING,
                parent=parent,
                error=answer.summary() if answer is not None else str(exc),
            )
            return
        self._failures.pop(parent, None)

    def _gave_up(self) -> bool:
        """The run is over for the client (a stop, credentials rejected, endpoint gone)."""
        last = self._lister.last
        stopped = last is not None and last.kind is AnswerKind.STOPPED
        return stopped or self._client.stopped or self._client.fatal is not None

    def _given_up(self, parent: str) -> Iterator[Target]:
        """A parent whose re-listing failed too often: one error record, no more passes."""
        if self._failures.get(parent, 0) < MAX_FAILED_PASSES:
            return
        self._parents.remove(parent)
        del self._failures[parent]
        details: dict[str, Any] = {
            "kind": "listing",
            "message": f"re-listing {parent} failed {MAX_FAILED_PASSES} passes in a row: "
            "operations appearing there later were not seen",
        }
        if self._lister.last is not None and not self._lister.last.ok:
            details["list_error"] = self._lister.last.summary()
        name = f"{parent}/operations[#drain]"  # '[#' never occurs in a real name
        yield Target(name, result=OperationResult(name, Outcome.ERROR, details))

    def _over_limit(self) -> bool:
        return self.status.over_limit > 0

    def _on_target(self, target: Target) -> None:
        status = self.status
        status.appeared += 1
        if self._max is not None and self._resolver.stats.selected > self._max:
            status.over_limit += 1
            details = {"reason": MAX_OPERATIONS_REASON, **listing_fields(target.listed)}
            result = OperationResult(target.name, Outcome.NOT_ATTEMPTED, details)
            self._found.append(Target(target.name, result=result))
            return
        self._found.append(self._prepare(target))

    def _on_result(self, result: OperationResult) -> None:
        self._found.append(Target(result.name, result=result))

    # -- still_running: read once more before the end --------------------------------------

    def emit_through(self, emit: Emit) -> Emit:
        """``emit``, except that ``still_running`` results are held while the drain goes on:
        they are read once more before the drain ends (see :meth:`flush`)."""
        self._emit = emit

        async def hold(result: OperationResult) -> None:
            if result.outcome is Outcome.STILL_RUNNING and self.status.ended is None:
                self._held[result.name] = result
                return
            await emit(result)

        return hold

    async def _reread_held(self) -> None:
        """One GET for each held ``still_running`` operation; those it shows done are updated
        (and journaled). Everything held is emitted here."""
        held, self._held = self._held, {}
        for name, result in held.items():
            answer = await self._client.get(name)
            verdict = done_outcome(answer.body) if answer.ok and answer.body else None
            if verdict is not None and verdict.outcome is not Outcome.ERROR:
                calls = int(result.details.get("requests", 0)) + answer.attempts
                details = {**verdict.details, "requests": calls, "read_again": True}
                result = OperationResult(name, verdict.outcome, details)
                self._journal_outcome(result)
            else:
                result.details["read_again"] = answer.kind is not AnswerKind.STOPPED
            assert self._emit is not None
            await self._emit(result)

    def _journal_outcome(self, result: OperationResult) -> None:
        if self._journal is None:
            return
        try:
            self._journal.outcome(result)
        except (RecordingError, OSError):
            self._journal = None  # the engine has seen it fail too and stops on it

    async def flush(self) -> None:
        """Emit what is still held (the drain was stopped before its end), as it was."""
        self.status.ended = self.status.ended or "stopped"
        held, self._held = self._held, {}
        assert self._emit is not None or not held
        for result in held.values():
            assert self._emit is not None
            await self._emit(result)

    def unconsumed(self) -> Iterator[Target]:
        """The first selection's targets the engine never took (it was stopped first)."""
        return self._first
