"""A hostile server on loopback: nothing it says can steer bulkcancel outside its targets, make
it hold a bomb in memory, or keep it listing forever.

The server (``bulkcancel.testing._hostile``) logs every request exactly as received, so
"nothing was sent elsewhere" is an assertion on that log, not on our own bookkeeping.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from bulkcancel._client import OperationsClient
from bulkcancel._errors import ConfigError
from bulkcancel._limits import RateGovernor
from bulkcancel._models import OperationResult, Target
from bulkcancel._retry import Backoff
from bulkcancel._sources import (
    ListingError,
    ListingLimitError,
    Resolver,
    Selection,
    SelectionLimitError,
    iter_pages,
    resolve_parents,
)
from bulkcancel._transport import AiohttpTransport
from bulkcancel.cli import cli
from bulkcancel.testing._hostile import HOSTILE_LOCATIONS, HostileServer, Hostility, foreign_entries
from tests._e2e import run_cli

PARENT = "projects/p/locations/l"
FAST = ["--anonymous", "--yes", "--quiet", "--rate", "500", "--deadline", "2"]


class NoAuth:
    sends_credentials = False

    async def headers(self) -> dict[str, str]:
        return {}

    async def invalidate(self, used: object) -> bool:
        return False


def client(transport: AiohttpTransport, url: str) -> OperationsClient:
    return OperationsClient(
        transport,
        endpoint=url,
        api_version="v1",
        tokens=NoAuth(),
        governor=RateGovernor(10_000),
        concurrency=4,
        backoff=Backoff(base=0.001, cap=0.005, max_attempts=3),
        rng=random.Random(0),
    )


class Collected:
    def __init__(self) -> None:
        self.targets: list[Target] = []
        self.results: list[OperationResult] = []

    def resolver(self, **limits: Any) -> Resolver:
        return Resolver(Selection(), self.targets.append, self.results.append, **limits)


# ---- scope: a listing cannot steer cancels -------------------------------------------------


async def test_listed_names_outside_the_parent_are_errors_and_never_sent(tmp_path: Path) -> None:
    server = HostileServer(parents=(PARENT,), hostility=Hostility(foreign_names=True))
    report = tmp_path / "report.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--parent", PARENT, "--endpoint", url, *FAST, "--report", str(report)
        )
    assert result.exit_code == 3, result.stderr
    assert server.paths_outside((PARENT + "/",)) == []
    assert server.cancelled == set(server.names())
    records = json.loads(report.read_text())["operations"]
    # Every listed entry ends in exactly one record: the honest ones and each foreign one.
    assert len(records) == len(server.names()) + len(foreign_entries(PARENT))
    by_outcome: dict[str, list[str]] = {}
    for record in records:
        by_outcome.setdefault(record["outcome"], []).append(record["name"])
    assert sorted(by_outcome["cancelled"]) == sorted(server.names())
    assert by_outcome["invalid"] == [f"{PARENT}/operations/%2e%2e"]
    positions = [len(server.names()) + i for i in (1, 2, 3, 5, 6, 7, 8, 9)]
    assert by_outcome["error"] == [f"{PARENT}/operations[#{n}]" for n in positions]
    victim = next(r for r in records if r["name"] == f"{PARENT}/operations[#4]")
    assert victim["listed_name"] == "projects/victim/locations/us-central1/operations/v-1"
    assert victim["message"] == f"listed name is not under {PARENT}/operations/"


async def test_server_location_names_are_validated_like_parent(tmp_path: Path) -> None:
    good = "projects/p/locations/good"
    server = HostileServer(parents=(good,), hostility=Hostility(hostile_locations=True))
    report = tmp_path / "report.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--parent", "projects/p/locations/-", "--endpoint", url, *FAST,
            "--report", str(report),
        )  # fmt: skip
    assert result.exit_code == 3, result.stderr
    paths = [r.raw_path for r in server.requests]
    assert paths[0] == "/v1/projects/p/locations"
    assert all(p.startswith(f"/v1/{good}/") for p in paths[1:]), paths
    assert server.cancelled == set(server.names())
    records = json.loads(report.read_text())["operations"]
    refused = [r for r in records if r["outcome"] == "error"]
    # One good location first, then each hostile entry, then the nameless one.
    expected = [f"projects/p/locations[#{n}]" for n in range(2, len(HOSTILE_LOCATIONS) + 3)]
    assert [r["name"] for r in refused] == expected
    assert refused[0]["listed_name"] == "projects/p/locations/../../../x/y"


# ---- secrets: a server that repeats the token ---------------------------------------------


async def test_a_server_echoing_the_token_never_gets_it_into_any_output(tmp_path: Path) -> None:
    """Every cancel is refused with a message quoting the Authorization header: the report,
    the journal, the JSON on stdout and the table on stderr carry [REDACTED] instead."""
    secret = "ya29.hostile-echo-" + "x" * 40
    server = HostileServer(parents=(PARENT,), count=5, hostility=Hostility(echo_authorization=True))
    report, journal = tmp_path / "r.json", tmp_path / "j.journal"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", *server.names(), "--endpoint", url, "--token", secret, "--yes",
            "--report", str(report), "--journal", str(journal), "--format", "json",
        )  # fmt: skip
    assert result.exit_code == 3, result.stderr
    outputs = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "report": report.read_text(),
        "journal": journal.read_text(),
    }
    for where, text in outputs.items():
        assert secret not in text, where
        assert secret[5:25] not in text, where
    assert "[REDACTED]" in outputs["report"]  # the echo arrived, and was scrubbed


# ---- bounded: listing without end stops -----------------------------------------------------


async def test_endless_listing_stops_at_max_selected_after_one_page() -> None:
    server = HostileServer(hostility=Hostility(endless_listing=True), page_size=500)
    found = Collected()
    async with server.serve() as url, AiohttpTransport() as transport:
        with pytest.raises(SelectionLimitError, match="more than --max-operations 100"):
            await resolve_parents(
                client(transport, url), [PARENT], found.resolver(max_selected=100)
            )
    assert len(server.requests) == 1
    assert len(found.targets) == 100
    assert isinstance(SelectionLimitError("x"), ConfigError)  # the app maps it to exit 2


async def test_max_operations_stops_an_endless_listing_through_the_cli(tmp_path: Path) -> None:
    """The CLI passes --max-operations into the listing: exit 2 after one page, one line,
    nothing sent, no report."""
    server = HostileServer(hostility=Hostility(endless_listing=True), page_size=500)
    report = tmp_path / "r.json"
    async with server.serve() as url:
        with anyio.fail_after(30):
            result = await run_cli(
                "cancel", "--parent", PARENT, "--endpoint", url, "--anonymous", "--yes",
                "--max-operations", "100", "--report", str(report),
            )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert "more than --max-operations 100" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(server.requests) == 1
    assert not report.exists()


async def test_a_report_path_that_is_a_link_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    server = HostileServer(parents=(PARENT,))
    kept = tmp_path / "kept.json"
    kept.write_text("keep me")
    link = tmp_path / "report.json"
    link.symlink_to(kept)
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--parent", PARENT, "--endpoint", url, "--anonymous", "--yes",
            "--report", str(link),
        )  # fmt: skip
    assert result.exit_code == 2
    assert "symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert server.requests == []
    assert kept.read_text() == "keep me" and link.is_symlink()


async def test_endless_listing_of_unselected_names_stops_at_the_ceiling() -> None:
    server = HostileServer(hostility=Hostility(endless_listing=True), page_size=500)
    found = Collected()
    found_nothing = Resolver(
        Selection(match=re.compile("^never$")),
        found.targets.append,
        found.results.append,
        max_listed=1200,
    )
    async with server.serve() as url, AiohttpTransport() as transport:
        with pytest.raises(ListingLimitError, match="more than 1200 entries"):
            await resolve_parents(
                client(transport, url), [PARENT, "projects/p/locations/m"], found_nothing
            )
    assert found.targets == []
    assert found_nothing.stats.listed == 1200
    assert len(server.requests) <= 4  # three pages reach the ceiling; the other parent is cut off


async def test_endless_empty_pages_end_the_listing_with_an_error() -> None:
    server = HostileServer(hostility=Hostility(endless_empty_pages=True))
    async with server.serve() as url, AiohttpTransport() as transport:
        with pytest.raises(ListingError, match="5 empty pages in a row"):
            async for _ in iter_pages(client(transport, url), PARENT, max_empty_pages=5):
                pass
    assert len(server.requests) == 5


# ---- bounded: a gzip bomb is never inflated -----------------------------------------------

_MEASURE = r"""
import json, re, sys
from bulkcancel.cli import main
out, sys.argv = sys.argv[1], ["bulkcancel", *sys.argv[2:]]
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
# VmHWM is this process's own peak: getrusage's ru_maxrss starts from the peak of the process
# that forked us (pytest's, hundreds of MB late in a suite), which Linux carries across exec.
with open("/proc/self/status") as status:
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))
with open(out, "w") as handle:
    json.dump({"exit": code, "maxrss_kb": peak}, handle)
"""


@pytest.mark.slow
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_gzip_bomb_run_stays_small_and_is_not_retried(tmp_path: Path, declared: bool) -> None:
    server = HostileServer(hostility=Hostility(gzip_bomb=True, bomb_declared=declared))
    names = server.names()
    out = tmp_path / "measure.json"
    async with server.serve() as url:
        args = ["cancel", *names, "--endpoint", url, *FAST, "--report", str(tmp_path / "r.json")]
        done = await anyio.run_process(
            [sys.executable, "-c", _MEASURE, str(out), *args], check=False
        )
    measured = json.loads(out.read_text())
    assert measured["exit"] == 3, done.stderr.decode()
    assert measured["maxrss_kb"] < 200 * 1024, measured
    assert [r.method for r in server.requests] == ["POST"] * len(names)  # one try each
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["totals"]["error"] == len(names)
    assert {r["cancel_error"]["kind"] for r in report["operations"]} == {"oversized"}


# ---- proto3 JSON shapes, end to end -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ({"done": True, "error": {"code": 1}}, "cancelled"),
        ({"done": True, "error": {"code": "1"}}, "cancelled"),
        ({"done": True, "error": {"code": 1.0}}, "cancelled"),
        ({"done": True, "error": {"code": True}}, "error"),
        ({"done": True, "error": {"code": "one"}}, "error"),
        ({"done": True, "error": {"code": "13"}}, "completed_anyway"),
        ({"done": "true", "error": {"code": 1}}, "error"),
    ],
)
async def test_proto3_operation_shapes_through_the_client(
    body: dict[str, Any], outcome: str, tmp_path: Path
) -> None:
    server = HostileServer(count=1, hostility=Hostility(operation_body=body))
    report = tmp_path / "r.json"
    async with server.serve() as url:
        await run_cli("cancel", *server.names(), "--endpoint", url, *FAST, "--report", str(report))
    [record] = json.loads(report.read_text())["operations"]
    assert record["outcome"] == outcome, record


# ---- hostile files: malformed reports and unsafe targets through the CLI ------------------

MALFORMED_FILES: dict[str, bytes] = {
    "not json": b"{oops",
    "not utf-8": b'{"operations": "\xff"}',
    "an array": b"[]",
    "no operations": b'{"schema_version": 1, "totals": {}}',
    "wrong types": json.dumps(
        {"schema_version": 1, "totals": {"cancelled": "many"}, "operations": {}}
    ).encode(),
    "deep": b"[" * 50_000 + b"]" * 50_000,
}


def good_report(path: Path, name: str = f"{PARENT}/operations/a") -> Path:
    totals = dict.fromkeys(("cancelled", "completed_anyway", "unsupported", "not_found"), 0)
    totals |= dict.fromkeys(("permission_denied", "still_running", "error", "invalid"), 0)
    totals |= {"not_attempted": 0, "cancelled": 1}
    record = {"name": name, "outcome": "cancelled"}
    path.write_text(json.dumps({"schema_version": 1, "totals": totals, "operations": [record]}))
    return path


@pytest.mark.parametrize("content", MALFORMED_FILES.values(), ids=MALFORMED_FILES.keys())
@pytest.mark.parametrize("command", ["report", "merge-reports"])
def test_malformed_reports_get_one_line_and_exit_2(
    tmp_path: Path, content: bytes, command: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    args = [command, str(bad)]
    if command == "merge-reports":
        args = [
            command,
            str(good_report(tmp_path / "good.json")),
            str(bad),
            "-o",
            str(tmp_path / "m"),
        ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], lines
    assert not (tmp_path / "m").exists()


def test_merge_reports_will_not_replace_a_link(tmp_path: Path) -> None:
    kept = tmp_path / "kept.json"
    kept.write_text("keep me")
    (tmp_path / "merged.json").symlink_to(kept)
    sources = [str(good_report(tmp_path / f"{i}.json", f"{PARENT}/operations/{i}")) for i in "ab"]
    result = CliRunner().invoke(
        cli, ["merge-reports", *sources, "-o", str(tmp_path / "merged.json")]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert kept.read_text() == "keep me"
    assert (tmp_path / "merged.json").is_symlink()
