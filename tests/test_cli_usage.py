"""CLI refusals: every one exits 2 before anything is sent, with a clear message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bulkcancel.cli import cli
from tests._support import op

SECRET = "ya29.SECRET-token-value"
CLOSED = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail loudly if anything opens a connection."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise AssertionError(f"unexpected connection to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_token_over_plain_http_to_a_remote_host_is_refused(no_connections: list[Any]) -> None:
    result = invoke("cancel", op(1), "--yes", "--token", SECRET, "--endpoint", "http://example.com")
    assert result.exit_code == 2
    assert "plain HTTP" in result.output
    assert SECRET not in result.output
    assert no_connections == []


def test_token_from_environment_is_refused_the_same_way(no_connections: list[Any]) -> None:
    result = invoke(
        "cancel",
        op(1),
        "--yes",
        "--endpoint",
        "http://10.1.2.3:80",
        env={"BULKCANCEL_ACCESS_TOKEN": SECRET},
    )
    assert result.exit_code == 2
    assert SECRET not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to cancel"),
        ([op(1), "--rate", "0"], "--rate"),
        ([op(1), "--concurrency", "0"], "--concurrency"),
        ([op(1), "--shard", "3/3"], "--shard"),
        ([op(1), "--shard", "x"], "--shard"),
        ([op(1), "--shard", "auto"], "--shard auto"),
        ([op(1), "--match", "("], "--match"),
        ([op(1), "--older-than", "soon"], "use a number and a unit"),
        ([op(1), "--parent", "projects/p/locations"], "bad --parent"),
        ([op(1), "--names-file", "/nonexistent/names.txt"], "no such file"),
        ([op(1), "--token", "t", "--anonymous"], "exclude each other"),
        ([op(1), "--name-pattern", "projects/*"], "must end in operations/*"),
        ([op(1), "--report", "r-{shard}.json"], "{shard}"),
        ([op(1), "--endpoint", "ftp://x"], "http(s) URL"),
        ([op(1), "--rate", "fast"], "Invalid value"),
        # Every number is checked in one place, before anything is sent (issue 10).
        ([op(1), "--rate", "inf"], "--rate must be a finite number"),
        ([op(1), "--rate", "nan"], "--rate must be a finite number"),
        ([op(1), "--rate", "-5"], "--rate must be more than 0"),
        ([op(1), "--deadline", "nan"], "--deadline must be a finite number"),
        ([op(1), "--deadline", "inf"], "--deadline must be a finite number"),
        ([op(1), "--deadline", "-1"], "--deadline must be at least 0"),
        ([op(1), "--concurrency", "100000"], "--concurrency must be between 1 and 1000"),
        ([op(1), "--concurrency", "-3"], "--concurrency must be between 1 and 1000"),
        ([op(1), "--page-size", "-1"], "--page-size must be between 0"),
        ([op(1), "--page-size", "99999999999"], "--page-size must be between 0"),
        ([op(1), "--request-timeout", "0"], "--request-timeout must be more than 0"),
        ([op(1), "--request-timeout", "inf"], "--request-timeout must be a finite number"),
        ([op(1), "--older-than", "99999999999w"], "--older-than"),
        ([op(1), "--older-than", "9999999w"], "--older-than reaches back before the year 1"),
        ([op(1), "--endpoint", "http://127.0.0.1:99999"], "--endpoint"),
        ([op(1), "--names-file", "/"], "is a directory"),
        ([op(1), "--max-operations", "-1"], "--max-operations"),
        # issue 13: a drain needs a listing to watch, and a positive duration
        ([op(1), "--until-quiet", "30s"], "--until-quiet needs --parent"),
        ([op(1), "--parent", "projects/p/locations/l", "--until-quiet", "soon"], "--until-quiet"),
        ([op(1), "--parent", "projects/p/locations/l", "--until-quiet", "0s"], "--until-quiet"),
        ([op(1), "--parent", "projects/p/locations/l", "--until-quiet", "-5"], "--until-quiet"),
        ([op(1), "--parent", "projects/p/locations/l", "--until-quiet", "inf"], "--until-quiet"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, no_connections: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("CLOUD_RUN_TASK_INDEX", "JOB_COMPLETION_INDEX", "BULKCANCEL_ACCESS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    result = (
        invoke("cancel", "--anonymous", *args) if "--token" not in args else invoke("cancel", *args)
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    # one clear line (click's own usage errors add a usage hint around theirs)
    assert len([line for line in result.output.splitlines() if message in line]) == 1


def test_request_timeout_and_short_yes_reach_the_run(
    tmp_path: Path, no_connections: list[Any]
) -> None:
    report = tmp_path / "plan.json"
    result = invoke(
        "cancel", "--anonymous", "--endpoint", CLOSED, op(1), "--dry-run", "-y", "-q",
        "--request-timeout", "7.5", "--report", str(report),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["arguments"]["request_timeout"] == 7.5


def test_help_lists_the_exit_codes() -> None:
    result = invoke("cancel", "--help")
    text = " ".join(result.output.split())
    assert "5 stopped early" in text
    assert "6 progress could not be recorded" in text
    assert "--request-timeout SECONDS" in text
    assert "-y, --yes" in text


def test_dry_run_sends_nothing_and_reports_every_line(
    tmp_path: Path, no_connections: list[Any]
) -> None:
    names = tmp_path / "names.txt"
    names.write_text(f"{op(1)}\n{op(2)}\n{op(1)}\nnot/a/name\n# comment\n")
    report = tmp_path / "plan.json"
    result = invoke(
        "cancel",
        "--anonymous",
        "--endpoint",
        CLOSED,
        "--names-file",
        str(names),
        "--dry-run",
        "--report",
        str(report),
        "--format",
        "json",
    )
    assert result.exit_code == 3  # an invalid line is a problem a dry run reports
    data = json.loads(report.read_text())
    assert {r["name"]: r["outcome"] for r in data["operations"]} == {
        op(1): "not_attempted",
        op(2): "not_attempted",
        "not/a/name": "invalid",
    }
    assert json.loads(result.stdout)["totals"] == data["totals"]
    assert data["selection"]["skipped"] == {"duplicate": 1}


def test_dry_run_of_valid_names_exits_0(no_connections: list[Any]) -> None:
    result = invoke("cancel", "--anonymous", "--endpoint", CLOSED, op(1), "--dry-run", "-q")
    assert result.exit_code == 0


def test_max_operations_refuses_before_sending(no_connections: list[Any], tmp_path: Path) -> None:
    result = invoke(
        "cancel",
        "--anonymous",
        "--endpoint",
        CLOSED,
        op(1),
        op(2),
        op(3),
        "--yes",
        "--max-operations",
        "2",
        "--report",
        str(tmp_path / "r.json"),
    )
    assert result.exit_code == 2
    assert "more than --max-operations 2" in result.output
    assert not (tmp_path / "r.json").exists()


def test_without_yes_and_without_a_terminal_refuses(tmp_path: Path) -> None:
    """A real subprocess in a new session has no controlling terminal: it must refuse."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKCANCEL")}
    proc = subprocess.run(
        [sys.executable, "-m", "bulkcancel", "cancel", "--anonymous", "--endpoint", CLOSED, op(1)],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no terminal" in proc.stderr
    assert "pass --yes" in proc.stderr


def test_until_quiet_durations_and_a_dry_run_lists_once(
    tmp_path: Path, no_connections: list[Any]
) -> None:
    from bulkcancel.cli import parse_duration

    assert [parse_duration("--until-quiet", t) for t in ("30s", "2m", "1h", "45", "1.5s")] == [
        30.0, 120.0, 3600.0, 45.0, 1.5,
    ]  # fmt: skip
    report = tmp_path / "plan.json"
    result = invoke(
        "cancel", "--anonymous", "--endpoint", CLOSED, op(1), "--dry-run", "-y", "-q",
        "--report", str(report), "--until-quiet", "2m", "--max-operations", "5",
    )  # fmt: skip
    assert result.exit_code == 2, result.output  # a drain needs --parent, even for a dry run
    assert "--until-quiet needs --parent" in result.output
