"""The HTTP client and transport against real aiohttp servers on loopback (and aioresponses for
small response shapes)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import web
from aioresponses import aioresponses
from pytest_aiohttp import AiohttpServer

from bulkcancel._answers import AnswerKind, interpret
from bulkcancel._client import OperationsClient
from bulkcancel._errors import ConfigError, UnsafeEndpointError
from bulkcancel._limits import RateGovernor
from bulkcancel._retry import Backoff
from bulkcancel._transport import AiohttpTransport, RawResponse, check_endpoint
from tests._support import NoAuth

NAME = "projects/p/locations/l/operations/o"


class Token:
    """A token source that counts refreshes."""

    sends_credentials = True

    def __init__(self) -> None:
        self.generation = 1
        self.invalidations = 0

    async def headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer tok-{self.generation}"}

    async def invalidate(self, used: Mapping[str, str]) -> bool:
        self.invalidations += 1
        if used.get("Authorization") == f"Bearer tok-{self.generation}":
            self.generation += 1
        return True


def client_for(
    transport: Any, base: str, *, tokens: Any = None, attempts: int = 3, busy: int = 32
) -> OperationsClient:
    return OperationsClient(
        transport,
        endpoint=base,
        api_version="v1",
        tokens=tokens or NoAuth(),
        governor=RateGovernor(10_000),
        concurrency=4,
        backoff=Backoff(base=0.001, cap=0.005, max_attempts=attempts, busy_attempts=busy),
        rng=random.Random(0),
    )


def google_error(status: int, code: str, *details: dict[str, Any]) -> web.Response:
    body = {"error": {"code": status, "message": code.lower(), "status": code, "details": details}}
    return web.json_response(body, status=status)


async def serve(aiohttp_server: AiohttpServer, handler: Any) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_paths_reach_the_server_unchanged(aiohttp_server: AiohttpServer) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({})

    base = await serve(aiohttp_server, handler)
    name = "projects/p/locations/l/operations/a.b~c_(d)-e"
    async with AiohttpTransport(concurrency=4) as transport:
        client = client_for(transport, base)
        assert (await client.cancel(name)).ok
        assert (await client.get(name)).ok
        page = await client.list_page(
            "projects/p/locations/l", filter_expr="done = false", page_size=5, page_token="a/b+c="
        )
        assert page.ok
    assert seen == [
        f"/v1/{name}:cancel",
        f"/v1/{name}",
        "/v1/projects/p/locations/l/operations?filter=done%20%3D%20false&pageSize=5"
        "&pageToken=a%2Fb%2Bc%3D",
    ]
    assert client.stats.requests == {"cancel": 1, "get": 1, "list": 1}


async def test_redirects_are_not_followed_and_credentials_stay_home(
    aiohttp_server: AiohttpServer,
) -> None:
    elsewhere: list[Mapping[str, str]] = []

    async def trap(request: web.Request) -> web.Response:
        elsewhere.append(dict(request.headers))
        return web.json_response({"done": True})

    trap_base = await serve(aiohttp_server, trap)

    async def redirecting(request: web.Request) -> web.Response:
        raise web.HTTPFound(trap_base + request.raw_path)

    base = await serve(aiohttp_server, redirecting)
    async with AiohttpTransport(concurrency=4) as transport:
        answer = await client_for(transport, base, tokens=Token()).cancel(NAME)
    assert answer.kind is AnswerKind.REDIRECT
    assert answer.attempts == 1
    assert elsewhere == []


async def test_body_cap(aiohttp_server: AiohttpServer) -> None:
    big = b'{"name": "' + b"x" * 200_000 + b'"}'

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("chunked"):
            response = web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request)
            for i in range(0, len(big), 4096):
                await response.write(big[i : i + 4096])
            return response
        return web.Response(body=big, content_type="application/json")

    base = await serve(aiohttp_server, handler)
    async with AiohttpTransport(concurrency=2, max_body=100_000) as transport:
        declared = await transport.request("GET", base + "/v1/x", {}, None)
        streamed = await transport.request("GET", base + "/v1/x?chunked=1", {}, None)
    assert declared.oversized
    assert streamed.oversized
    assert interpret(declared).kind is AnswerKind.OVERSIZED


async def test_transient_failures_retry_then_give_up(aiohttp_server: AiohttpServer) -> None:
    calls = {"n": 0}

    async def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] > 100 or calls["n"] == 1:
            return web.Response(
                status=502, text="<html>bad gateway</html>", content_type="text/html"
            )
        if calls["n"] == 2:
            return google_error(503, "UNAVAILABLE")
        if calls["n"] == 3:
            assert request.transport is not None
            request.transport.close()  # a reset, mid-request
            await asyncio.sleep(0.01)
        return web.json_response({})

    base = await serve(aiohttp_server, handler)
    async with AiohttpTransport(concurrency=2) as transport:
        client = client_for(transport, base, attempts=5)
        answer = await client.cancel(NAME)
        assert answer.ok
        assert answer.attempts == 4
        calls["n"] = 100  # from now on: always an HTML 502
        gave_up = await client_for(transport, base, attempts=3).cancel(NAME)
    assert gave_up.kind is AnswerKind.HTTP_ERROR
    assert gave_up.status == 502
    assert gave_up.attempts == 3


async def test_a_key_shedding_load_is_retried_longer_an_operation_failing_alone_is_not(
    aiohttp_server: AiohttpServer,
) -> None:
    """A server that answers many first tries 503 while it answers others is up and busy: a
    call there that draws more 503s in a row than ``max_attempts`` tries on (under 70% of
    503s, 1-6 operations of 250 per run ended ``error`` after eight). One operation that
    always fails beside others that pass gets the usual tries."""
    tries: dict[str, int] = {}
    failing = {"unlucky": 6, "poison": 1_000}  # 503s before a success

    async def handler(request: web.Request) -> web.Response:
        leaf = request.path.split("/")[-1].split(":")[0]
        tries[leaf] = tries.get(leaf, 0) + 1
        if tries[leaf] <= failing.get(leaf, 1 if leaf.startswith("busy") else 0):
            return google_error(503, "UNAVAILABLE")
        return web.json_response({})

    base = await serve(aiohttp_server, handler)
    prefix = NAME.rsplit("/", 1)[0]
    async with AiohttpTransport(concurrency=4) as transport:
        client = client_for(transport, base, attempts=3, busy=8)
        busy = [client.cancel(f"{prefix}/busy-{i}") for i in range(16)]
        *others, unlucky = await asyncio.gather(*busy, client.cancel(f"{prefix}/unlucky"))
        assert all(answer.ok for answer in others)
        assert unlucky.ok, unlucky
        assert unlucky.attempts == 7  # six 503s in a row, past max_attempts (3)

        client = client_for(transport, base, attempts=3, busy=8)
        fine = [client.cancel(f"{prefix}/fine-{i}") for i in range(16)]
        *others, poison = await asyncio.gather(*fine, client.cancel(f"{prefix}/poison"))
        assert all(answer.ok for answer in others)
        assert not poison.ok
        assert poison.attempts == 3
        assert tries["poison"] == 3


async def test_a_key_whose_retries_fail_more_than_its_first_tries_is_busy(
    aiohttp_server: AiohttpServer,
) -> None:
    """Behind a queue that sheds what overflows, a call's first try mostly passes while
    retries, sent into the storm, mostly fail (15% of first tries, over half of all tries):
    the other calls' tries since this call's first failure say the key is busy too."""
    tries: dict[str, int] = {}
    failing = {"unlucky": 5, "flaky-0": 2, "flaky-1": 2, "flaky-2": 2}  # 503s before a success
    second_try, crowd_done = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        leaf = request.path.split("/")[-1].split(":")[0]
        tries[leaf] = tries.get(leaf, 0) + 1
        if leaf == "unlucky" and tries[leaf] == 2:
            second_try.set()  # (its first failure is counted: now the crowd)
            await crowd_done.wait()
        if tries[leaf] <= failing.get(leaf, 0):
            return google_error(503, "UNAVAILABLE")
        return web.json_response({})

    base = await serve(aiohttp_server, handler)
    prefix = NAME.rsplit("/", 1)[0]
    async with AiohttpTransport(concurrency=16) as transport:
        client = client_for(transport, base, attempts=3, busy=8)
        unlucky = asyncio.ensure_future(client.cancel(f"{prefix}/unlucky"))
        await second_try.wait()
        names = [f"flaky-{i}" for i in range(3)] + [f"fine-{i}" for i in range(10)]
        crowd = await asyncio.gather(*(client.cancel(f"{prefix}/{leaf}") for leaf in names))
        assert all(answer.ok for answer in crowd)
        crowd_done.set()
        answer = await unlucky
    # (first tries: 4 of 14 failed, under a quarter by the moving average; the crowd's
    # tries: 6 of 19)
    assert answer.ok, answer
    assert answer.attempts == 6  # five 503s in a row, past max_attempts (3)


async def test_timeouts_are_transient(aiohttp_server: AiohttpServer) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({})

    base = await serve(aiohttp_server, slow)
    async with AiohttpTransport(concurrency=2, timeout=0.05) as transport:
        answer = await client_for(transport, base, attempts=2).get(NAME)
    assert answer.kind is AnswerKind.TRANSPORT
    assert answer.attempts == 2
    assert "Timeout" in (answer.message or "")


async def test_throttling_honours_hints_and_is_counted(aiohttp_server: AiohttpServer) -> None:
    answers = [
        google_error(
            429,
            "RESOURCE_EXHAUSTED",
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.01s"},
        ),
        web.Response(status=429, headers={"Retry-After": "0"}),
        google_error(
            403,
            "PERMISSION_DENIED",
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
        ),
        web.json_response({}),
    ]

    async def handler(request: web.Request) -> web.Response:
        return answers.pop(0)

    base = await serve(aiohttp_server, handler)
    async with AiohttpTransport(concurrency=2) as transport:
        client = client_for(transport, base, attempts=2)
        answer = await client.cancel(NAME)
    assert answer.ok
    assert answer.throttled == 3
    assert client.stats.throttled == 3


async def test_401_refreshes_once_and_retries(aiohttp_server: AiohttpServer) -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer tok-2":
            return google_error(401, "UNAUTHENTICATED")
        return web.json_response({})

    base = await serve(aiohttp_server, handler)
    tokens = Token()
    async with AiohttpTransport(concurrency=2) as transport:
        client = client_for(transport, base, tokens=tokens)
        assert (await client.cancel(NAME)).ok
    assert tokens.invalidations == 1


@pytest.mark.parametrize("odd", [5, True, "details", {"@type": "x"}, None, 1.5])
def test_an_envelope_whose_details_or_errors_are_not_lists_is_still_read(odd: object) -> None:
    """``"details": 5`` crashed the run with a TypeError (exit 1, every operation an internal
    error, those never sent too): a server's odd envelope is read for what it does say."""
    for field in ("details", "errors"):
        body = json.dumps(
            {"error": {"code": 400, "status": "FAILED_PRECONDITION", "message": "odd", field: odd}}
        ).encode()
        answer = interpret(RawResponse(400, body, "application/json"))
        assert answer.kind is AnswerKind.API_ERROR
        assert (answer.status, answer.code, answer.message) == (400, "FAILED_PRECONDITION", "odd")
        assert answer.reason is None and answer.quota is None and answer.retry_delay is None


def test_interpret_error_envelopes() -> None:
    legacy = json.dumps(
        {"error": {"code": 403, "message": "slow", "errors": [{"reason": "rateLimitExceeded"}]}}
    ).encode()
    answer = interpret(RawResponse(403, legacy, "application/json"))
    assert answer.reason == "rateLimitExceeded"
    assert answer.code is None
    html = interpret(RawResponse(404, b"<!DOCTYPE html><title>Error 404</title>", "text/html"))
    assert html.kind is AnswerKind.HTTP_ERROR
    assert "HTML" in (html.message or "")
    truncated = interpret(RawResponse(200, b'{"name": "x', "application/json"))
    assert truncated.kind is AnswerKind.MALFORMED
    assert interpret(RawResponse(200, b"", "application/json")).ok
    both = json.dumps(
        {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "9s"}
                ],
            }
        }
    ).encode()
    assert interpret(RawResponse(429, both, "application/json", retry_after="2")).retry_delay == 2


async def test_small_shapes_with_aioresponses() -> None:
    """Mocks are fine for the shape of one answer; everything with pools and timeouts above
    talks to real servers."""
    base = "https://clouddeploy.googleapis.com"
    with aioresponses() as mocked:
        mocked.post(
            f"{base}/v1/{NAME}:cancel",
            status=501,
            payload={"error": {"code": 501, "status": "UNIMPLEMENTED", "message": "no"}},
        )
        mocked.get(
            f"{base}/v1/{NAME}",
            payload={"name": NAME, "done": True, "error": {"code": 1, "message": "cancelled"}},
        )
        async with AiohttpTransport(concurrency=2) as transport:
            client = client_for(transport, base)
            cancel = await client.cancel(NAME)
            get = await client.get(NAME)
    assert cancel.code == "UNIMPLEMENTED"
    assert get.body is not None
    assert get.body["error"]["code"] == 1


def test_regional_endpoints() -> None:
    client = client_for(None, "https://{location}-aiplatform.googleapis.com")
    assert client.url("projects/p/locations/us-east1/operations/1") == (
        "https://us-east1-aiplatform.googleapis.com/v1/projects/p/locations/us-east1/operations/1"
    )
    assert client.url("projects/p/locations/global/operations/1") == (
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/operations/1"
    )


@pytest.mark.parametrize(
    ("endpoint", "credentials", "ok"),
    [
        ("https://clouddeploy.googleapis.com", True, True),
        ("https://clouddeploy.googleapis.com/", True, True),
        ("http://127.0.0.1:8080", True, True),
        ("http://127.5.6.7:8080", True, True),
        ("http://localhost:1", True, True),
        ("http://[::1]:8080", True, True),
        ("http://example.com", True, False),
        ("http://10.0.0.1", True, False),
        ("http://localhost.evil.com", True, False),
        ("http://example.com", False, True),  # anonymous: nothing to leak
    ],
)
def test_endpoint_safety(endpoint: str, credentials: bool, ok: bool) -> None:
    if ok:
        assert check_endpoint(endpoint, sends_credentials=credentials) == endpoint.rstrip("/")
    else:
        with pytest.raises(UnsafeEndpointError, match="plain HTTP"):
            check_endpoint(endpoint, sends_credentials=credentials)


@pytest.mark.parametrize(
    "endpoint", ["ftp://x.com", "clouddeploy.googleapis.com", "https://u:p@x.com", "https://x?a=1"]
)
def test_endpoint_shape(endpoint: str) -> None:
    with pytest.raises(ConfigError):
        check_endpoint(endpoint, sends_credentials=False)


async def test_a_stopped_client_sends_nothing_more() -> None:
    calls: list[str] = []

    async def handler(method: str, url: str, headers: Any, body: bytes | None) -> RawResponse:
        calls.append(url)
        return RawResponse(200, b"{}", "application/json")

    from bulkcancel._transport import CallableTransport

    client = client_for(CallableTransport(handler), "http://h.invalid")
    assert (await client.cancel(NAME)).ok
    client.stop()
    answer = await client.cancel(NAME)
    assert client.stopped
    assert answer.kind is AnswerKind.STOPPED
    assert answer.attempts == 0
    assert len(calls) == 1
