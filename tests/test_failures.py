"""Every failure honest: each injected failure ends in the contract's exit code, a complete
report, one clear line on stderr, and no traceback. "internal error" is for bugs only."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from bulkcancel import _ui
from bulkcancel._app import EXIT_HELP, drive, guard
from bulkcancel._config import RunConfig
from bulkcancel._engine import Emit, Engine
from bulkcancel._errors import (
    ConfigError,
    CredentialsError,
    JournalError,
    RecordingError,
    ReportError,
)
from bulkcancel._models import OperationResult, Outcome, StopReason, Target
from bulkcancel.testing import FakeOperationsServer, populate
from tests._e2e import (
    CliResult,
    closed_port,
    load_report,
    outcomes,
    run_cli,
    service_account_key,
    token_endpoint,
    write_lines,
)

PARENT = "projects/p/locations/us-central1"
TRACEBACKS = ("Traceback", "ExceptionGroup", "internal error", "TaskGroup")


def one_clear_line(stderr: str, needle: str) -> None:
    """The failure is said once, in one line that contains ``needle``, with no stack."""
    for word in TRACEBACKS:
        assert word not in stderr, stderr
    lines = [line for line in stderr.splitlines() if needle in line]
    assert len(lines) == 1, stderr


def complete(report: dict[str, Any], names: Iterable[str]) -> None:
    """One record per target, totals that add up, every outcome key present."""
    assert set(outcomes(report)) == set(names)
    assert sum(report["totals"].values()) == len(report["operations"])
    assert set(report["totals"]) == {o.value for o in Outcome}


# -- check before sending ------------------------------------------------------------------------


async def test_report_directory_missing_is_refused_before_any_request(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 5)
    async with server.serve() as url:
        result = await run_cli(
            "cancel", *names, "--anonymous", "--endpoint", url, "--yes",
            "--report", str(tmp_path / "missing" / "r.json"),
        )  # fmt: skip
    assert result.exit_code == 2
    one_clear_line(result.stderr, "does not exist")
    assert server.log == []  # not even a listing or a GET


async def test_journal_directory_missing_is_refused_before_any_request(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 3)
    async with server.serve() as url:
        result = await run_cli(
            "cancel", *names, "--anonymous", "--endpoint", url, "-y",
            "--journal", str(tmp_path / "missing" / "run.journal"),
        )  # fmt: skip
    assert result.exit_code == 2
    one_clear_line(result.stderr, "--journal")
    assert server.log == []


# -- once anything was sent, the report is written -----------------------------------------------


async def test_report_directory_removed_mid_run_falls_back_next_to_the_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 30)
    reports, journals = tmp_path / "reports", tmp_path / "journals"
    reports.mkdir()
    journals.mkdir()
    wanted = reports / "r.json"

    def remove_reports_dir(result: OperationResult) -> None:
        if reports.exists():
            reports.rmdir()  # after the up-front check, while cancels are being sent

    async with server.serve() as url:
        config = RunConfig(
            endpoint=url, anonymous=True, rate=1000, journal=str(journals / "run.journal")
        )
        options = _ui.Options(yes=True, quiet=True, report_path=str(wanted))
        code = await drive(config, names, options, observe=remove_reports_dir)
    assert code == 6
    err = capsys.readouterr().err
    one_clear_line(err, "could not write the report")
    (fallback,) = journals.glob("bulkcancel-report-*.json")
    assert str(fallback) in err.replace("\n", "")
    report = load_report(fallback)
    complete(report, names)
    assert report["totals"]["cancelled"] == 30
    assert report["exit_code"] == 6
    assert report["report_fallback"]["wanted"] == str(wanted)


async def test_journal_failing_mid_run_settles_reports_and_exits_6(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The journal's file is removed once the run has started (the journal notices at its next
    write, the first cancel's intent): the run stops sending, settles what it has, writes a
    complete report and exits 6 with one line."""
    server = FakeOperationsServer()
    names = ["not an operation name", *populate(server, PARENT, 60)]
    journal = tmp_path / "run.journal"
    report_path = tmp_path / "r.json"

    def remove_the_journal(result: OperationResult) -> None:
        # The invalid line settles first, before any cancel is sent.
        if journal.exists():
            journal.unlink()

    async with server.serve() as url:
        config = RunConfig(
            endpoint=url, anonymous=True, rate=1000, concurrency=4, journal=str(journal)
        )
        options = _ui.Options(yes=True, quiet=True, report_path=str(report_path))
        code = await drive(config, names, options, observe=remove_the_journal)
    assert code == 6
    err = capsys.readouterr().err
    assert "journal" in err and "removed or replaced" in err and "Traceback" not in err
    report = load_report(report_path)
    complete(report, names)
    assert report["exit_code"] == 6
    assert report["stopped"] == "journal_failed"
    assert report["totals"]["not_attempted"] >= 60 - 4  # at most the first intents were in flight
    assert sum(op.accepted_cancels for op in server.operations()) == 0  # no intent was durable


async def test_closed_stdout_stops_stdout_only(tmp_path: Path) -> None:
    """``--format jsonl | head -1``: the run goes on, the report is whole, the exit code is the
    run's own (not 1, not 120 from a failed flush at exit)."""
    server = FakeOperationsServer()
    server.latency = 0.05  # the run outlives the reader by far
    names = populate(server, PARENT, 40)
    names_file = write_lines(tmp_path / "names.txt", names)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        args = [
            sys.executable, "-m", "bulkcancel", "cancel", "--names-file", str(names_file),
            "--anonymous", "--endpoint", url, "--yes", "--format", "jsonl", "--quiet",
            "--concurrency", "2", "--report", str(report_path),
        ]  # fmt: skip
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        first = await anyio.to_thread.run_sync(process.stdout.readline)
        process.stdout.close()  # the reader goes away, as `head -1` does
        with anyio.fail_after(60):
            while process.poll() is None:
                await anyio.sleep(0.05)
        stderr = process.stderr.read().decode()
    assert json.loads(first)["name"] in names
    assert process.returncode == 0, stderr
    for word in (*TRACEBACKS, "BrokenPipe", "Exception ignored"):
        assert word not in stderr, stderr
    report = load_report(report_path)
    complete(report, names)
    assert report["totals"]["cancelled"] == 40
    assert report["stdout_closed"] is True  # the pipe did close while the run went on


async def test_credentials_failing_to_refresh_mid_run_exit_4_with_a_complete_report(
    tmp_path: Path,
) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 20)
    report_path = tmp_path / "r.json"
    # Tokens that expire at once, from a key that is revoked after three of them.
    async with token_endpoint(succeed=3, expires_in=5) as tokens, server.serve() as url:
        key = service_account_key(tmp_path, tokens.url)
        result = await run_cli(
            "cancel", *names, "--endpoint", url, "--yes", "--concurrency", "1",
            "--report", str(report_path),
            env={"GOOGLE_APPLICATION_CREDENTIALS": str(key), "BULKCANCEL_ACCESS_TOKEN": None},  # type: ignore[dict-item]
        )  # fmt: skip
    assert result.exit_code == 4, result.stderr
    one_clear_line(result.stderr, "could not refresh credentials")
    assert server.requests("cancel")  # mid-run: cancels were sent before the key was revoked
    report = load_report(report_path)
    complete(report, names)
    assert report["exit_code"] == 4
    assert report["stopped"] == "unauthenticated"
    assert report["totals"]["not_attempted"] > 0


async def test_401_on_listing_is_exit_4_and_sends_no_cancel(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    server.valid_tokens = {"the-right-token"}
    listed = populate(server, PARENT, 5)
    given = f"{PARENT}/operations/given"
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", given, "--parent", PARENT, "--token", "a-wrong-token", "--endpoint", url,
            "--yes", "--report", str(report_path),
        )  # fmt: skip
    assert result.exit_code == 4, result.stderr
    one_clear_line(result.stderr, "rejected the credentials")
    assert server.requests("cancel") == []
    report = load_report(report_path)
    complete(report, [given, PARENT])
    assert outcomes(report)[given] == "not_attempted"
    assert report["operations"][0]["reason"] == "unauthenticated"
    assert not set(listed) & set(outcomes(report))


# -- fail fast when the whole run is doomed (needs the client's fatal detection) -----------------


async def test_dead_endpoint_stops_early_with_exit_5(tmp_path: Path) -> None:
    port = closed_port()
    names = [f"{PARENT}/operations/op-{i}" for i in range(12)]  # 3x the workers
    report_path = tmp_path / "r.json"
    result = await run_cli(
        "cancel", *names, "--anonymous", "--endpoint", f"http://127.0.0.1:{port}", "--yes",
        "--concurrency", "4", "--report", str(report_path),
    )  # fmt: skip
    assert result.exit_code == 5, result.stderr
    report = load_report(report_path)
    complete(report, names)
    assert report["stopped"] == "unreachable"
    # Said once in the closing line; a call that ran out of tries first (its tries can end
    # before the run's first 16 attempts are in) is an `error` and its row names the endpoint.
    needle = f"127.0.0.1:{port}"
    errors = [r for r in report["operations"] if r["outcome"] == "error"]
    if errors:
        lines = [line for line in result.stderr.splitlines() if needle in line]
        assert len(lines) == 2 and "no answer from" in lines[-1], result.stderr
    else:
        one_clear_line(result.stderr, needle)
    # Those never taken (all but a few in flight when it stopped) carry the reason.
    reasons = [r.get("reason") for r in report["operations"] if r["outcome"] == "not_attempted"]
    assert reasons.count("unreachable") >= len(names) - 2 * 4


async def test_wrong_endpoint_path_stops_early_with_exit_5(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 100)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", *names, "--anonymous", "--endpoint", f"{url}/v1", "--yes",
            "--concurrency", "4", "--report", str(report_path),
        )  # fmt: skip
    assert result.exit_code == 5, result.stderr
    one_clear_line(result.stderr, f"{url}/v1")
    report = load_report(report_path)
    complete(report, names)
    assert report["stopped"] == "wrong_endpoint"
    assert len(server.log) < len(names)  # stopped within a few requests, not one per name
    assert all(op.accepted_cancels == 0 for op in server.operations())


async def cancel_against(
    aiohttp_server: AiohttpServer, handler: Any, tmp_path: Path, *args: str
) -> tuple[CliResult, dict[str, Any]]:
    """``bulkcancel cancel ARGS`` against a loopback server that answers every path under
    ``/v1/`` with ``handler`` (the path in ``request.match_info["path"]``): the CLI's result
    and its report."""
    app = web.Application()
    app.router.add_route("*", "/v1/{path:.+}", handler)
    server = await aiohttp_server(app)
    report_path = tmp_path / "r.json"
    result = await run_cli(
        "cancel", *args, "--anonymous", "--yes", "--report", str(report_path),
        "--endpoint", str(server.make_url("")).rstrip("/"),
    )  # fmt: skip
    return result, load_report(report_path)


async def test_an_odd_error_envelope_is_read_not_a_crash(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """A refusal whose ``details`` (or legacy ``errors``) is not a list crashed the whole run
    (exit 1, every operation an internal error, the unsent ones too); it is read for what it
    says: FAILED_PRECONDITION on a running operation is unsupported, PERMISSION_DENIED is
    permission_denied."""
    odd = {
        "p": (400, "FAILED_PRECONDITION", {"details": 5}),
        "d": (403, "PERMISSION_DENIED", {"errors": 7}),
    }

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["path"]
        if name.endswith(":cancel"):
            status, code, extra = odd[name.rsplit("/", 1)[1][0]]
            error = {"code": status, "status": code, "message": "odd", **extra}
            return web.json_response({"error": error}, status=status)
        return web.json_response({"name": name})  # running

    names = [f"{PARENT}/operations/{kind}-{i}" for kind in ("p", "d") for i in range(3)]
    result, report = await cancel_against(aiohttp_server, handler, tmp_path, *names)
    assert result.exit_code == 3, result.stderr
    assert "internal error" not in result.stderr
    got = outcomes(report)
    assert got == {n: "unsupported" if "/p-" in n else "permission_denied" for n in names}


async def test_a_400_that_names_no_status_is_read_back_by_get(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """A 400 whose envelope names no canonical status (or whose body is plain text) may be
    FAILED_PRECONDITION on an operation that already finished: it ended ``error`` with no GET.
    The GET decides now: done is ``completed_anyway``; running stays ``error`` (nothing said
    the service cannot cancel), with the refusal kept in the record."""

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["path"]
        leaf = name.split(":")[0].rsplit("/", 1)[1]
        if name.endswith(":cancel"):
            if leaf.startswith("t-"):
                return web.Response(status=400, text="Bad Request")
            error = {"code": 400, "message": "Operation has already completed."}
            return web.json_response({"error": error}, status=400)
        if leaf.startswith("r-"):
            return web.json_response({"name": name})  # running
        return web.json_response({"name": name, "done": True, "response": {}})

    names = [f"{PARENT}/operations/{kind}-{i}" for kind in ("d", "t", "r") for i in range(2)]
    result, report = await cancel_against(aiohttp_server, handler, tmp_path, *names)
    assert result.exit_code == 3, result.stderr
    assert outcomes(report) == {n: "error" if "/r-" in n else "completed_anyway" for n in names}
    records = {r["name"]: r for r in report["operations"]}
    assert records[f"{PARENT}/operations/r-0"]["cancel_error"]["http_status"] == 400
    assert records[f"{PARENT}/operations/d-0"]["already_done"] is True


async def test_a_500_internal_or_a_409_aborted_in_googles_envelope_is_retried(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """A 500 INTERNAL (or UNKNOWN) in Google's envelope was final where the same 500 as plain
    text was retried: one at the first GET after an accepted cancel settled the operation as
    ``error`` without a second look. Each call here repeats safely, so they are retried, and
    an ABORTED cancel too; the outcomes are the server's."""
    calls: dict[str, int] = {}
    cancelled: set[str] = set()

    def envelope(status: int, code: str) -> web.Response:
        body = {"error": {"code": status, "status": code, "message": "try again"}}
        return web.json_response(body, status=status)

    async def handler(request: web.Request) -> web.Response:
        path = request.match_info["path"]
        calls[path] = calls.get(path, 0) + 1
        name = path.removesuffix(":cancel")
        first = calls[path] == 1
        if path.endswith(":cancel"):
            if first and name.endswith("-0"):
                return envelope(409, "ABORTED")
            cancelled.add(name)
            return web.json_response({})
        if first:
            return envelope(500, "UNKNOWN" if name.endswith("-1") else "INTERNAL")
        if name in cancelled:
            return web.json_response({"name": name, "done": True, "error": {"code": 1}})
        return web.json_response({"name": name})

    names = [f"{PARENT}/operations/op-{i}" for i in range(4)]
    result, report = await cancel_against(aiohttp_server, handler, tmp_path, *names)
    assert result.exit_code == 0, result.stderr
    assert outcomes(report) == dict.fromkeys(names, "cancelled")
    assert calls[f"{names[0]}:cancel"] == 2  # (the ABORTED one was tried again)


@pytest.mark.parametrize("how", ["names", "parent, reconciled by GET", "parent, by listing"])
async def test_a_server_that_names_the_project_by_number_is_understood(
    aiohttp_server: AiohttpServer, tmp_path: Path, how: str
) -> None:
    """Some APIs answer and list with the project's number whatever the request said: every
    operation was an ``error`` ("the server answered for another operation") after its cancel
    was accepted, and a listed parent cancelled nothing ("not under the parent"). The number
    and the ID are one project; requests still go only to the names under what was given."""
    number = "projects/123456789012/locations/l"
    finishes = {"op-0", "op-1"}  # these complete before the cancel lands
    cancelled: set[str] = set()
    paths: list[str] = []

    def operation(op: str) -> dict[str, object]:
        body: dict[str, object] = {"name": f"{number}/operations/{op}"}
        if op in finishes:
            body.update(done=True, response={})
        elif op in cancelled:
            body.update(done=True, error={"code": 1, "message": "cancelled"})
        return body

    async def handler(request: web.Request) -> web.Response:
        path = request.match_info["path"]
        paths.append(path)
        if path.endswith("/operations"):
            return web.json_response({"operations": [operation(f"op-{i}") for i in range(6)]})
        op = path.removesuffix(":cancel").rsplit("/", 1)[1]
        if path.endswith(":cancel"):
            if op not in finishes:
                cancelled.add(op)
            return web.json_response({})
        return web.json_response(operation(op))

    parent = "projects/my-proj/locations/l"
    if how != "names":
        finishes.clear()  # (a listing finds them running)
    names = [f"{parent}/operations/op-{i}" for i in range(6)]
    given = names if how == "names" else ["--parent", parent]
    reconcile = ["--reconcile", "list" if how.endswith("listing") else "get"]
    result, report = await cancel_against(aiohttp_server, handler, tmp_path, *given, *reconcile)
    assert result.exit_code == 0, result.stderr
    expected = {n: "completed_anyway" if n[-4:] in finishes else "cancelled" for n in names}
    assert outcomes(report) == expected
    assert all(p.startswith(parent) for p in paths), paths  # (sent only under what was given)
    if how.endswith("listing"):  # settled from the pages, as listed: not one GET needed
        assert not [p for p in paths if "/operations/" in p and not p.endswith(":cancel")]


@pytest.mark.parametrize(
    ("personality", "rate", "count"),
    [("bucket-small,reads-apart", 20.0, 60), ("bucket-small,reads-apart,429-bare", 50.0, 400)],
    ids=["named", "bare"],
)
async def test_reads_metered_apart_are_paced_apart_and_every_outcome_is_exact(
    tmp_path: Path, personality: str, rate: float, count: int
) -> None:
    """Cloud Batch's shape (``reads-apart``): cancels on one quota, reads on one 2.5x as large.
    Each 429 naming its own, the reads get a pacer of their own at the first such 429; with
    bare 429s (nothing named), once the cancels are refused while the reads all pass. The
    run's outcomes are the server's. (400 names with bare 429s: with 200, on a loaded machine
    the one pacer climbed to the cancels' wall only in the run's last second, and the run
    ended before its cancels were refused enough to tell the two quotas apart: four runs in
    six failed beside three busy loops; none of six with 400.)"""
    server = FakeOperationsServer()
    server.personality(personality, rate=rate)
    names = populate(server, PARENT, count)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", *names, "--anonymous", "--endpoint", url, "--yes", "--rate", "200",
            "--reconcile", "get", "--report", str(report_path),
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = load_report(report_path)
    assert outcomes(report) == dict.fromkeys(names, "cancelled")
    assert any(r.status == 429 and r.kind == "cancel" for r in server.log)
    assert f"{PARENT}|reads" in report["rates"]  # (paced apart: its rate is reported)


# -- the engine failing or stopping: the application side ----------------------------------------


def engine_that(
    *, settle: int, then: BaseException | None = None, stop: StopReason | None = None
) -> Any:
    """An ``Engine.run`` that settles the first ``settle`` targets as cancelled, takes one
    more without settling it, then raises ``then`` (wrapped as anyio would) or stops."""

    async def run(self: Engine, targets: Iterable[Target], emit: Emit) -> None:
        taken = iter(targets)
        for _, target in zip(range(settle), taken, strict=False):
            await emit(OperationResult(target.name, Outcome.CANCELLED))
        next(taken)  # in flight when it fails: its cancel may have been sent
        if then is not None:
            raise ExceptionGroup("unhandled errors in a TaskGroup", [then])  # type: ignore[type-var]
        self.stop_reason = stop
        for target in taken:
            await emit(OperationResult(target.name, Outcome.NOT_ATTEMPTED, {"reason": stop}))

    return run


@pytest.mark.parametrize(
    ("failure", "code", "needle"),
    [
        (CredentialsError("could not refresh credentials: invalid_grant"), 4, "refresh"),
        (JournalError("journal run.journal: No space left on device"), 6, "No space"),
        (OSError(28, "No space left on device"), 6, "No space"),
        (ExceptionGroup("nested", [CredentialsError("token revoked")]), 4, "revoked"),
        (RuntimeError("a bug"), 1, "internal error: RuntimeError: a bug"),
    ],
)
async def test_an_engine_failure_still_reports_every_target(
    failure: Exception,
    code: int,
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(Engine, "run", engine_that(settle=4, then=failure))
    server = FakeOperationsServer()
    names = populate(server, PARENT, 10)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        config = RunConfig(endpoint=url, anonymous=True)
        options = _ui.Options(yes=True, quiet=True, report_path=str(report_path))
        assert await drive(config, names, options) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ExceptionGroup" not in err
    assert len([line for line in err.splitlines() if needle in line]) == 1, err
    report = load_report(report_path)
    complete(report, names)
    assert report["totals"]["cancelled"] == 4
    assert report["totals"]["error"] == 1  # the one in flight: not "not attempted"
    assert report["totals"]["not_attempted"] == 5
    assert report["exit_code"] == code


async def test_journal_failed_stop_is_exit_6(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = StopReason.JOURNAL_FAILED
    monkeypatch.setattr(Engine, "run", engine_that(settle=3, stop=stop))
    names = [f"{PARENT}/operations/op-{i}" for i in range(8)]
    report_path = tmp_path / "r.json"
    config = RunConfig(endpoint="http://127.0.0.1:9", anonymous=True)
    options = _ui.Options(yes=True, quiet=True, report_path=str(report_path))
    assert await drive(config, names, options) == 6
    one_clear_line(capsys.readouterr().err, "journal")
    report = load_report(report_path)
    assert report["stopped"] == "journal_failed"
    assert report["exit_code"] == 6


# -- the exit-code policy ------------------------------------------------------------------------


def raises(error: BaseException) -> Any:
    def body() -> int:
        raise error

    return body


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("--rate must be a finite number"), 2),
        (ExceptionGroup("g", [ExceptionGroup("inner", [ConfigError("bad")])]), 2),
        (CredentialsError("no credentials"), 4),
        (BaseExceptionGroup("g", [asyncio.CancelledError(), CredentialsError("x")]), 4),
        (JournalError("journal write failed"), 6),
        (ReportError("report went elsewhere"), 6),
        (ExceptionGroup("g", [RecordingError("could not record")]), 6),
        (FileNotFoundError(2, "No such file or directory", "names.txt"), 2),
        (KeyboardInterrupt(), 130),
    ],
)
def test_each_known_failure_is_not_an_internal_error(
    error: BaseException, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert guard(raises(error)) == code
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert "ExceptionGroup" not in err


def test_a_bug_is_an_internal_error_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    wrapped = ExceptionGroup("unhandled errors in a TaskGroup", [ZeroDivisionError("oops")])
    assert guard(raises(wrapped)) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "internal error: ZeroDivisionError: oops" in line
    with pytest.raises(ZeroDivisionError):  # --debug shows the real one, unwrapped
        guard(raises(wrapped), debug=True)


def test_the_help_lists_every_exit_code() -> None:
    listed = {line.split()[0] for line in EXIT_HELP.splitlines()[2:] if line[:3].strip()}
    assert listed == {"0", "1", "2", "3", "4", "5", "6", "130"}
    assert "143 terminated by SIGTERM" in EXIT_HELP
