"""The library entry points: ``cancel_operations`` and its streaming form ``stream_operations``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio

from bulkcancel._engine import ReconcileMode
from bulkcancel._models import OperationResult, Report
from bulkcancel._names import DEFAULT_RULES, NameRules
from bulkcancel._run import DEFAULT_ENDPOINT, BulkRun, RunConfig
from bulkcancel._sources import Selection
from bulkcancel._transport import Transport

if TYPE_CHECKING:
    from google.auth.credentials import Credentials


def _config(args: dict[str, Any]) -> RunConfig:
    """The run's configuration from a public function's arguments (its ``locals()``), so both
    entry points take exactly the same keywords without spelling the mapping out twice."""
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
        parents=tuple(args["parents"]),
        filter=args["filter"],
        reconcile=ReconcileMode(args["reconcile"]),
        selection=Selection(rules=args["name_rules"]),
        journal=args["journal"],
        **args["options"],
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
    reconcile: str = "auto",
    name_rules: NameRules = DEFAULT_RULES,
    journal: str | None = None,
    session: aiohttp.ClientSession | None = None,
    transport: Transport | None = None,
    **options: Any,
) -> AsyncIterator[AsyncIterator[OperationResult]]:
    """Cancel operations and yield each result as it settles.

    ::

        async with bulkcancel.stream_operations(names, token=t) as results:
            async for result in results:
                print(result.name, result.outcome)

    A context manager rather than a bare async generator so that the run's task group lives
    in the caller's task (structured concurrency). Leaving the block before the stream ends
    aborts the run: operations not yet settled are not reported.
    """
    config = _config(locals())
    send, receive = anyio.create_memory_object_stream[OperationResult](max(1, concurrency))
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
    reconcile: str = "auto",
    name_rules: NameRules = DEFAULT_RULES,
    journal: str | None = None,
    session: aiohttp.ClientSession | None = None,
    transport: Transport | None = None,
    **options: Any,
) -> Report:
    """Cancel every named operation (and every operation under ``parents``), reconcile each
    one, and return the report: one record per target, totals by outcome.

    Credentials: ``token`` (a static access token), ``credentials`` (google-auth), or
    ``anonymous=True``; with none of them, Application Default Credentials. Opens and closes its
    own HTTP session unless given one. Raises ``ConfigError`` for bad arguments or an unsafe
    endpoint and ``CredentialsError`` when no credentials can be found; every per-operation
    failure is a record in the report, never an exception.
    """
    config = _config(locals())
    report = Report()

    async def collect(result: OperationResult) -> None:
        report.add(result)

    async with BulkRun(config, session=session, transport=transport) as run:
        await run.resolve(names)
        await run.execute(collect)
        report.meta.update(run.meta())
    return report
