"""End to end against the fake server on loopback: the done-when lists of issues 2 and 3."""

from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

import bulkcancel
from bulkcancel.testing import Behavior, FakeOperationsServer, Fault, Faults, ParentMode
from tests._e2e import load_report, mixed_world, outcomes, run_cli, write_lines

OUTCOMES = [o.value for o in bulkcancel.Outcome]
SECRET = "ya29.a0-SECRET-e2e-token-Zq9"


def assert_paths_are_exactly_names(server: FakeOperationsServer, valid: set[str]) -> None:
    for record in server.log:
        if record.kind == "cancel":
            assert record.raw_path == f"/v1/{record.name}:cancel"
        elif record.kind == "get":
            assert record.raw_path == f"/v1/{record.name}"
        else:
            assert record.kind == "list", record
            continue
        assert record.name in valid, record.raw_path


async def test_three_hundred_names_of_every_kind(tmp_path: Path) -> None:
    world = mixed_world(1)
    server = world.server
    rate = 150.0
    names_file = write_lines(tmp_path / "names.txt", world.lines)
    report_path = tmp_path / "report.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--names-file", str(names_file), "--anonymous", "--endpoint", url,
            "--yes", "--report", str(report_path), "--rate", str(rate), "--deadline", "3",
            "--quiet",
        )  # fmt: skip
    assert result.exit_code == 3, result.stderr
    report = load_report(report_path)
    assert outcomes(report) == world.expected
    assert list(report["totals"]) == OUTCOMES
    assert report["totals"] == dict(Counter(world.expected.values())) | {
        k: v for k, v in report["totals"].items() if v == 0
    }
    assert sum(report["totals"].values()) == len(world.expected) > 280

    # Nothing was sent for a malformed name; every path is exactly /v1/{name}[:cancel].
    valid = {n for n, o in world.expected.items() if o != "invalid"}
    assert_paths_are_exactly_names(server, valid)
    assert all(op.accepted_cancels <= 1 for op in server.operations())

    # The rate the server saw: within --rate on average, never above 2x in any 1 s window.
    times = sorted(r.at for r in server.log)
    span = times[-1] - times[0]
    assert len(times) / max(span, 1.0) <= rate * 1.05
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        assert i - j + 1 <= 2 * rate, f"{i - j + 1} requests in the second before {t}"

    # The same run through the library gives the same outcomes.
    again = mixed_world(1)
    async with again.server.serve() as url:
        names = [line for line in again.lines if line.strip() and not line.startswith("#")]
        lib = await bulkcancel.cancel_operations(
            names, endpoint=url, anonymous=True, rate=rate, deadline=3
        )
    assert {r.name: r.outcome.value for r in lib.operations} == world.expected
    assert lib.totals == report["totals"]


async def test_listing_two_parents_with_filter_and_small_pages(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    parents = ["projects/p/locations/a", "projects/p/locations/b"]
    running: set[str] = set()
    for p_index, parent in enumerate(parents):
        for i in range(23 + p_index * 5):
            behavior = (Behavior.CANCELS, Behavior.COMPLETES_ANYWAY, Behavior.ALREADY_DONE)[i % 3]
            name = f"{parent}/operations/op-{i:03d}"
            server.add_operation(name, behavior, cancel_delay=0.05)
            if behavior is not Behavior.ALREADY_DONE:
                running.add(name)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--parent", parents[0], "--parent", parents[1], "--filter", "done=false",
            "--page-size", "7", "--anonymous", "--endpoint", url, "--yes",
            "--report", str(report_path), "--rate", "500", "--quiet",
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = load_report(report_path)
    assert set(outcomes(report)) == running
    assert {r.name for r in server.requests("cancel")} == running
    assert len(server.requests("cancel")) == len(running)
    listed = [r for r in server.requests("list") if r.query.get("filter") == "done=false"]
    assert {r.name for r in listed} == set(parents)
    assert all(r.query.get("pageSize") == "7" for r in listed)
    assert report["totals"]["cancelled"] + report["totals"]["completed_anyway"] == len(running)


async def test_a_bad_filter_is_a_clear_error(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    server.add_operation("projects/p/locations/a/operations/x")
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--parent", "projects/p/locations/a", "--filter", "state=RUNNING",
            "--anonymous", "--endpoint", url, "--yes", "--format", "json", "--quiet",
        )  # fmt: skip
    assert result.exit_code == 3
    assert "Traceback" not in result.stderr
    assert "Invalid filter" in result.stdout
    assert server.requests("cancel") == []


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_fault_mix_keeps_every_outcome_exact(tmp_path: Path, seed: int) -> None:
    world = mixed_world(seed, per_kind=25)
    world.server.faults = Faults(
        throttle=0.04, throttle_hinted=0.04, unavailable=0.05, bad_gateway_html=0.02,
        reset=0.02, seed=seed,
    )  # fmt: skip
    names = [line for line in world.lines if line.strip() and not line.startswith("#")]
    async with world.server.serve() as url:
        report = await bulkcancel.cancel_operations(
            names, endpoint=url, anonymous=True, rate=2000, concurrency=16, deadline=3
        )
    assert {r.name: r.outcome.value for r in report.operations} == world.expected
    statuses = Counter(r.status for r in world.server.log)
    assert statuses[429] and statuses[503] and statuses[502] and statuses[0]  # faults happened
    assert all(op.accepted_cancels <= 1 for op in world.server.operations())
    assert report.meta["requests"]["retries"] > 0


async def test_persistent_hostile_answers_end_as_clear_errors(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    kinds = {"oversized": Fault.OVERSIZED, "html": Fault.INTERNAL_HTML, "cut": Fault.TRUNCATED}
    parent = "projects/p/locations/l"
    for key, fault in kinds.items():
        server.add_operation(f"{parent}/operations/{key}")
        server.inject(fault, times=None, prefix=f"{parent}/operations/{key}")
    server.add_operation(f"{parent}/operations/fine")
    server.add_operation("projects/loop/locations/l/operations/x")
    server.repeat_page_token("projects/loop/locations/l")
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", *(f"{parent}/operations/{k}" for k in [*kinds, "fine"]),
            "--parent", "projects/loop/locations/l", "--page-size", "1",
            "--anonymous", "--endpoint", url, "--yes", "--report", str(report_path),
            "--reconcile", "get", "--quiet",
        )  # fmt: skip
    assert result.exit_code == 3
    assert "Traceback" not in result.stderr + result.stdout
    records = {r["name"]: r for r in load_report(report_path)["operations"]}
    assert records[f"{parent}/operations/fine"]["outcome"] == "cancelled"
    for key in kinds:
        assert records[f"{parent}/operations/{key}"]["outcome"] == "error", key
    loop = records["projects/loop/locations/l"]
    assert loop["outcome"] == "error"
    assert "page token" in loop["message"]
    assert len(server.requests("list")) < 10  # stopped, not looping


async def test_redirect_is_not_followed_and_the_token_stays_home(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    async def trap(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", trap)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    trap_port = runner.addresses[0][1]
    server = FakeOperationsServer()
    server.valid_tokens = {SECRET}
    server.redirect_to = f"http://127.0.0.1:{trap_port}/v1/steal"
    name = "projects/p/locations/l/operations/x"
    server.add_operation(name)
    server.inject(Fault.REDIRECT, times=None)
    report_path = tmp_path / "r.json"
    try:
        async with server.serve() as url:
            result = await run_cli(
                "cancel", name, "--token", SECRET, "--endpoint", url, "--yes",
                "--report", str(report_path), "--quiet",
            )  # fmt: skip
    finally:
        await runner.cleanup()
    assert result.exit_code == 3
    assert seen == []
    assert server.log[0].authorization == f"Bearer {SECRET}"
    record = load_report(report_path)["operations"][0]
    assert record["outcome"] == "error"


async def test_the_token_never_appears_in_any_output(tmp_path: Path) -> None:
    world = mixed_world(5, per_kind=6)
    world.server.valid_tokens = {SECRET}
    world.server.inject(Fault.UNAUTHENTICATED, times=3)  # a 401 path is exercised too
    names_file = write_lines(tmp_path / "names.txt", world.lines)
    report_path, journal_path = tmp_path / "report.json", tmp_path / "run.journal"
    async with world.server.serve() as url:
        result = await run_cli(
            "cancel", "--names-file", str(names_file), "--token", SECRET, "--endpoint", url,
            "--yes", "--report", str(report_path), "--journal", str(journal_path),
            "--format", "json", "--deadline", "2", "--debug",
        )  # fmt: skip
    assert result.exit_code == 3
    assert any(r.authorization == f"Bearer {SECRET}" for r in world.server.log)
    for where, text in (
        ("stdout", result.stdout),
        ("stderr", result.stderr),
        ("report", report_path.read_text()),
        ("journal", journal_path.read_text()),
    ):
        assert SECRET not in text, where
        assert SECRET[5:20] not in text, where
    for path in (report_path, journal_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_jsonl_streams_one_record_per_operation(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = [f"projects/p/locations/l/operations/o{i}" for i in range(12)]
    for name in names:
        server.add_operation(name)
    async with server.serve() as url:
        result = await run_cli(
            "cancel", *names, "bad name", "--anonymous", "--endpoint", url, "--yes",
            "--format", "jsonl", "--quiet",
        )  # fmt: skip
    import json

    *records, last = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["name"] for r in records) == sorted([*names, "bad name"])
    assert Counter(r["outcome"] for r in records) == {"cancelled": 12, "invalid": 1}
    # The contract's closing record: every total, and the exit code.
    assert last == {"summary": {**dict.fromkeys(OUTCOMES, 0), "cancelled": 12, "invalid": 1,
                                "exit_code": 3}}  # fmt: skip
    assert result.exit_code == 3


async def test_rejected_credentials_stop_the_run_early(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    server.valid_tokens = {"the-right-one"}
    names = [f"projects/p/locations/l/operations/o{i:03d}" for i in range(200)]
    for name in names:
        server.add_operation(name)
    server.set_mode("projects/unused", ParentMode.NORMAL)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", *names, "--token", "wrong", "--endpoint", url, "--yes",
            "--report", str(report_path), "--concurrency", "4", "--quiet",
        )  # fmt: skip
    assert result.exit_code == 4
    assert len(server.log) < 50
    totals = load_report(report_path)["totals"]
    assert totals["not_attempted"] > 150
    assert sum(totals.values()) == 200
    assert all(op.accepted_cancels == 0 for op in server.operations())
