"""One run, end to end, shared by the library and the CLI: configure, resolve, execute.

Split in phases because the CLI must stop between them: resolution counts the targets (for the
prompt and ``--max-operations``) before a single cancel is sent.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from bulkcancel._auth import (
    TokenSource,
    anonymous_source,
    credentials_source,
    default_source,
    static_token_source,
)
from bulkcancel._client import OperationsClient
from bulkcancel._engine import Emit, Engine, EngineOptions, ReconcileMode
from bulkcancel._errors import ConfigError
from bulkcancel._journal import Journal
from bulkcancel._limits import RateGovernor
from bulkcancel._models import OperationResult, Outcome, Target
from bulkcancel._sources import Resolver, Selection, check_parents, resolve_parents
from bulkcancel._transport import AiohttpTransport, Transport, check_endpoint

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

DEFAULT_ENDPOINT = "https://clouddeploy.googleapis.com"
_VERSION = re.compile(r"[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything that shapes a run. Defaults are the contract's."""

    endpoint: str = DEFAULT_ENDPOINT
    api_version: str = "v1"
    token: str | None = None
    credentials: Credentials | None = None
    anonymous: bool = False
    quota_project: str | None = None
    rate: float = 50.0
    concurrency: int = 32
    deadline: float = 120.0
    reconcile: ReconcileMode = ReconcileMode.AUTO
    parents: tuple[str, ...] = ()
    filter: str | None = None
    list_page_size: int = 0
    #: the service lists ``locations/-`` itself; otherwise bulkcancel fans out over locations.
    dash_ok: bool = False
    selection: Selection = field(default_factory=Selection)
    dry_run: bool = False
    journal: str | None = None
    request_timeout: float = 30.0
    poll_initial: float = 0.5
    poll_max: float = 10.0
    grace: float = 5.0
    seed: int | None = None

    def validate(self) -> None:
        if not self.rate > 0:
            raise ConfigError("--rate must be a positive number")
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if self.deadline < 0:
            raise ConfigError("--deadline must not be negative")
        if self.list_page_size < 0:
            raise ConfigError("page size must not be negative")
        # Usually "v1"; some APIs put more in the prefix ("dns/v1", "v1/admin").
        if not _VERSION.fullmatch(self.api_version):
            raise ConfigError(f"bad API version {self.api_version!r}")


async def make_tokens(config: RunConfig) -> TokenSource:
    if config.anonymous:
        return anonymous_source(config.quota_project)
    if config.token is not None:
        return static_token_source(config.token, config.quota_project)
    if config.credentials is not None:
        return credentials_source(config.credentials, config.quota_project)
    return await default_source(config.quota_project)


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
        self._started = time.time()
        self._parents = check_parents_or_raise(config.parents)

    async def __aenter__(self) -> BulkRun:
        config = self.config
        # Refuse an unsafe endpoint before looking for credentials or opening any connection.
        endpoint = check_endpoint(config.endpoint, sends_credentials=not config.anonymous)
        try:
            tokens = self._tokens or await make_tokens(config)
            transport = self._transport
            if transport is None:
                transport = await self._stack.enter_async_context(
                    AiohttpTransport(
                        session=self._session,
                        concurrency=config.concurrency,
                        timeout=config.request_timeout,
                    )
                )
            self.client = OperationsClient(
                transport,
                endpoint=endpoint,
                api_version=config.api_version,
                tokens=tokens,
                governor=RateGovernor(config.rate),
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

    @property
    def spool(self) -> Iterable[Target]:
        """The resolved targets, in input order (iterating re-reads the spool)."""
        return self._spool

    async def resolve(self, names: Iterable[str] = ()) -> int:
        """Validate, de-duplicate and select every target; list parents. Sends no cancel."""
        journal = self.journal

        def on_target(target: Target) -> None:
            if journal is not None:
                status = journal.state.status(target.name)
                if status == "done":
                    earlier = journal.state.outcomes[target.name]
                    details = {**earlier.details, "from_journal": True}
                    target = Target(
                        target.name, result=OperationResult(earlier.name, earlier.outcome, details)
                    )
                elif status == "accepted":
                    target = Target(target.name, accepted_before=True)
            self._spool.add(target)

        def on_result(result: OperationResult) -> None:
            self._spool.add(Target(result.name, result=result))

        self.resolver = resolver = Resolver(self.config.selection, on_target, on_result)
        for raw in names:
            resolver.add_name(raw)
        if self._parents:
            await resolve_parents(
                self.client,
                self._parents,
                resolver,
                filter_expr=self.config.filter,
                page_size=self.config.list_page_size,
                dash_ok=self.config.dash_ok,
            )
        return resolver.stats.selected

    async def execute(self, emit: Emit) -> None:
        """Cancel and reconcile every resolved target, passing each result to ``emit``."""
        config = self.config
        if config.dry_run:
            for target in self._spool:
                if target.result is not None:
                    await emit(target.result)
                else:
                    await emit(
                        OperationResult(target.name, Outcome.NOT_ATTEMPTED, {"reason": "dry_run"})
                    )
            return
        options = EngineOptions(
            concurrency=config.concurrency,
            deadline=config.deadline,
            reconcile=config.reconcile,
            poll_initial=config.poll_initial,
            poll_max=config.poll_max,
            grace=config.grace,
        )
        self.engine = Engine(self.client, options, journal=self.journal)
        await self.engine.run(self._spool, emit)

    def meta(self) -> dict[str, Any]:
        """Run-level facts for the report (never a token)."""
        config = self.config
        stats = self.client.stats
        finished = time.time()
        processed = self.resolver.stats.selected if self.resolver else 0
        meta: dict[str, Any] = {
            "endpoint": config.endpoint,
            "api_version": config.api_version,
            "arguments": {
                "rate": config.rate,
                "concurrency": config.concurrency,
                "deadline": config.deadline,
                "reconcile": config.reconcile.value,
                "parents": list(config.parents),
                "filter": config.filter,
                "dry_run": config.dry_run,
                "quota_project": config.quota_project,
                "journal": config.journal,
                "credentials": "anonymous"
                if config.anonymous
                else "token"
                if config.token is not None
                else "credentials"
                if config.credentials is not None
                else "application_default",
            },
            "started_at": _iso(self._started),
            "finished_at": _iso(finished),
            "duration_seconds": round(finished - self._started, 3),
            "requests": {
                **stats.requests,
                "total": stats.total,
                "retries": stats.retries,
                "throttled": stats.throttled,
                "per_operation": round(stats.total / processed, 3) if processed else 0.0,
            },
            "rates": self.client.rates(),
        }
        if self.resolver is not None:
            rs = self.resolver.stats
            meta["selection"] = {
                "given": rs.given,
                "listed": rs.listed,
                "selected": rs.selected,
                "skipped": dict(rs.skipped),
            }
        if self.engine is not None:
            es = self.engine.stats
            meta["reconcile"] = {
                "sweeps": es.sweeps,
                "sweep_pages": es.sweep_pages,
                "settled_by_list": es.settled_by_list,
                "list_disabled": es.list_disabled,
            }
            meta["stopped"] = self.engine.stop_reason
        return meta


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def check_parents_or_raise(parents: Iterable[str]) -> tuple[str, ...]:
    from bulkcancel._names import InvalidNameError

    try:
        return tuple(check_parents(parents))
    except InvalidNameError as exc:
        raise ConfigError(f"bad --parent: {exc.reason}") from exc
