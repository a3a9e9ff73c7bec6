"""The library entry points: ``cancel_operations`` and its streaming form ``stream_operations``.

Both take the same explicit, typed, keyword-only parameters (a typo is a ``TypeError`` naming
the keyword, and a type checker sees it first). Errors are raised as themselves, never wrapped in
an ``ExceptionGroup``: ``except bulkcancel.CredentialsError`` catches a credentials failure
whether it happens before the first request or in the middle of the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import anyio

from bulkcancel._config import DEFAULT_ENDPOINT, RunConfig
from bulkcancel._engine import ReconcileMode
from bulkcancel._errors import ConfigError, unwrap
from bulkcancel._models import OperationResult, Report
from bulkcancel._names import DEFAULT_RULES, NameRules
from bulkcancel._run import BulkRun
from bulkcancel._sources import Selection
from bulkcancel._transport import Transport

if TYPE_CHECKING:
    from google.auth.credentials import Credentials


def _run_config(args: dict[str, Any]) -> RunConfig:
    """The run's configuration from a public function's arguments (its ``locals()``), so both
    entry points take exactly the same keywords without spelling the mapping out twice."""
    if isinstance(args["names"], str | bytes):
        raise ConfigError(
            "names must be an iterable of operation names (a list, a generator), not one "
            "string: wrap a single name in a list"
        )
    try:
        reconcile = ReconcileMode(args["reconcile"])
    except ValueError:
        raise ConfigError(
            f"reconcile must be 'get', 'list' or 'auto', not {args['reconcile']!r}"
        ) from None
    if isinstance(args["parents"], str):
        raise ConfigError("parents must be an iterable of parents, not one string")
    return RunConfig(
        endpoint=args["endpoint"],
        api_version=args["api_version"],
        token=args["token"],
        credentials=args["credentials"],
        anonymous=args["anonymous"],
        quota_project=args["quota_project"],
        rate=args["rate"],
        concurrency=args["concurrency"],
        deadline=args["deadline"],
        reconcile=reconcile,
        parents=tuple(args["parents"]),
        filter=args["filter"],
        list_page_size=args["page_size"],
        selection=Selection(rules=args["name_rules"]),
        dry_run=args["dry_run"],
        journal=args["journal"],
        request_timeout=args["request_timeout"],
        poll_initial=args["poll_initial"],
        poll_max=args["poll_max"],
        grace=args["grace"],
        seed=args["seed"],
        until_quiet=args["until_quiet"],
    )


@asynccontextmanager
async def stream_operations(
    names: Iterable[str] = (),
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    api_version: str = "v1",
    token: str | None = None,
    credentials: Credentials | None = None,
    anonymous: bool = False,
    quota_project: str | None = None,
    rate: float = 50.0,
    concurrency: int = 32,
    deadline: float = 120.0,
    parents: Iterable[str] = (),
    filter: str | None = None,
    reconcile: Literal["get", "list", "auto"] = "auto",
    name_rules: NameRules = DEFAULT_RULES,
    journal: str | None = None,
    dry_run: bool = False,
    page_size: int = 0,
    request_timeout: float = 30.0,
    poll_initial: float = 0.5,
    poll_max: float = 10.0,
    grace: float = 5.0,
    seed: int | None = None,
    until_quiet: float | None = None,
    session: aiohttp.ClientSession | None = None,
    transport: Transport | None = None,
) -> AsyncIterator[AsyncIterator[OperationResult]]:
    """Cancel operations and yield each result as it settles.

    ::

        async with bulkcancel.stream_operations(names, token=t) as results:
            async for result in results:
                print(result.name, result.outcome)

    A context manager rather than a bare async generator so that the run's task group lives
    in the caller's task (structured concurrency). Leaving the block before the stream ends
    aborts the run: operations not yet settled are not reported. Takes the same parameters as
    :func:`cancel_operations`.
    """
    config = _run_config(locals())
    send, receive = anyio.create_memory_object_stream[OperationResult](max(1, concurrency))
    try:
        async with BulkRun(config, session=session, transport=transport) as run:
            await run.resolve(names)

            async def produce() -> None:
                async with send:
                    await run.execute(send.send)

            async with anyio.create_task_group() as tg, receive:
                tg.start_soon(produce)
                try:
                    yield receive
                finally:
                    tg.cancel_scope.cancel()
    except Exception as raised:
        error = unwrap(raised)
        if error is raised:
            raise
        raise error from None


async def cancel_operations(
    names: Iterable[str] = (),
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    api_version: str = "v1",
    token: str | None = None,
    credentials: Credentials | None = None,
    anonymous: bool = False,
    quota_project: str | None = None,
    rate: float = 50.0,
    concurrency: int = 32,
    deadline: float = 120.0,
    parents: Iterable[str] = (),
    filter: str | None = None,
    reconcile: Literal["get", "list", "auto"] = "auto",
    name_rules: NameRules = DEFAULT_RULES,
    journal: str | None = None,
    dry_run: bool = False,
    page_size: int = 0,
    request_timeout: float = 30.0,
    poll_initial: float = 0.5,
    poll_max: float = 10.0,
    grace: float = 5.0,
    seed: int | None = None,
    until_quiet: float | None = None,
    session: aiohttp.ClientSession | None = None,
    transport: Transport | None = None,
) -> Report:
    """Cancel every named operation (and every operation under ``parents``), reconcile each
    one, and return the report: one record per target, totals by outcome.

    Credentials: ``token`` (a static access token), ``credentials`` (google-auth), or
    ``anonymous=True``; with none of them, Application Default Credentials. Opens and closes its
    own HTTP session unless given one.

    ``reconcile`` reads accepted cancels back by GET per operation, by listing their parent, or
    ``"auto"`` (list where many share a parent). ``journal`` is a path for durable progress: a
    rerun with it resumes. ``dry_run`` resolves and validates, sends no cancel. ``deadline``,
    ``request_timeout``, ``poll_initial``, ``poll_max`` and ``grace`` are seconds; ``seed``
    makes retry jitter reproducible.

    ``until_quiet`` (seconds, with ``parents``) drains: after the first listing's operations,
    the parents are listed again and again, through the same filter and selection, and every
    operation that newly appears is cancelled as soon as it is seen, until a full pass has
    found nothing new for that long. The report covers every operation acted on, each once;
    ``report.meta["selection"]`` says how many passes ran and how many operations appeared.

    Raises ``ConfigError`` for bad arguments (a single string for ``names``, a rate that is not
    a finite positive number, ...) or an unsafe endpoint, and ``CredentialsError`` when no
    credentials can be found or refreshed, before or during the run. A run that the server
    stops as a whole (credentials rejected, endpoint unreachable or wrong) returns its report,
    with the reason in ``report.meta["stopped"]`` and the unsent targets ``not_attempted``.
    Every per-operation failure is a record in the report, never an exception.
    """
    config = _run_config(locals())
    report = Report()

    async def collect(result: OperationResult) -> None:
        report.add(result)

    try:
        async with BulkRun(config, session=session, transport=transport) as run:
            await run.resolve(names)
            await run.execute(collect)
            report.meta.update(run.meta())
    except Exception as raised:
        error = unwrap(raised)
        if error is raised:
            raise
        raise error from None
    return report
