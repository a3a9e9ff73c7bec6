"""The client's guards against doomed runs and hostile answers, on real loopback servers:
fail fast, secrets scrubbed, answers about other operations, the User-Agent, budgets."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pytest_aiohttp import AiohttpServer

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._classify import classify
from bulkcancel._client import USER_AGENT, OperationsClient
from bulkcancel._limits import RateGovernor
from bulkcancel._models import Outcome, StopReason
from bulkcancel._retry import Backoff
from bulkcancel._transport import AiohttpTransport, CallableTransport, RawResponse, TransportError
from tests._support import NoAuth

NAME = "projects/p/locations/l/operations/o"
TOKEN = "ya29.secret-token-value"


class Bearer:
    sends_credentials = True

    async def headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    async def invalidate(self, used: Mapping[str, str]) -> bool:
        return False


def client_for(
    transport: Any, base: str, *, tokens: Any = None, max_attempts: int = 2
) -> OperationsClient:
    return OperationsClient(
        transport,
        endpoint=base,
        api_version="v1",
        tokens=tokens or NoAuth(),
        governor=RateGovernor(10_000),
        concurrency=4,
        backoff=Backoff(base=0.001, cap=0.002, max_attempts=max_attempts),
        rng=random.Random(0),
    )


async def serve(aiohttp_server: AiohttpServer, handler: Any) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_the_token_a_server_echoes_never_reaches_an_answer(
    aiohttp_server: AiohttpServer,
) -> None:
    async def echo(request: web.Request) -> web.Response:
        said = request.headers.get("Authorization", "")
        if request.method == "POST":
            body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": said}}
            return web.json_response(body, status=400)
        if request.query.get("filter") == "html":
            return web.Response(status=404, text=f"<p>{said}</p>", content_type="text/html")
        operation = {"name": NAME, "done": True, "error": {"code": 13, "message": said}}
        return web.json_response(operation)

    base = await serve(aiohttp_server, echo)
    async with AiohttpTransport(concurrency=2) as transport:
        client = client_for(transport, base, tokens=Bearer())
        cancel = await client.cancel(NAME)
        get = await client.get(NAME)
        page = await client.list_page("projects/p/locations/l", filter_expr="html")
    texts = [cancel.message, json.dumps(get.body), page.message]
    assert all(text and TOKEN not in text for text in texts), texts
    assert all("[REDACTED]" in (text or "") for text in texts)


async def test_every_request_names_bulkcancel_in_its_user_agent(
    aiohttp_server: AiohttpServer,
) -> None:
    agents: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        agents.append(request.headers.get("User-Agent", ""))
        return web.json_response({"name": NAME})

    base = await serve(aiohttp_server, handler)
    async with AiohttpTransport(concurrency=2) as transport:
        client = client_for(transport, base, tokens=Bearer())
        await client.cancel(NAME)
        await client.get(NAME)
    assert agents == [USER_AGENT, USER_AGENT]
    assert USER_AGENT.startswith("bulkcancel/") and USER_AGENT.endswith("(+python aiohttp)")


async def test_a_get_about_another_operation_is_not_this_ones_state(
    aiohttp_server: AiohttpServer,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"name": NAME + "-other", "done": True, "error": {"code": 1}})

    base = await serve(aiohttp_server, handler)
    async with AiohttpTransport(concurrency=2) as transport:
        answer = await client_for(transport, base).get(NAME)
    assert answer.kind is AnswerKind.MALFORMED
    assert answer.attempts == 1  # not retried: asking again gets the same wrong answer
    assert "another operation" in (answer.message or "")
    accepted = Answer(AnswerKind.OK, 200, body={})
    assert classify(accepted, answer, accepted=True).outcome is Outcome.ERROR


async def test_401_on_listing_stops_the_run_like_on_cancel(aiohttp_server: AiohttpServer) -> None:
    async def handler(request: web.Request) -> web.Response:
        body = {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "no"}}
        return web.json_response(body, status=401)

    base = await serve(aiohttp_server, handler)
    async with AiohttpTransport(concurrency=2) as transport:
        client = client_for(transport, base)
        for _ in range(8):
            await client.list_page("projects/p/locations/l")
        after = await client.list_page("projects/p/locations/l")
    assert client.fatal is StopReason.UNAUTHENTICATED
    assert base in client.fatal_detail
    assert after.kind is AnswerKind.STOPPED


def closed_base() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed: connection refused


async def test_no_answer_at_all_to_the_first_requests_is_unreachable() -> None:
    base = closed_base()
    async with AiohttpTransport(concurrency=2) as transport:
        client = client_for(transport, base, max_attempts=50)  # no call runs out of tries
        answers = [await client.get(NAME) for _ in range(3)]
    assert client.fatal is StopReason.UNREACHABLE
    assert base in client.fatal_detail
    assert answers[-1].kind is AnswerKind.STOPPED
    assert client.stats.total == 16  # the first 16 attempts, then nothing more


async def test_a_call_out_of_tries_with_nothing_ever_answered_is_unreachable_at_once() -> None:
    base = closed_base()
    async with AiohttpTransport(concurrency=2) as transport:
        client = client_for(transport, base, max_attempts=2)
        first = await client.get(NAME)
        second = await client.get(NAME)
    assert first.kind is AnswerKind.TRANSPORT  # it was tried: an error, not "not attempted"
    assert client.fatal is StopReason.UNREACHABLE and base in client.fatal_detail
    assert second.kind is AnswerKind.STOPPED
    assert client.stats.total == 2  # not 16: its tries are proof enough


async def test_a_tls_failure_is_final_and_fatal() -> None:
    calls: list[str] = []

    async def handler(method: str, url: str, headers: Any, body: bytes | None) -> RawResponse:
        calls.append(url)
        raise TransportError("certificate verify failed", retryable=False)

    client = client_for(CallableTransport(handler), "https://h.invalid")
    answer = await client.cancel(NAME)
    assert answer.kind is AnswerKind.TRANSPORT
    assert len(calls) == 1  # never retried
    assert client.fatal is StopReason.UNREACHABLE
    assert "certificate" in client.fatal_detail


async def test_html_404s_on_get_and_list_say_wrong_endpoint(aiohttp_server: AiohttpServer) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html>Not Found</html>", content_type="text/html")

    base = await serve(aiohttp_server, handler)
    async with AiohttpTransport(concurrency=2) as transport:
        cancels_only = client_for(transport, base)
        for _ in range(6):
            await cancels_only.cancel(NAME)  # an unrouted :cancel alone is normal
        assert cancels_only.fatal is None
        client = client_for(transport, base)
        for _ in range(4):
            await client.get(NAME)
    assert client.fatal is StopReason.WRONG_ENDPOINT
    assert base in client.fatal_detail and "404" in client.fatal_detail


async def test_a_403_per_minute_quota_is_throttling_and_gives_up_as_an_error() -> None:
    message = "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute'"
    body = json.dumps({"error": {"code": 403, "status": "PERMISSION_DENIED", "message": message}})

    async def handler(method: str, url: str, headers: Any, body_: bytes | None) -> RawResponse:
        return RawResponse(403, body.encode(), "application/json")

    client = OperationsClient(
        CallableTransport(handler),
        endpoint="http://h.invalid",
        api_version="v1",
        tokens=NoAuth(),
        governor=RateGovernor(10_000, throttle_budget=0.0),
        concurrency=2,
    )
    answer = await client.cancel(NAME)
    assert answer.kind is AnswerKind.THROTTLED
    assert (answer.message or "").startswith("throttled:")
    assert classify(answer, None, accepted=False).outcome is Outcome.ERROR
