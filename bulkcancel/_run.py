"""One run, end to end, shared by the library and the CLI: configure, resolve, execute.

Split in phases because the CLI must stop between them: resolution counts the targets (for the
prompt and ``--max-operations``) before a single cancel is sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._auth import TokenSource, describe
from bulkcancel._client import OperationsClient
from bulkcancel._config import RunConfig, make_tokens
from bulkcancel._drain import Drain
from bulkcancel._engine import Emit, Engine, EngineOptions
from bulkcancel._errors import (
    BulkCancelError,
    ConfigError,
    CredentialsError,
    RecordingError,
    unwrap,
)
from bulkcancel._inputs import NameInput
from bulkcancel._journal import Journal
from bulkcancel._limits import RateGovernor
from bulkcancel._models import OperationResult, Outcome, StopReason, Target
from bulkcancel._report_meta import run_meta
from bulkcancel._sources import Resolver, check_parents, resolve_parents
from bulkcancel._transport import AiohttpTransport, Transport, check_endpoint
from bulkcancel._views import count_place, listing_fields


@dataclass(slots=True)
class CancelCounts:
    """Cancels as the live display counts them: answered (sent, whatever the answer), accepted
    by the server, and in flight right now. Read from rich's refresh thread: plain ints only."""

    answered: int = 0
    accepted: int = 0
    in_flight: int = 0


def run_clock() -> Callable[[], float]:
    """The clock a run paces and reconciles by: the running loop's (time.monotonic on asyncio's
    own loop; a test's virtual loop moves it), unless that clock is coarse.

    uvloop's ``time()`` is libuv's millisecond clock, read once per loop iteration. At thousands
    of requests a second every request of an iteration would see one instant: the pacer would
    space their turns ahead of it and then wait out sub-millisecond gaps the loop rounds to
    nothing (it spun, doubling the CPU a run took), and request latencies would measure 0.
    There the run reads time.monotonic, as asyncio's loop does."""
    loop = asyncio.get_running_loop()
    if type(loop).__module__.partition(".")[0] in ("uvloop", "winloop"):
        return time.monotonic
    return loop.time


class _CountingClient(OperationsClient):
    """The run's client, counting each cancel as it is answered. A cancel the client did not
    send because the run was stopping is not counted as sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cancels = CancelCounts()

    async def cancel(self, name: str) -> Answer:
        self.cancels.in_flight += 1
        try:
            answer = await super().cancel(name)
        finally:
            self.cancels.in_flight -= 1
        if answer.kind is not AnswerKind.STOPPED:
            self.cancels.answered += 1
            if answer.ok:
                self.cancels.accepted += 1
        return answer


class _Spool:
    """Targets staged on disk between resolution and execution: flat memory at any input size,
    and the input order kept for the report."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by owner
        self.targets = 0  # to act on in this run
        self.settled = 0  # settled before the run (invalid, finished earlier)

    def add(self, target: Target) -> None:
        if target.result is not None:
            self.settled += 1
            self._file.write("r\t" + json.dumps(target.result.to_json()) + "\n")
        elif target.listed is not None:
            self.targets += 1
            self._file.write("l\t" + json.dumps(target.listed, separators=(",", ":")) + "\n")
        else:
            self.targets += 1
            self._file.write(("a\t" if target.accepted_before else "n\t") + target.name + "\n")

    def __iter__(self) -> Iterator[Target]:
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            kind, _, rest = line.rstrip("\n").partition("\t")
            if kind == "n":
                yield Target(rest)
            elif kind == "a":
                yield Target(rest, accepted_before=True)
            elif kind == "l":
                listed = json.loads(rest)
                yield Target(str(listed["name"]), listed=listed)
            else:
                result = OperationResult.from_json(json.loads(rest))
                yield Target(result.name, result=result)

    def close(self) -> None:
        self._file.close()


class BulkRun:
    """A configured run. ``async with BulkRun(config) as run: await run.resolve(names);
    await run.execute(emit)``. Build inside the event loop."""

    def __init__(
        self,
        config: RunConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self._session = session
        self._transport = transport
        self._tokens = tokens
        self._stack = AsyncExitStack()
        self._spool = _Spool()
        self.journal: Journal | None = None
        self.engine: Engine | None = None
        self.resolver: Resolver | None = None
        #: The run's credentials, once entered (for :meth:`identity_text`).
        self.tokens: TokenSource | None = None
        #: Targets to act on per project/location, known once resolved.
        self.places: dict[str, int] = {}
        #: True once the engine has taken every target (the rest is reconciling).
        self.all_taken = False
        #: Inputs that were not names at all (neither selected nor skipped by a filter).
        self.invalid = 0
        self._started = time.time()
        self._stop_reason: StopReason | None = None
        self._fatal_detail = ""
        #: The error that stopped the run after it started sending (already raised to the
        #: caller of :meth:`execute`, once every target was reported), or None.
        self.failure: Exception | None = None
        self._parents = check_parents_or_raise(config.parents)
        #: parents whose first listing went through (after fan-outs): what a drain lists again
        self._listed: list[str] = []
        #: the drain until quiet, once executing with ``until_quiet``
        self.drain: Drain | None = None

    async def __aenter__(self) -> BulkRun:
        config = self.config
        # Refuse an unsafe endpoint before looking for credentials or opening any connection.
        endpoint = check_endpoint(config.endpoint, sends_credentials=not config.anonymous)
        try:
            self.tokens = tokens = self._tokens or await make_tokens(config)
            transport = self._transport
            if transport is None:
                transport = await self._stack.enter_async_context(
                    AiohttpTransport(
                        session=self._session,
                        concurrency=config.concurrency,
                        timeout=config.request_timeout,
                    )
                )
            self.client = _CountingClient(
                transport,
                endpoint=endpoint,
                api_version=config.api_version,
                tokens=tokens,
                governor=RateGovernor(config.rate, clock=run_clock()),
                concurrency=config.concurrency,
                rng=random.Random(config.seed),  # noqa: S311 - jitter, not security
            )
            if config.journal:
                self.journal = await self._stack.enter_async_context(
                    Journal.open(config.journal, self.identity())
                )
        except BaseException:
            await self._stack.aclose()
            self._spool.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._stack.aclose()
        finally:
            self._spool.close()

    def identity(self) -> dict[str, str]:
        """What a journal must agree on to be resumed by this run."""
        return {
            "endpoint": self.config.endpoint.rstrip("/"),
            "api_version": self.config.api_version,
        }

    def identity_text(self) -> str:
        """Who acts: a service account's email, "access token", "anonymous"... never a secret.
        Best asked after the first request (the metadata server names its account then)."""
        return describe(self.tokens)

    @property
    def cancels(self) -> CancelCounts:
        """Cancels answered and accepted so far, and in flight (the live display reads it)."""
        counts: CancelCounts = self.client.cancels
        return counts

    @property
    def spool(self) -> Iterable[Target]:
        """The resolved targets, in input order (iterating re-reads the spool)."""
        return self._spool

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the run stopped before working through every target, or None."""
        if self._stop_reason is not None:
            return self._stop_reason
        if self.engine is not None and self.engine.stop_reason is not None:
            return self.engine.stop_reason
        # The client gave up on the run after the engine had taken every target (a short run
        # all in flight at once): the run still ended for that reason.
        return self.client.fatal if self.engine is not None else None

    @property
    def fatal_detail(self) -> str:
        """What made the run stop early, in a few words (what the client saw), or ''."""
        if self._fatal_detail:
            return self._fatal_detail
        return self.client.fatal_detail

    async def resolve(
        self,
        names: Iterable[str] = (),
        inputs: AsyncIterable[NameInput] | None = None,
        *,
        max_selected: int | None = None,
    ) -> int:
        """Validate, de-duplicate and select every target; list parents. Sends no cancel.

        ``names`` are plain names (arguments, the library's list); ``inputs`` what a names file
        or stdin held (:mod:`bulkcancel._inputs`): names, gcloud Operation objects whose
        metadata feeds the selection like a listing's, and inputs that cannot be names.

        A listing can already show that the whole run is doomed (the credentials rejected, the
        endpoint unreachable or wrong): then :attr:`stop_reason` is set, and :meth:`execute`
        sends nothing and reports every target ``not_attempted`` with that reason.

        ``max_selected`` (``--max-operations``) stops reading and listing the moment one more
        target would pass it: ``SelectionLimitError`` (a ConfigError), nothing sent.
        """
        rejected: list[str] = []

        places = self.places = {}

        def on_target(target: Target) -> None:
            target = self._as_journaled(target)
            self._spool.add(target)
            if target.result is None:
                count_place(places, target.name)

        def on_result(result: OperationResult) -> None:
            if result.outcome is Outcome.INVALID:
                self.invalid += 1
            failed = result.details.get("list_error")
            if isinstance(failed, dict) and failed.get("http_status") == 401:
                rejected.append(result.name)
            self._spool.add(Target(result.name, result=result))

        if isinstance(names, str):
            raise ConfigError("names must be an iterable of operation names, not one string")
        self.resolver = resolver = Resolver(
            self.config.selection, on_target, on_result, max_selected=max_selected
        )
        for raw in names:
            resolver.add_name(raw)
        if inputs is not None:
            async for item in inputs:
                if item.problem is not None:
                    resolver.add_invalid(item.name, item.problem)
                else:
                    resolver.add_name(item.name, item.operation)
        if self._parents:
            await resolve_parents(
                self.client,
                self._parents,
                resolver,
                filter_expr=self.config.filter,
                page_size=self.config.list_page_size,
                dash_ok=self.config.dash_ok,
                listed=self._listed,
            )
        if self.client.fatal is not None:
            self._stop_reason = self.client.fatal
        elif rejected:
            # A 401 on listing is the credentials, not the parent: cancels would meet it too.
            self._stop_reason = StopReason.UNAUTHENTICATED
            self._fatal_detail = f"HTTP 401 listing {rejected[0]}"
        return resolver.stats.selected

    def _as_journaled(self, target: Target) -> Target:
        """The target as the journal knows it: finished earlier (its outcome, not sent again),
        accepted earlier (reconciled, not sent again), or new."""
        journal = self.journal
        if journal is None:
            return target
        status = journal.state.status(target.name)
        if status == "done":
            earlier = journal.state.outcomes[target.name]
            details = {**earlier.details, "from_journal": True}
            return Target(
                target.name, result=OperationResult(earlier.name, earlier.outcome, details)
            )
        if status == "accepted":
            return Target(target.name, accepted_before=True)
        return target

    def _drain(self) -> Drain | None:
        """The engine's input when draining until quiet (``until_quiet``), else None."""
        config = self.config
        if config.until_quiet is None or self.resolver is None:
            return None
        self.drain = Drain(
            self.client,
            self.resolver,
            self._listed,
            self._spool,
            until_quiet=config.until_quiet,
            rate=config.rate,
            prepare=self._as_journaled,
            filter_expr=config.filter,
            page_size=config.list_page_size,
            max_operations=config.max_operations,
            journal=self.journal,
        )
        return self.drain

    async def execute(self, emit: Emit) -> None:
        """Cancel and reconcile every resolved target, passing each result to ``emit``.

        Every target gets exactly one result, whatever fails: if the engine raises (the
        credentials cannot be refreshed mid-run, say), the targets it had not reported yet are
        reported here, and then the error is raised, taken out of its exception group.
        """
        config = self.config
        if config.dry_run or self._stop_reason is not None:
            reason = self._stop_reason or "dry_run"
            for target in self._spool:
                if target.result is not None:
                    await emit(target.result)
                else:
                    # What is running, as the listing (or gcloud's JSON) showed it.
                    details = {"reason": reason, **listing_fields(target.listed)}
                    await emit(OperationResult(target.name, Outcome.NOT_ATTEMPTED, details))
            return
        options = EngineOptions(
            concurrency=config.concurrency,
            deadline=config.deadline,
            reconcile=config.reconcile,
            poll_initial=config.poll_initial,
            poll_max=config.poll_max,
            grace=config.grace,
        )
        self.engine = Engine(self.client, options, journal=self.journal, clock=run_clock())
        drain = self._drain()
        if drain is not None:
            emit = drain.emit_through(emit)
        ledger = _Ledger(drain or self._spool, emit, on_exhausted=self._taken_all)
        try:
            await self.engine.run(ledger.source(), ledger.emit)
        except BaseException as exc:
            error = unwrap(exc)
            if not isinstance(error, Exception):
                raise  # cancelled from outside: the caller is leaving, not the run failing
            self.failure = error
            reason = _reason_for(error)
            if isinstance(reason, StopReason):
                self._stop_reason = reason
            self.client.stop()
            await ledger.settle_rest(reason)
            raise error from None
        finally:
            if drain is not None:
                await drain.close()
        if drain is not None:
            # Stopped mid-drain: the first selection's targets never taken are reported here.
            await ledger.settle_rest(self.engine.stop_reason or StopReason.INTERRUPTED)

    def _taken_all(self) -> None:
        self.all_taken = True

    def meta(self) -> dict[str, Any]:
        """Run-level facts for the report (never a token)."""
        meta = run_meta(
            self.config,
            self.client,
            started=self._started,
            resolver=self.resolver,
            engine=self.engine,
            stopped=self.stop_reason,
        )
        if "selection" in meta:
            selection = meta["selection"]
            selection["invalid"] = self.invalid
            if self.config.until_quiet is not None:
                # Listing passes in all (the first one included), and what the later ones found.
                drained = self.drain.status if self.drain is not None else None
                selection["passes"] = 1 + (drained.passes if drained else 0)
                selection["appeared"] = drained.appeared if drained else 0
                if drained is not None:
                    selection["drain"] = drained.to_json()
        meta["identity"] = self.identity_text()
        meta["places"] = self.places
        return meta


def _reason_for(error: Exception) -> StopReason | str:
    if isinstance(error, CredentialsError):
        return StopReason.UNAUTHENTICATED
    if isinstance(error, RecordingError):
        return StopReason.JOURNAL_FAILED
    if isinstance(error, BulkCancelError):
        return str(error)[:200]
    return "internal_error"


class _Ledger:
    """The targets the engine has taken and not yet reported.

    Normally empty at the end. If the engine fails, what it held is reported from here: the
    targets it never took as ``not_attempted``, those it took as ``error`` (their cancel may
    have been sent, so "not attempted" would be untrue). Bounded by the engine's own limit on
    unsettled operations, so memory stays flat. A drain (an async input) is passed on as one.
    """

    def __init__(
        self,
        targets: Iterable[Target] | Drain,
        emit: Emit,
        *,
        on_exhausted: Callable[[], None],
    ) -> None:
        self._drain: Drain | None = None
        self._targets: Iterator[Target] = iter(())
        if isinstance(targets, Drain):
            self._drain = targets
        else:
            self._targets = iter(targets)
        self._emit = emit
        self._open: dict[str, None] = {}
        self._on_exhausted = on_exhausted

    def source(self) -> Iterable[Target] | AsyncIterable[Target]:
        """What the engine consumes: the targets, each noted as taken on its way."""
        return self._from_drain(self._drain) if self._drain is not None else self._from_targets()

    def _from_targets(self) -> Iterator[Target]:
        for target in self._targets:
            yield self._take(target)
        self._on_exhausted()

    async def _from_drain(self, drain: Drain) -> AsyncIterator[Target]:
        async for target in drain:
            yield self._take(target)
        self._on_exhausted()

    def _take(self, target: Target) -> Target:
        if target.result is None:
            self._open[target.name] = None
        return target

    async def emit(self, result: OperationResult) -> None:
        self._open.pop(result.name, None)
        await self._emit(result)

    async def settle_rest(self, reason: StopReason | str) -> None:
        for name in list(self._open):
            del self._open[name]
            message = "the run stopped before this operation settled; its cancel may have been sent"
            await self._emit(
                OperationResult(name, Outcome.ERROR, {"reason": reason, "message": message})
            )
        rest = self._targets
        if self._drain is not None:
            await self._drain.flush()
            rest = self._drain.unconsumed()
        for target in rest:
            if target.result is not None:
                await self._emit(target.result)
            else:
                details = {"reason": reason}
                await self._emit(OperationResult(target.name, Outcome.NOT_ATTEMPTED, details))


def check_parents_or_raise(parents: Iterable[str]) -> tuple[str, ...]:
    from bulkcancel._names import InvalidNameError

    try:
        return tuple(check_parents(parents))
    except InvalidNameError as exc:
        raise ConfigError(f"bad --parent: {exc.reason}") from exc
