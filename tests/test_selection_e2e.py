"""Issue 5 against the fake on loopback: locations/- fan-out, selection flags, presets, and
re-rendering saved reports."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Mapping
from pathlib import Path

import pytest

from bulkcancel._client import OperationsClient
from bulkcancel._limits import RateGovernor
from bulkcancel._presets import PRESETS
from bulkcancel._transport import CallableTransport, RawResponse
from bulkcancel.testing import Behavior, FakeOperationsServer, ParentMode, populate
from tests._e2e import load_report, outcomes, run_cli
from tests._support import NoAuth

FAST = ["--anonymous", "--yes", "--quiet", "--rate", "500", "--deadline", "3"]


async def test_dash_location_fans_out_over_every_page_of_locations(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names: list[str] = []
    for loc in ("us-central1", "europe-west1", "asia-east1"):
        names += populate(server, f"projects/p/locations/{loc}", 12)
    for i in range(55):  # more than a page of locations (the fake's default page is 50)
        server.add_location("projects/p", f"empty-{i:02d}")
    populate(server, "projects/p/locations/locked", 3)
    server.set_mode("projects/p/locations/locked", ParentMode.DENIED)
    populate(server, "projects/other/locations/us-central1", 4)  # another project: untouched
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--parent", "projects/p/locations/-", "--endpoint", url, *FAST,
            "--report", str(report_path),
        )  # fmt: skip
    assert result.exit_code == 3  # the locked location is reported, not fatal
    got = outcomes(load_report(report_path))
    assert {n: o for n, o in got.items() if "/operations/" in n} == dict.fromkeys(
        names, "cancelled"
    )
    assert got["projects/p/locations/locked"] == "error"
    location_calls = server.requests("locations")
    assert len(location_calls) == 2  # two pages of locations
    listed = {r.name for r in server.requests("list")}
    assert {f"projects/p/locations/empty-{i:02d}" for i in range(55)} <= listed
    assert "projects/other/locations/us-central1" not in listed
    assert all(not r.name.startswith("projects/other/") for r in server.log)


async def test_a_service_that_lists_dash_itself_gets_one_call(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    server.dash_listing = True
    names = populate(server, "projects/p/locations/a", 5) + populate(
        server, "projects/p/locations/b", 5
    )
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--service", "redis", "--parent", "projects/p/locations/-",
            "--endpoint", url, *FAST, "--format", "json",
        )  # fmt: skip
    assert result.exit_code == 0
    assert set(outcomes(json.loads(result.stdout))) == set(names)
    assert server.requests("locations") == []
    assert {r.name for r in server.requests("list") if not r.query.get("pageToken")} >= {
        "projects/p/locations/-"
    }


async def test_selection_flags_compose_with_the_server_filter(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    parent = "projects/p/locations/l"
    rng = random.Random(3)
    expected: set[str] = set()
    for i in range(240):
        age = rng.choice([600, 3 * 3600, 2 * 86400])
        target = rng.choice(["prod", "staging"])
        verb = rng.choice(["deploy", "render"])
        behavior = rng.choice([Behavior.CANCELS, Behavior.ALREADY_DONE])
        name = f"{parent}/operations/{'keep' if i % 2 else 'skip'}-{i:03d}"
        server.add_operation(name, behavior, age=age, target=target, verb=verb)
        if (
            behavior is Behavior.CANCELS
            and age > 7200
            and target == "prod"
            and verb == "deploy"
            and "/keep-" in name
        ):
            expected.add(name)
    assert len(expected) >= 3
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", "--parent", parent, "--filter", "done=false", "--older-than", "2h",
            "--target", "targets/prod$", "--verb", "DEPLOY", "--match", "/keep-", "--endpoint", url,
            *FAST, "--report", str(report_path),
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = load_report(report_path)
    assert set(outcomes(report)) == expected
    assert {r.name for r in server.requests("cancel")} == expected
    skipped = report["selection"]["skipped"]
    assert set(skipped) <= {"match", "older_than", "target", "verb"}
    assert sum(skipped.values()) == report["selection"]["listed"] - len(expected)
    assert all(skipped.get(k, 0) > 0 for k in ("match", "older_than"))


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--older-than", "soon"), ("--match", "(unclosed"), ("--target", "[z-a]")],
)
async def test_bad_selection_values_exit_2(flag: str, value: str) -> None:
    result = await run_cli("cancel", "projects/p/locations/l/operations/x", flag, value, *FAST)
    assert result.exit_code == 2
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("service", sorted(PRESETS))
async def test_each_preset_against_the_fake(service: str, tmp_path: Path) -> None:
    shape = PRESETS[service].patterns[0]
    good = shape.replace("*", "x").rsplit("/", 1)[0] + "/op-1"
    wrong = "organizations/o/operations/op-2"
    server = FakeOperationsServer()
    server.add_operation(good)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        result = await run_cli(
            "cancel", good, wrong, "--service", service, "--endpoint", url, *FAST,
            "--report", str(report_path),
        )  # fmt: skip
    assert result.exit_code == 3  # the wrong shape is invalid
    assert outcomes(load_report(report_path)) == {good: "cancelled", wrong: "invalid"}
    assert {r.raw_path for r in server.log if r.kind == "cancel"} == {f"/v1/{good}:cancel"}


async def test_vertex_ai_picks_the_regional_host_from_each_name() -> None:
    urls: list[str] = []

    async def record(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        urls.append(url)
        return RawResponse(200, b"{}", "application/json")

    preset = PRESETS["aiplatform"]
    client = OperationsClient(
        CallableTransport(record),
        endpoint=preset.endpoint,
        api_version=preset.api_version,
        tokens=NoAuth(),
        governor=RateGovernor(1000.0),
        concurrency=2,
    )
    await client.cancel("projects/p/locations/europe-west4/operations/123")
    await client.cancel("projects/p/locations/global/operations/9")
    await client.get("projects/p/locations/us-central1/endpoints/e/operations/7")
    assert urls == [
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/operations/123:cancel",
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/operations/9:cancel",
        "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/endpoints/e/operations/7",
    ]


async def test_saved_reports_re_render_as_table_csv_and_json(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, "projects/p/locations/l", 6)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        await run_cli(
            "cancel", *names, "projects/p/locations/l/operations/gone", "bad line",
            "--endpoint", url, *FAST, "--report", str(report_path),
        )  # fmt: skip
    saved = load_report(report_path)
    as_json = await run_cli("report", str(report_path), "--format", "json")
    assert json.loads(as_json.stdout) == saved
    as_csv = await run_cli("report", str(report_path), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 8
    assert {r["outcome"] for r in rows} == {"cancelled", "not_found", "invalid"}
    table = await run_cli("report", str(report_path))
    for word in ("cancelled", "not_found", "invalid", "NOT_FOUND"):
        assert word in table.stdout
    (tmp_path / "broken.json").write_text("{not json")
    broken = await run_cli("report", str(tmp_path / "broken.json"))
    assert broken.exit_code == 2
    assert "Traceback" not in broken.stdout + broken.stderr
