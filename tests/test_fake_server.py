"""The fake over HTTP and from the command line: one vocabulary with the in-memory fake, the
request log, location modes, locations/- with partial success, and gcloud-sane metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulkcancel._transport import TransportError
from bulkcancel.testing import (
    Behavior,
    FakeOperationsServer,
    MemoryOperations,
    OperationsModel,
    ParentMode,
    Personality,
    populate,
)

P = "projects/p/locations/l"


async def call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, allow_redirects=False, **kw) as response:
        raw = await response.read()
        if response.content_type == "application/json":
            return response.status, json.loads(raw)
        return response.status, raw


def shape(status: int, body: Any) -> tuple[int, object]:
    if not isinstance(body, dict):
        return status, "html"
    if status != 200:
        return status, body["error"]["status"]
    return status, (body.get("done", False), body.get("error", {}).get("code"))


@pytest.mark.parametrize("behavior", list(Behavior))
async def test_memory_and_http_fakes_answer_alike(behavior: Behavior) -> None:
    name = f"{P}/operations/x"
    server = FakeOperationsServer()
    mem = MemoryOperations()
    server.add_operation(name, behavior)
    mem.add(name, behavior.value, polls=0)
    seen: dict[str, list[tuple[int, object]]] = {"http": [], "memory": []}
    async with server.serve() as url, aiohttp.ClientSession() as session:
        for method, path in (("POST", f"/v1/{name}:cancel"), ("GET", f"/v1/{name}")):
            status, body = await call(session, method, url + path)
            seen["http"].append(shape(status, body))
            raw = await mem.transport.request(method, "http://mem.invalid" + path, {}, b"{}")
            is_json = raw.content_type.startswith("application/json")
            seen["memory"].append(shape(raw.status, json.loads(raw.body) if is_json else raw.body))
    assert seen["http"] == seen["memory"]
    if behavior is Behavior.CANCELS:
        assert seen["http"] == [(200, (False, None)), (200, (True, 1))]


async def test_memory_fake_resets_as_a_transport_error() -> None:
    mem = MemoryOperations()
    mem.model.inject("reset")
    with pytest.raises(TransportError):
        await mem.transport.request("GET", f"http://mem.invalid/v1/{P}/operations/x", {}, None)
    assert mem.calls["get"] == 1


async def test_user_agent_and_token_presence_are_recorded() -> None:
    server = FakeOperationsServer()
    server.add_operation(f"{P}/operations/a")
    async with server.serve() as url, aiohttp.ClientSession() as session:
        headers = {"User-Agent": "bulkcancel/test", "Authorization": "Bearer t"}
        await call(session, "GET", f"{url}/v1/{P}/operations/a", headers=headers)
    record = server.log[-1]
    assert record.user_agent == "bulkcancel/test"
    line = record.to_json()
    assert line["token"] is True and "Bearer" not in json.dumps(line)
    assert (line["method"], line["path"], line["status"]) == ("GET", f"/v1/{P}/operations/a", 200)


def test_latency_jitter_splits_the_wait_and_varies_it_around_the_latency() -> None:
    """No jitter: the whole latency comes after the model saw the request. With jitter, half
    before (the quota sees requests out of send order) and half after, each varied, the mean
    kept; the same seed draws the same waits."""
    plain = FakeOperationsServer(seed=3)
    plain.latency = 0.2
    assert plain.ways() == (0.0, 0.2)
    plain.latency_jitter = 0.5
    again = FakeOperationsServer(seed=3)
    again.latency, again.latency_jitter = 0.2, 0.5
    draws = [plain.ways() for _ in range(4000)]
    assert draws[:20] == [again.ways() for _ in range(20)]
    ups = [up for up, _ in draws]
    assert len(set(ups)) == len(ups) and min(ups) < 0.05 < 0.2 < max(ups)
    assert sum(up + down for up, down in draws) / len(draws) == pytest.approx(0.2, rel=0.03)
    none = FakeOperationsServer()
    none.latency_jitter = 0.5
    assert none.ways() == (0.0, 0.0)  # jitter of no latency is none


async def test_with_jitter_the_model_sees_a_request_after_its_way_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeOperationsServer()
    server.add_operation(f"{P}/operations/a")
    server.latency, server.latency_jitter = 0.1, 0.5
    monkeypatch.setattr(server, "ways", lambda: (0.05, 0.0))
    async with server.serve() as url, aiohttp.ClientSession() as session:
        sent = server.clock()
        status, _ = await call(session, "GET", f"{url}/v1/{P}/operations/a")
    assert status == 200
    assert server.log[-1].at - sent >= 0.05


async def test_the_stats_route_gives_the_quota_oracle_for_a_ceiling() -> None:
    server = FakeOperationsServer()
    server.personality("bucket-small", rate=10.0)
    server.add_operation(f"{P}/operations/a")
    async with server.serve() as url, aiohttp.ClientSession() as session:
        await call(session, "GET", f"{url}/v1/{P}/operations/a")
        status, plain = await call(session, "GET", f"{url}/_fake/stats")
        assert (status, plain["quota_oracle_seconds"]) == (200, None)
        status, stats = await call(session, "GET", f"{url}/_fake/stats?ceiling=100")
        assert (status, stats["quota_oracle_seconds"]) == (200, 0.0)  # one request: no wait
        status, bad = await call(session, "GET", f"{url}/_fake/stats?ceiling=-3")
        assert status == 400 and "ceiling" in bad["error"]
    assert len(server.log) == 1  # the control route is not logged


def test_metadata_times_are_on_the_wall_clock_and_target_is_a_path() -> None:
    now = [5.0]  # a monotonic clock far from the epoch's
    m = OperationsModel(clock=lambda: now[0], wall=lambda: 1_700_000_000.0 + now[0])
    name = f"{P}/operations/a"
    m.add_operation(name, Behavior.CANCELS, cancel_delay=2.0, age=600, target="prod")
    assert m.handle("POST", f"/v1/{name}:cancel", {}).status == 200
    now[0] = 9.0
    body = json.loads(m.handle("GET", f"/v1/{name}", {}).body)
    meta = body["metadata"]
    created = datetime.fromisoformat(meta["createTime"].replace("Z", "+00:00")).timestamp()
    ended = datetime.fromisoformat(meta["endTime"].replace("Z", "+00:00")).timestamp()
    assert created == pytest.approx(1_700_000_005.0 - 600)
    assert ended == pytest.approx(1_700_000_005.0 + 2.0)  # accepted at 5, done 2 s later
    assert meta["target"] == f"{P}/targets/prod"


def test_dash_listing_with_partial_success_names_the_unreachable() -> None:
    m = OperationsModel()
    populate(m, "projects/p/locations/a", 2)
    populate(m, "projects/p/locations/b", 3)
    m.set_mode("projects/p/locations/b", ParentMode.UNAVAILABLE)
    dash = "/v1/projects/p/locations/-/operations"
    assert m.handle("GET", dash, {}).status == 400  # locations/- is off by default
    m.dash_listing = True
    assert m.handle("GET", dash, {}).status == 503  # one location down fails the whole list
    assert m.handle("GET", dash + "?returnPartialSuccess=true", {}).status == 501
    m.partial_success = True
    body = json.loads(m.handle("GET", dash + "?returnPartialSuccess=true", {}).body)
    assert len(body["operations"]) == 2
    assert body["unreachable"] == ["projects/p/locations/b"]


def run_cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulkcancel", *args],
        capture_output=True, text=True, timeout=60, check=False, **kw,
    )  # fmt: skip


def test_help_documents_every_personality() -> None:
    done = run_cli("fake-server", "--help")
    assert done.returncode == 0
    for personality in Personality:
        assert personality.value in done.stdout, personality
    for flag in ("--request-log", "--location-mode", "--dash-listing", "--partial-success",
                 "--latency-jitter"):  # fmt: skip
        assert flag in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--personality", "bucket-small"], "needs a quota rate"),
        (["--personality", "nope"], "unknown personality"),
        (["--location-mode", "us-east1"], "LOCATION=VALUE"),
        (["--location-mode", "us-east1=sleepy"], "unknown mode"),
        (["--latency-jitter", "-0.5"], "--latency-jitter"),
        (["--latency", "-1"], "--latency"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = run_cli("fake-server", "--port", "0", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_command_line_personalities_modes_and_request_log(tmp_path: Path) -> None:
    log, names_out = tmp_path / "requests.jsonl", tmp_path / "names.txt"
    server = subprocess.Popen(
        [sys.executable, "-m", "bulkcancel", "fake-server", "--port", "0", "--operations", "2",
         "--parent", "projects/p/locations/us-central1",
         "--parent", "projects/p/locations/us-east1",
         "--personality", "bucket-small,429-bare", "--quota", "1000", "--location-quota",
         "us-central1=0.001", "--location-mode", "us-east1=unsupported", "--dash-listing",
         "--request-log", str(log), "--names-out", str(names_out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stderr is not None
        url = server.stdout.readline().strip()
        hint = server.stderr.readline()
        assert f"--endpoint {url} --anonymous" in hint
        assert (
            "--parent projects/p/locations/us-central1 --parent projects/p/locations/us-east1"
            in hint
        )
        import urllib.error
        import urllib.request

        def status(method: str, path: str) -> int:
            request = urllib.request.Request(url + path, method=method)
            request.add_header("User-Agent", "probe/1")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        central, east = names_out.read_text().split()[0], names_out.read_text().split()[2]
        assert [status("GET", f"/v1/{central}") for _ in range(2)] == [200, 429]  # burst 1
        assert status("POST", f"/v1/{east}:cancel") == 501
        assert status("GET", "/v1/projects/p/locations/-/operations") == 200
    finally:
        server.terminate()
        server.wait(10)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["status"] for line in lines] == [200, 429, 501, 200]
    assert {line["user_agent"] for line in lines} == {"probe/1"}
    assert all(line["token"] is False for line in lines)
