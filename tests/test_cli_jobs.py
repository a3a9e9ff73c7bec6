"""Jobs and audit through the real CLI: JSON logs, BULKCANCEL_* environment defaults, who acted
where, impersonation, and a report that records the version and every selection flag."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from aiohttp import web

import bulkcancel
from bulkcancel.testing import FakeOperationsServer, populate
from tests._e2e import (
    bulkcancel_command,
    load_report,
    process_env,
    run_cli,
    service_account_key,
    token_endpoint,
)

pytestmark = pytest.mark.timeout(120)
PARENT = "projects/p/locations/us-central1"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def test_log_format_json_writes_one_cloud_logging_entry_per_line(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 30)
    async with server.serve() as url:
        done = await anyio.run_process(
            bulkcancel_command(
                "cancel", *names, "--anonymous", "--endpoint", url, "--yes",
                "--log-format", "json", "--format", "jsonl",
            ),
            env=process_env(), check=False,
        )  # fmt: skip
    assert done.returncode == 0
    entries = [json.loads(line) for line in done.stderr.decode().splitlines()]
    for entry in entries:
        assert entry["severity"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), entry
        assert RFC3339_Z.match(entry["time"]), entry
        assert isinstance(entry["message"], str) and entry["message"]
    messages = [e["message"] for e in entries]
    assert messages[0] == "run started"
    assert "cancelling" in messages
    finished = entries[messages.index("run finished")]
    assert finished["severity"] == "INFO"
    assert finished["exit_code"] == 0
    assert finished["totals"]["cancelled"] == 30
    assert finished["identity"] == "anonymous"
    assert finished["places"] == {PARENT: 30}
    # stdout stays data: 30 records and the summary.
    assert len(done.stdout.decode().splitlines()) == 31


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_job_log_shows_a_long_run_moving(log_format: str) -> None:
    """No terminal: a progress line every --progress-every seconds (BULKCANCEL_PROGRESS_EVERY
    here), in text or as ``progress`` events. The run lasts 2.4 s or more: twelve cancels one
    at a time behind answers of 0.2 s."""
    server = FakeOperationsServer()
    server.latency = 0.2
    names = populate(server, PARENT, 12)
    async with server.serve() as url:
        done = await anyio.run_process(
            bulkcancel_command(
                "cancel", *names, "--anonymous", "--endpoint", url, "--yes",
                "--concurrency", "1", "--log-format", log_format,
            ),
            env=process_env(BULKCANCEL_PROGRESS_EVERY="0.5"), check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    err = done.stderr.decode().splitlines()
    if log_format == "json":
        lines = [e for e in map(json.loads, err) if e["message"] == "progress"]
        sending = [e for e in lines if e["total"] == 12 and 0 <= e["settled"] <= 12]
    else:
        lines = [line for line in err if line.startswith("progress ")]
        sending = [x for x in lines if re.match(r"progress \d:\d\d:\d\d: \w+, \d+/12 settled", x)]
    assert len(sending) >= 2, err  # (a line while listing, if any, says "found" instead)


async def test_every_option_reads_its_environment_variable(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    populate(server, PARENT, 12)
    populate(server, "projects/p/locations/europe-west1", 5)
    async with server.serve() as url:
        env = process_env(
            BULKCANCEL_PARENT=f"{PARENT} projects/p/locations/europe-west1",  # repeatable
            BULKCANCEL_ENDPOINT=url,
            BULKCANCEL_ANONYMOUS="1",
            BULKCANCEL_DRY_RUN="true",
            BULKCANCEL_FORMAT="json",
            BULKCANCEL_LOG_FORMAT="json",
            BULKCANCEL_MATCH="op-00000[0-4]$",
            BULKCANCEL_REPORT=str(tmp_path / "r.json"),
        )
        done = await anyio.run_process(bulkcancel_command("cancel"), env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert server.requests("cancel") == []  # BULKCANCEL_DRY_RUN took effect
    report = json.loads(done.stdout)
    assert report["totals"]["not_attempted"] == 10
    assert report["arguments"]["match"] == "op-00000[0-4]$"
    assert sorted(report["arguments"]["parents"]) == sorted(
        [PARENT, "projects/p/locations/europe-west1"]
    )
    assert (tmp_path / "r.json").exists()
    assert all(json.loads(line)["severity"] for line in done.stderr.decode().splitlines())


def test_the_help_names_the_environment_variables_and_examples() -> None:
    from click.testing import CliRunner

    from bulkcancel.cli import cli

    text = " ".join(CliRunner().invoke(cli, ["cancel", "--help"]).output.split())
    for variable in ("BULKCANCEL_FORMAT", "BULKCANCEL_PARENT", "BULKCANCEL_LOG_FORMAT",
                     "BULKCANCEL_ACCESS_TOKEN", "BULKCANCEL_IMPERSONATE_SERVICE_ACCOUNT",
                     "BULKCANCEL_YES"):  # fmt: skip
        assert variable in text, variable
    assert "Examples:" in text and "--format=json \\ | bulkcancel cancel --service redis" in text
    assert "130 interrupted by SIGINT" in text and "143 terminated by SIGTERM" in text


async def test_the_report_records_version_identity_places_and_every_selection_flag(
    tmp_path: Path,
) -> None:
    server = FakeOperationsServer()
    populate(server, PARENT, 20)
    report = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--parent", PARENT, "--anonymous", "--endpoint", url, "--dry-run",
            "--match", "op-", "--target", "prod", "--verb", "deploy", "--older-than", "2m",
            "--filter", "done=false", "--shard", "0/1", "--report", str(report), "-q",
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = load_report(report)
    assert data["tool"] == {"name": "bulkcancel", "version": bulkcancel.__version__}
    assert data["identity"] == "anonymous"
    assert data["places"] == {PARENT: 20}
    args = data["arguments"]
    assert args["match"] == "op-" and args["target"] == "prod" and args["verb"] == "deploy"
    assert args["older_than_seconds"] == 120.0
    assert args["filter"] == "done=false" and args["parents"] == [PARENT]
    assert args["shard"] == {"index": 0, "count": 1}
    assert args["credentials"] == "anonymous"


SOURCE = "bulkcancel-test@test-project.iam.gserviceaccount.com"
TARGET = "canceller@prod-project.iam.gserviceaccount.com"


@asynccontextmanager
async def serve_iam(calls: list[str]) -> AsyncIterator[str]:
    async def generate(request: web.Request) -> web.Response:
        calls.append(request.match_info["principal"])
        return web.json_response({"accessToken": "imp-token", "expireTime": "2099-01-01T00:00:00Z"})

    app = web.Application()
    app.router.add_post("/v1/projects/-/serviceAccounts/{principal}:generateAccessToken", generate)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_impersonation_acts_as_the_service_account_and_says_so(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    server.valid_tokens = {"imp-token"}  # only the impersonated token is accepted
    names = populate(server, PARENT, 6)
    report = tmp_path / "r.json"
    calls: list[str] = []
    async with token_endpoint() as tokens, server.serve() as url, serve_iam(calls) as iam_url:
        key = service_account_key(tmp_path, tokens.url)
        result = await run_cli(
            "cancel", *names, "--endpoint", url, "--yes", "--report", str(report), "-q",
            "--impersonate-service-account", TARGET, "--iam-endpoint", iam_url,
            env={"GOOGLE_APPLICATION_CREDENTIALS": str(key)},
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert calls and set(calls) == {TARGET}
    data = load_report(report)
    assert data["totals"]["cancelled"] == 6
    assert data["identity"] == f"{TARGET} (impersonated by {SOURCE})"
    assert data["arguments"]["impersonate_service_account"] == TARGET
    assert data["arguments"]["credentials"] == "impersonated"


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--token", "t"], "--impersonate-service-account and --token exclude each other"),
        (["--anonymous"], "--impersonate-service-account and --anonymous exclude each other"),
    ],
)
async def test_impersonation_excludes_a_token_and_anonymous(extra: list[str], says: str) -> None:
    result = await run_cli(
        "cancel", f"{PARENT}/operations/x", "--impersonate-service-account", TARGET, "--yes",
        "--endpoint", "http://127.0.0.1:9", *extra,
    )  # fmt: skip
    assert result.exit_code == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_bad_service_account_is_refused_in_one_line() -> None:
    env = {"GOOGLE_APPLICATION_CREDENTIALS": os.devnull}
    result = await run_cli(
        "cancel", f"{PARENT}/operations/x", "--impersonate-service-account", "not-an-email",
        "--yes", "--endpoint", "http://127.0.0.1:9", env=env,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "is not a service-account email" in result.stderr
