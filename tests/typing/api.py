"""The public API as a user writes it, checked by mypy and never run (stamina's tests/typing).

Each ``# type: ignore[...]`` marks a call a user's type checker must reject; mypy's
``warn_unused_ignores`` (strict) fails if one of them ever type-checks.
"""

from __future__ import annotations

from typing import assert_type

import aiohttp

import bulkcancel


async def whole_job(names: list[str]) -> int:
    report = await bulkcancel.cancel_operations(
        names,
        endpoint=bulkcancel.DEFAULT_ENDPOINT,
        token="ya29.x",
        rate=50,
        concurrency=32,
        deadline=120.0,
        reconcile="list",
        journal="run.journal",
        request_timeout=10.0,
    )
    assert_type(report, bulkcancel.Report)
    assert_type(report.totals["cancelled"], int)
    assert_type(report.ok, bool)
    for result in report.operations:
        assert_type(result, bulkcancel.OperationResult)
        assert_type(result.name, str)
        if result.outcome is bulkcancel.Outcome.CANCELLED:
            assert_type(result.outcome.value, str)
    return 0 if report.ok else 3


async def streaming(session: aiohttp.ClientSession) -> None:
    async with bulkcancel.stream_operations(
        (f"projects/p/locations/l/operations/{i}" for i in range(3)),
        parents=["projects/p/locations/l"],
        anonymous=True,
        session=session,
        name_rules=bulkcancel.NameRules(bulkcancel.CLOUD_DEPLOY_PATTERNS),
    ) as results:
        async for result in results:
            assert_type(result, bulkcancel.OperationResult)


async def errors_a_user_catches() -> None:
    try:
        await bulkcancel.cancel_operations(["projects/p/locations/l/operations/o"])
    except bulkcancel.CredentialsError as exc:
        assert_type(exc, bulkcancel.CredentialsError)
    except bulkcancel.ConfigError as exc:
        assert_type(exc, bulkcancel.ConfigError)
    except bulkcancel.BulkCancelError:
        pass


async def mistakes_a_type_checker_catches() -> None:
    await bulkcancel.cancel_operations([], reconcile="sometimes")  # type: ignore[arg-type]
    await bulkcancel.cancel_operations([], deadlin=5)  # type: ignore[call-arg]
    await bulkcancel.cancel_operations([], rate="fast")  # type: ignore[arg-type]
    await bulkcancel.cancel_operations(["a"], "https://example.com")  # type: ignore[call-arg]
