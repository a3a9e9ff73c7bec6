"""The fake Operations server follows WIRE.md: tests and the demo are only as good as it is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bulkcancel.testing import (
    Behavior,
    FakeOperationsServer,
    Fault,
    ParentMode,
    demo_scenario,
    populate,
)

P = "projects/p/locations/l"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeOperationsServer, aiohttp.ClientSession, str]]:
    server = FakeOperationsServer()
    async with server.serve() as url, aiohttp.ClientSession() as session:
        yield server, session, url


async def call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, allow_redirects=False, **kw) as response:
        raw = await response.read()
        if response.content_type == "application/json":
            return response.status, json.loads(raw)
        return response.status, raw


Fake = tuple[FakeOperationsServer, aiohttp.ClientSession, str]


async def test_running_operation_has_no_done_key_and_cancel_sets_code_1(fake: Fake) -> None:
    server, session, url = fake
    server.add_operation(f"{P}/operations/a", Behavior.CANCELS, cancel_delay=0)
    status, body = await call(session, "GET", f"{url}/v1/{P}/operations/a")
    assert status == 200 and "done" not in body
    assert body["metadata"]["@type"].endswith("OperationMetadata")
    status, body = await call(session, "POST", f"{url}/v1/{P}/operations/a:cancel", json={})
    assert (status, body) == (200, {})
    _, body = await call(session, "GET", f"{url}/v1/{P}/operations/a")
    assert body["done"] is True and body["error"]["code"] == 1
    assert server.operation(f"{P}/operations/a").accepted_cancels == 1


@pytest.mark.parametrize(
    ("behavior", "cancel_status", "done_body"),
    [
        (Behavior.COMPLETES_ANYWAY, 200, "response"),
        (Behavior.FAILS_ANYWAY, 200, "error"),
        (Behavior.ALREADY_DONE, 400, "response"),
        (Behavior.NOT_CANCELLABLE, 400, None),
        (Behavior.NEVER, 200, None),
    ],
)
async def test_behaviours(
    fake: Fake, behavior: Behavior, cancel_status: int, done_body: str | None
) -> None:
    server, session, url = fake
    server.add_operation(f"{P}/operations/x", behavior)
    status, body = await call(session, "POST", f"{url}/v1/{P}/operations/x:cancel")
    assert status == cancel_status
    if status == 400:
        assert body["error"]["status"] == "FAILED_PRECONDITION"
    _, op = await call(session, "GET", f"{url}/v1/{P}/operations/x")
    if done_body is None:
        assert "done" not in op
    else:
        assert op["done"] is True and done_body in op
        if done_body == "error":
            assert op["error"]["code"] != 1


async def test_parent_modes(fake: Fake) -> None:
    server, session, url = fake
    for parent, mode in (
        ("projects/p/locations/unsup", ParentMode.UNSUPPORTED),
        ("projects/p/locations/unrouted", ParentMode.UNROUTED),
        ("projects/locked", ParentMode.DENIED),
    ):
        server.set_mode(parent, mode)
    for loc in ("unsup", "unrouted"):
        server.add_operation(f"projects/p/locations/{loc}/operations/o")
    server.add_operation("projects/locked/locations/l/operations/o")
    status, body = await call(
        session, "POST", f"{url}/v1/projects/p/locations/unsup/operations/o:cancel"
    )
    assert status == 501 and body["error"]["status"] == "UNIMPLEMENTED"
    status, raw = await call(
        session, "POST", f"{url}/v1/projects/p/locations/unrouted/operations/o:cancel"
    )
    assert status == 404 and b"<html" in raw
    status, _ = await call(session, "GET", f"{url}/v1/projects/p/locations/unrouted/operations/o")
    assert status == 200
    status, body = await call(session, "GET", f"{url}/v1/projects/locked/locations/l/operations/o")
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    assert (
        server.expected_outcome("projects/locked/locations/l/operations/o") == "permission_denied"
    )
    assert server.expected_outcome("projects/p/locations/unrouted/operations/o") == "unsupported"
    status, body = await call(session, "GET", f"{url}/v1/{P}/operations/nope")
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"


async def test_list_filters_and_pages_until_no_token(fake: Fake) -> None:
    server, session, url = fake
    running = populate(server, P, 13, Behavior.CANCELS)
    populate(server, P, 9, Behavior.ALREADY_DONE, prefix="done-")
    for expr, want in (("done=false", 13), ("done = false", 13), ("done:true", 9), ("", 22)):
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            params = {"pageSize": "4", "filter": expr} | ({"pageToken": token} if token else {})
            status, body = await call(session, "GET", f"{url}/v1/{P}/operations", params=params)
            assert status == 200
            pages += 1
            seen += [o["name"] for o in body.get("operations", [])]
            token = body.get("nextPageToken", "")
            if not token:
                break
        assert len(seen) == len(set(seen)) == want, expr
        assert pages == -(-want // 4)
        if expr == "done=false":
            assert seen == running
    status, body = await call(
        session, "GET", f"{url}/v1/{P}/operations", params={"filter": "name:foo"}
    )
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    status, _ = await call(session, "GET", f"{url}/v1/{P}/operations", params={"pageSize": "-1"})
    assert status == 400


async def test_repeated_page_token_and_locations(fake: Fake) -> None:
    server, session, url = fake
    populate(server, P, 5)
    populate(server, "projects/p/locations/m", 1)
    server.add_location("projects/p", "empty-region")
    server.repeat_page_token(P)
    tokens = []
    token = ""
    for _ in range(3):
        params = {"pageSize": "2"} | ({"pageToken": token} if token else {})
        _, body = await call(session, "GET", f"{url}/v1/{P}/operations", params=params)
        token = body["nextPageToken"]
        tokens.append(token)
    assert tokens[0] == tokens[1] == tokens[2]
    _, body = await call(session, "GET", f"{url}/v1/projects/p/locations")
    assert [loc["locationId"] for loc in body["locations"]] == ["empty-region", "l", "m"]
    status, _ = await call(session, "GET", f"{url}/v1/projects/p/locations/-/operations")
    assert status == 400
    server.dash_listing = True
    _, body = await call(session, "GET", f"{url}/v1/projects/p/locations/-/operations")
    assert len(body["operations"]) == 6


async def test_faults_quota_auth_and_log(fake: Fake) -> None:
    server, session, url = fake
    server.add_operation(f"{P}/operations/a")
    get = f"{url}/v1/{P}/operations/a"
    server.inject(Fault.THROTTLE_HINTED)
    status, body = await call(session, "GET", get)
    assert status == 429
    assert body["error"]["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"
    assert body["error"]["details"][1]["retryDelay"] == "0.2s"
    server.inject(Fault.BAD_GATEWAY_HTML)
    assert (await call(session, "GET", get))[0] == 502
    server.inject(Fault.REDIRECT)
    assert (await call(session, "GET", get))[0] == 302
    server.inject(Fault.OVERSIZED)
    _, body = await call(session, "GET", get)
    assert len(body["name"]) > 4 * 1024 * 1024
    server.inject(Fault.RESET)
    with pytest.raises(aiohttp.ClientError):  # a POST, which aiohttp never retries by itself
        await call(session, "POST", get + ":cancel")
    assert server.log[-1].status == 0
    assert (await call(session, "GET", get))[0] == 200  # one-shot injections are used up
    server.inject(Fault.UNAVAILABLE, times=None, kinds=["cancel"])
    assert (await call(session, "POST", get + ":cancel"))[0] == 503
    assert (await call(session, "POST", get + ":cancel"))[0] == 503
    assert (await call(session, "GET", get))[0] == 200
    server.valid_tokens = {"good"}
    assert (await call(session, "GET", get))[0] == 401
    assert (await call(session, "GET", get, headers={"Authorization": "Bearer good"}))[0] == 200
    server.valid_tokens = None
    server.quota(5, burst=2)
    statuses = [(await call(session, "GET", get))[0] for _ in range(6)]
    assert statuses.count(429) >= 3
    assert [r.status for r in server.log][:3] == [429, 502, 302]
    assert server.log[-1].raw_path == f"/v1/{P}/operations/a"
    assert {r.kind for r in server.log} == {"get", "cancel"}
    assert server.operation(f"{P}/operations/a").accepted_cancels == 0


async def test_paths_are_matched_raw(fake: Fake) -> None:
    server, session, url = fake
    server.add_operation(f"{P}/operations/a")
    from yarl import URL

    raw = URL(f"{url}/v1/{P}/operations/x/../a", encoded=True)
    async with session.get(raw, allow_redirects=False) as response:
        status = response.status
    assert status == 404  # never resolved into .../operations/a
    assert server.log[-1].raw_path.endswith("/x/../a")


def test_demo_scenario_is_big_and_mixed() -> None:
    server, expected = demo_scenario(3)
    assert len(server.operations()) >= 1000
    outcomes = set(expected.values())
    assert {"cancelled", "completed_anyway", "unsupported", "still_running"} <= outcomes
    assert {"not_found", "invalid", "permission_denied"} <= outcomes
    locations = {n.split("/")[3] for n in expected if n.startswith("projects/demo-shop/")}
    assert len(locations) >= 3
    assert server.faults is not None and server.faults.throttle > 0


async def test_a_path_outside_every_route_gets_the_front_ends_html_404(fake: Fake) -> None:
    """An extra ``/v1`` (a wrong --endpoint) never reaches the service: like Google's front
    end, the fake answers an HTML page, not the service's JSON NOT_FOUND."""
    server, session, url = fake
    server.add_operation(f"{P}/operations/op")
    for method, path in [
        ("GET", f"/v1/v1/{P}/operations/op"),
        ("POST", f"/v1/v1/{P}/operations/op:cancel"),
    ]:
        status, body = await call(session, method, url + path)
        assert status == 404
        assert isinstance(body, bytes) and b"<html" in body.lower()
    status, body = await call(session, "GET", f"{url}/v1/{P}/operations/op")
    assert status == 200 and body["name"] == f"{P}/operations/op"
