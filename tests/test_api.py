"""The library surface: exactly the intended names, both entry points, against the real fake."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

import bulkcancel
from bulkcancel.testing import Behavior, FakeOperationsServer, populate
from tests._e2e import service_account_key, token_endpoint

PARENT = "projects/p/locations/l"

INTENDED = {
    "ANY_SHAPE",
    "CLOUD_DEPLOY_PATTERNS",
    "DEFAULT_ENDPOINT",
    "AuthenticationRejectedError",
    "BulkCancelError",
    "ConfigError",
    "CredentialsError",
    "InvalidNameError",
    "JournalMismatchError",
    "NameRules",
    "OperationResult",
    "Outcome",
    "Report",
    "UnsafeEndpointError",
    "__version__",
    "cancel_operations",
    "stream_operations",
}


def test_the_public_names_are_exactly_the_intended_ones() -> None:
    assert set(bulkcancel.__all__) == INTENDED
    public = {n for n in dir(bulkcancel) if not n.startswith("_")} | {"__version__"}
    modules = {n for n in public if inspect.ismodule(getattr(bulkcancel, n))}
    assert public - modules == INTENDED  # nothing else leaks from the package namespace


def test_the_contract_signature() -> None:
    params = inspect.signature(bulkcancel.cancel_operations).parameters
    for name, default in (
        ("endpoint", "https://clouddeploy.googleapis.com"),
        ("token", None),
        ("credentials", None),
        ("rate", 50),
        ("concurrency", 32),
        ("deadline", 120),
    ):
        assert params[name].default == default, name
    assert next(iter(params)) == "names"
    assert inspect.signature(bulkcancel.stream_operations).parameters.keys() == params.keys()
    assert [o.value for o in bulkcancel.Outcome] == [
        "cancelled", "completed_anyway", "unsupported", "not_found", "permission_denied",
        "still_running", "error", "invalid", "not_attempted",
    ]  # fmt: skip


async def test_cancel_operations_reports_every_target_and_leaves_a_given_session_open() -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 20)
    server.add_operation(f"{PARENT}/operations/done", Behavior.ALREADY_DONE)
    targets = [*names, f"{PARENT}/operations/done", "not a name"]
    async with server.serve() as url, aiohttp.ClientSession() as session:
        report = await bulkcancel.cancel_operations(
            targets, endpoint=url, anonymous=True, rate=500, session=session
        )
        assert not session.closed
    assert [r.name for r in report.operations].count(names[0]) == 1
    assert report.totals["cancelled"] == 20
    assert report.totals["completed_anyway"] == 1
    assert report.totals["invalid"] == 1
    assert not report.ok
    assert report.meta["requests"]["total"] == len(server.log)
    assert isinstance(report.operations[0].outcome, str)  # a str-valued enum


async def test_stream_operations_yields_each_result_as_it_settles() -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 15)
    seen: list[str] = []
    async with (
        server.serve() as url,
        bulkcancel.stream_operations(names, endpoint=url, anonymous=True) as results,
    ):
        async for result in results:
            assert result.outcome is bulkcancel.Outcome.CANCELLED
            seen.append(result.name)
    assert sorted(seen) == names


async def test_leaving_the_stream_early_stops_the_run() -> None:
    server = FakeOperationsServer()
    server.latency = 0.05
    names = populate(server, PARENT, 200)
    async with server.serve() as url:
        async with bulkcancel.stream_operations(
            names, endpoint=url, anonymous=True, rate=100
        ) as results:
            async for _ in results:
                break
        await anyio.sleep(0.2)  # requests already on the wire arrive after the server's latency
        sent = len(server.requests("cancel"))
        await anyio.sleep(0.3)
        assert len(server.requests("cancel")) == sent  # nothing more after leaving
    assert sent < len(names)


async def test_bad_arguments_raise_config_error_before_any_request() -> None:
    with pytest.raises(bulkcancel.ConfigError):
        await bulkcancel.cancel_operations([], rate=0, anonymous=True)
    with pytest.raises(bulkcancel.UnsafeEndpointError):
        await bulkcancel.cancel_operations(
            [f"{PARENT}/operations/x"], endpoint="http://example.com", token="t"
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"rate": float("inf")},
        {"rate": "50"},
        {"concurrency": True},
        {"concurrency": 10_000},
        {"deadline": float("nan")},
        {"grace": -1.0},
        {"poll_initial": 0.0},
        {"request_timeout": 0},
        {"page_size": -1},
        {"reconcile": "sometimes"},
        {"parents": "projects/p/locations/l"},
    ],
)
async def test_every_bad_number_or_choice_is_a_config_error(bad: dict[str, object]) -> None:
    with pytest.raises(bulkcancel.ConfigError):
        await bulkcancel.cancel_operations([f"{PARENT}/operations/x"], anonymous=True, **bad)  # type: ignore[arg-type]


async def test_a_string_for_names_is_a_config_error_not_one_name_per_character() -> None:
    with pytest.raises(bulkcancel.ConfigError, match="not one string"):
        await bulkcancel.cancel_operations(f"{PARENT}/operations/x", anonymous=True)
    with pytest.raises(bulkcancel.ConfigError, match="not one string"):
        async with bulkcancel.stream_operations(f"{PARENT}/operations/x", anonymous=True):
            pass


async def test_a_typo_in_a_keyword_names_the_keyword() -> None:
    with pytest.raises(TypeError, match="deadlin"):
        await bulkcancel.cancel_operations([], anonymous=True, deadlin=5)  # type: ignore[call-arg]


async def test_credentials_failing_mid_run_raise_unwrapped(tmp_path: Path) -> None:
    """README: ``except bulkcancel.CredentialsError`` catches it, mid-run too (no group)."""
    from google.oauth2 import service_account

    server = FakeOperationsServer()
    names = populate(server, PARENT, 10)
    async with token_endpoint(succeed=2, expires_in=5) as tokens, server.serve() as url:
        path = service_account_key(tmp_path, tokens.url)
        creds = service_account.Credentials.from_service_account_file(str(path))  # type: ignore[no-untyped-call]
        with pytest.raises(bulkcancel.CredentialsError, match="refresh"):
            await bulkcancel.cancel_operations(
                names, endpoint=url, credentials=creds, concurrency=1
            )
        sent = len(server.requests("cancel"))
        assert sent >= 1  # it did fail mid-run
        tokens.requests = 0  # a fresh key budget: two tokens, then refused again
        seen: list[bulkcancel.OperationResult] = []
        creds = service_account.Credentials.from_service_account_file(str(path))  # type: ignore[no-untyped-call]

        async def stream() -> None:
            async with bulkcancel.stream_operations(
                names, endpoint=url, credentials=creds, concurrency=1
            ) as results:
                async for result in results:
                    seen.append(result)

        with pytest.raises(bulkcancel.CredentialsError, match="refresh"):
            await stream()
    assert len(seen) == len(names)  # every target reported before the error is raised


def test_works_in_a_plain_asyncio_program(tmp_path: Path) -> None:
    """asyncio.run, no anyio in sight: how another tool would embed it."""

    async def main() -> dict[str, int]:
        server = FakeOperationsServer()
        names = populate(server, PARENT, 5)
        async with server.serve() as url:
            report = await bulkcancel.cancel_operations(names, endpoint=url, anonymous=True)
        return report.totals

    assert asyncio.run(main())["cancelled"] == 5


def test_the_example_runs() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "library_example.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "totals:" in done.stdout
    assert "not_found" in done.stdout


async def test_until_quiet_is_typed_and_needs_parents() -> None:
    params = inspect.signature(bulkcancel.cancel_operations).parameters
    assert params["until_quiet"].default is None
    assert params["until_quiet"].kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(bulkcancel.ConfigError, match="--until-quiet needs --parent"):
        await bulkcancel.cancel_operations(
            [f"{PARENT}/operations/x"], anonymous=True, until_quiet=5
        )
    with pytest.raises(bulkcancel.ConfigError, match="--until-quiet"):
        async with bulkcancel.stream_operations(
            parents=[PARENT], anonymous=True, until_quiet=float("nan")
        ):
            pass
