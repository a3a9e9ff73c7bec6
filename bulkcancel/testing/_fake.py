"""A fake google.longrunning Operations API over real HTTP (aiohttp.web on loopback).

It follows ``WIRE.md``: the REST routes (cancel, get, list with ``filter``/``pageSize``/
``pageToken``, list locations), the Operation JSON (no ``done`` key while running, ``error.code
== 1`` when cancelled), Google's error envelope with ErrorInfo/RetryInfo details, and the ways
real front ends misbehave: HTML 404 for unrouted ``:cancel``, HTML 502, 429 with and without
RetryInfo, connection resets, oversized bodies, truncated JSON, redirects, and page tokens
that repeat forever.

Everything a test may want to assert on is kept: every request in :attr:`FakeOperationsServer.log`
(method, raw path, query, whether a token came, status), and per operation how many cancels were
accepted. Paths are read raw (``request.raw_path``) and matched exactly, so a client that lets a
URL library normalise ``..`` or ``%2F`` would be caught, not helped.

Example::

    fake = FakeOperationsServer()
    fake.add_operation("projects/p/locations/l/operations/op-1", Behavior.CANCELS)
    async with fake.serve() as endpoint:       # "http://127.0.0.1:PORT"
        ...
"""

from __future__ import annotations

import asyncio
import enum
import json
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

__all__ = [
    "STATS_PATH",
    "Behavior",
    "FakeOperation",
    "FakeOperationsServer",
    "Fault",
    "Faults",
    "ParentMode",
    "RequestRecord",
    "populate",
    "serve_forever",
]

_JSON = "application/json"
#: ``GET`` answers :meth:`FakeOperationsServer.stats`; ``DELETE`` also clears the log.
STATS_PATH = "/_fake/stats"
_METADATA_TYPE = "type.googleapis.com/google.cloud.deploy.v1.OperationMetadata"
_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}
_HTML_404 = (
    b"<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 404 (Not Found)!!1</title>"
    b"<p><b>404.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The requested URL was not found "
    b"on this server. <ins>That\xe2\x80\x99s all we know.</ins></html>"
)
_HTML_502 = (
    b"<!DOCTYPE html><html lang=en><title>Error 502 (Server Error)!!1</title>"
    b"<p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The server encountered a temporary "
    b"error and could not complete your request.<p>Please try again in 30 seconds.</html>"
)
_FILTER = re.compile(r"\s*done\s*[=:]\s*(true|false)\s*", re.IGNORECASE)


class Behavior(enum.StrEnum):
    """How one operation reacts to cancel, and how it ends. The outcome bulkcancel must report
    is :attr:`expected` (assuming a reconcile deadline longer than ``cancel_delay``)."""

    #: cancel accepted; ``cancel_delay`` seconds later done with error code 1 (CANCELLED).
    CANCELS = "cancels"
    #: cancel accepted, but the operation finishes with a response anyway.
    COMPLETES_ANYWAY = "completes_anyway"
    #: cancel accepted, but the operation fails with another error (code 13) anyway.
    FAILS_ANYWAY = "fails_anyway"
    #: cancel accepted; the operation never finishes.
    NEVER = "never"
    #: finished before the run: cancel answers 400 FAILED_PRECONDITION, GET shows it done.
    ALREADY_DONE = "already_done"
    #: running and not cancellable: cancel answers 400 FAILED_PRECONDITION, stays running.
    NOT_CANCELLABLE = "not_cancellable"

    @property
    def expected(self) -> str:
        return _EXPECTED[self]


_EXPECTED = {
    Behavior.CANCELS: "cancelled",
    Behavior.COMPLETES_ANYWAY: "completed_anyway",
    Behavior.FAILS_ANYWAY: "completed_anyway",
    Behavior.NEVER: "still_running",
    Behavior.ALREADY_DONE: "completed_anyway",
    Behavior.NOT_CANCELLABLE: "unsupported",
}


class ParentMode(enum.StrEnum):
    """How a whole parent (``projects/P/locations/L``) or project answers."""

    NORMAL = "normal"
    #: ``:cancel`` answers 501 UNIMPLEMENTED (the service does not support cancel).
    UNSUPPORTED = "unsupported"
    #: ``:cancel`` is not routed: an HTML 404 from the front end; GET still works.
    UNROUTED = "unrouted"
    #: every call answers 403 PERMISSION_DENIED (set it on ``projects/P`` for a whole project).
    DENIED = "denied"
    #: every call answers 503 (an unreachable location, for fan-out tests).
    UNAVAILABLE = "unavailable"


class Fault(enum.StrEnum):
    """One misbehaviour, injected in place of the real answer (see :meth:`inject`)."""

    THROTTLE = "429"  # RESOURCE_EXHAUSTED with ErrorInfo RATE_LIMIT_EXCEEDED, no hint
    THROTTLE_HINTED = "429_retry_info"  # ... with RetryInfo retryDelay
    THROTTLE_RETRY_AFTER = "429_retry_after"  # ... with a Retry-After header
    THROTTLE_403 = "403_rate_limit"  # a 403 whose reason is rateLimitExceeded
    UNAVAILABLE = "503"
    BAD_GATEWAY_HTML = "502_html"
    INTERNAL_HTML = "500_html"  # a non-JSON error page
    RESET = "reset"  # the connection is closed without an answer
    OVERSIZED = "oversized"  # a 200 whose body is larger than any sane cap
    TRUNCATED = "truncated"  # a 200 whose JSON is cut short
    REDIRECT = "redirect"  # 302 to :attr:`FakeOperationsServer.redirect_to`
    UNAUTHENTICATED = "401"


@dataclass(slots=True)
class Faults:
    """Random faults per request, each with its probability (for fault-mix tests)."""

    throttle: float = 0.0
    throttle_hinted: float = 0.0
    unavailable: float = 0.0
    bad_gateway_html: float = 0.0
    reset: float = 0.0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - fault injection, not security

    def draw(self) -> Fault | None:
        x = self._rng.random()
        for fault, p in (
            (Fault.THROTTLE, self.throttle),
            (Fault.THROTTLE_HINTED, self.throttle_hinted),
            (Fault.UNAVAILABLE, self.unavailable),
            (Fault.BAD_GATEWAY_HTML, self.bad_gateway_html),
            (Fault.RESET, self.reset),
        ):
            if x < p:
                return fault
            x -= p
        return None


@dataclass(slots=True)
class FakeOperation:
    name: str
    behavior: Behavior
    cancel_delay: float = 0.0
    create_time: float = 0.0
    target: str = "prod"
    verb: str = "deploy"
    #: cancels answered 200 (the same operation may rightly receive more only after a crash)
    accepted_cancels: int = 0
    cancel_requests: int = 0
    gets: int = 0
    cancelled_at: float | None = None

    @property
    def expected(self) -> str:
        return self.behavior.expected

    def done(self, now: float) -> bool:
        b = self.behavior
        if b is Behavior.ALREADY_DONE:
            return True
        if b in (Behavior.NEVER, Behavior.NOT_CANCELLABLE) or self.cancelled_at is None:
            return False
        return now - self.cancelled_at >= self.cancel_delay

    def to_json(self, now: float) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "@type": _METADATA_TYPE,
            "createTime": _rfc3339(self.create_time),
            "target": self.target,
            "verb": self.verb,
            "apiVersion": "v1",
        }
        if self.cancelled_at is not None:
            meta["requestedCancellation"] = True
        body: dict[str, Any] = {"name": self.name, "metadata": meta}
        if self.done(now):
            body["done"] = True
            meta["endTime"] = _rfc3339(now)
            b = self.behavior
            if b is Behavior.CANCELS:
                body["error"] = {"code": 1, "message": "Operation was cancelled."}
            elif b is Behavior.FAILS_ANYWAY:
                body["error"] = {"code": 13, "message": "Render failed: internal error."}
            else:
                body["response"] = {"@type": "type.googleapis.com/google.protobuf.Empty"}
        return body


@dataclass(slots=True, frozen=True)
class RequestRecord:
    """One request as the server saw it."""

    method: str
    raw_path: str
    query: Mapping[str, str]
    kind: str  # cancel | get | list | locations | unknown
    name: str  # the resource name from the path ('' when none)
    authorization: str | None
    user_project: str | None
    status: int  # 0 when the connection was reset
    at: float


@dataclass(slots=True)
class _Injection:
    fault: Fault
    kinds: frozenset[str] | None
    prefix: str | None
    times: int | None  # None: forever


@dataclass(slots=True)
class _Bucket:
    rate: float
    burst: float
    tokens: float
    stamp: float

    def admit(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(
    status: int,
    message: str,
    code: str | None = None,
    *,
    reason: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    detail_list = list(details or [])
    if reason:
        detail_list.insert(
            0,
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "clouddeploy.googleapis.com"},
            },
        )
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": code or _CODES.get(status, "UNKNOWN"),
    }
    if detail_list:
        error["details"] = detail_list
    return web.Response(
        status=status,
        body=json.dumps({"error": error}).encode(),
        content_type=_JSON,
        headers=headers,
    )


def _ok(body: object) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), content_type=_JSON)


class FakeOperationsServer:
    """The fake's state and its aiohttp.web application. All knobs are plain attributes."""

    def __init__(
        self,
        *,
        api_version: str = "v1",
        clock: Callable[[], float] = time.monotonic,
        default_page_size: int = 50,
        max_page_size: int = 1000,
    ) -> None:
        self.api_version = api_version
        self.clock = clock
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self._ops: dict[str, FakeOperation] = {}
        #: parent -> names under it, in creation order (lists page through this)
        self._children: dict[str, list[str]] = {}
        self._modes: dict[str, ParentMode] = {}
        self._extra_locations: dict[str, set[str]] = {}
        self._injections: deque[_Injection] = deque()
        self._repeat_tokens: set[str] = set()
        self._buckets: dict[str, _Bucket] = {}
        self._quota: tuple[float, float, bool] | None = None
        #: every request, in arrival order
        self.log: list[RequestRecord] = []
        #: None: accept any (or no) credentials. A set: require ``Bearer <one of them>``.
        self.valid_tokens: set[str] | None = None
        #: seconds added before every answer
        self.latency: float = 0.0
        #: random faults per request (after auth, before the real answer)
        self.faults: Faults | None = None
        #: where :attr:`Fault.REDIRECT` points
        self.redirect_to: str = "http://127.0.0.1:9/elsewhere"
        #: accept ``locations/-`` in list calls (most services do not)
        self.dash_listing: bool = False
        self.wall_epoch = time.time() - clock()
        self.app = web.Application(client_max_size=1024**2)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # ---- scripting ---------------------------------------------------------------------------
    def add_operation(
        self,
        name: str,
        behavior: Behavior = Behavior.CANCELS,
        *,
        cancel_delay: float = 0.0,
        age: float = 600.0,
        target: str = "prod",
        verb: str = "deploy",
    ) -> FakeOperation:
        """Add (or replace) an operation. ``age`` seconds old by its ``createTime``."""
        op = FakeOperation(
            name,
            Behavior(behavior),
            cancel_delay=cancel_delay,
            create_time=time.time() - age,
            target=target,
            verb=verb,
        )
        if name not in self._ops:
            parent = name.rpartition("/operations/")[0]
            self._children.setdefault(parent, []).append(name)
        self._ops[name] = op
        return op

    def set_mode(self, parent: str, mode: ParentMode) -> None:
        """Apply ``mode`` to a parent (``projects/P/locations/L``) or a project (``projects/P``)."""
        self._modes[parent] = ParentMode(mode)

    def add_location(self, project: str, location_id: str) -> None:
        """A location the project lists even when it holds no operation."""
        self._extra_locations.setdefault(project, set()).add(location_id)

    def inject(
        self,
        fault: Fault | str,
        *,
        times: int | None = 1,
        kinds: Iterable[str] | None = None,
        prefix: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests (None: all) with ``fault``.

        ``kinds`` limits it to cancel/get/list/locations; ``prefix`` to names starting with it.
        """
        self._injections.append(
            _Injection(Fault(fault), frozenset(kinds) if kinds is not None else None, prefix, times)
        )

    def repeat_page_token(self, parent: str) -> None:
        """Make ``parent``'s listing return the same ``nextPageToken`` forever."""
        self._repeat_tokens.add(parent)

    def quota(self, rate: float, *, burst: float | None = None, per_region: bool = False) -> None:
        """Answer 429 past a token bucket of ``rate`` requests/s (per project+region if asked)."""
        self._quota = (rate, burst if burst is not None else max(1.0, rate / 10), per_region)
        self._buckets.clear()

    # ---- reading back ------------------------------------------------------------------------
    def operations(self) -> list[FakeOperation]:
        return list(self._ops.values())

    def operation(self, name: str) -> FakeOperation:
        return self._ops[name]

    def requests(self, kind: str | None = None) -> list[RequestRecord]:
        return [r for r in self.log if kind is None or r.kind == kind]

    def expected(self) -> dict[str, str]:
        """Outcome per stored operation, given its behaviour and its parent's mode."""
        return {name: self.expected_outcome(name) for name in self._ops}

    def expected_outcome(self, name: str) -> str:
        mode = self._mode_of(name)
        if mode is ParentMode.DENIED:
            return "permission_denied"
        if mode is ParentMode.UNAVAILABLE:
            return "error"
        op = self._ops.get(name)
        if op is None:
            return "not_found"
        if mode in (ParentMode.UNSUPPORTED, ParentMode.UNROUTED):
            return "completed_anyway" if op.behavior is Behavior.ALREADY_DONE else "unsupported"
        return op.expected

    # ---- serving -----------------------------------------------------------------------------
    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on loopback; yields the endpoint URL (``http://127.0.0.1:PORT``)."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            bound = runner.addresses[0][1] if runner.addresses else port
            shown = f"[{host}]" if ":" in host else host
            yield f"http://{shown}:{bound}"
        finally:
            await runner.cleanup()

    # ---- the handler -------------------------------------------------------------------------
    def _mode_of(self, name: str) -> ParentMode:
        parts = name.split("/")
        for depth in (4, 2):  # projects/P/locations/L, then projects/P
            mode = self._modes.get("/".join(parts[:depth]))
            if mode is not None and len(parts) >= depth:
                return mode
        return ParentMode.NORMAL

    def _route(self, method: str, path: str) -> tuple[str, str]:
        prefix = f"/{self.api_version}/"
        if not path.startswith(prefix):
            return "unknown", ""
        rest = path[len(prefix) :]
        if method == "POST" and rest.endswith(":cancel"):
            return "cancel", rest[: -len(":cancel")]
        if method != "GET":
            return "unknown", rest
        if rest.endswith("/operations") or rest == "operations":
            return "list", rest[: -len("operations")].rstrip("/")
        parts = rest.split("/")
        if len(parts) == 3 and parts[0] == "projects" and parts[2] == "locations":
            return "locations", "/".join(parts[:2])
        if "/operations/" in f"/{rest}":
            return "get", rest
        return "unknown", rest

    def stats(self) -> dict[str, Any]:
        """Counts of what the server saw: requests by kind and by status (for benchmarks)."""
        by_kind: dict[str, int] = {}
        by_status: dict[str, int] = {}
        for record in self.log:
            by_kind[record.kind] = by_kind.get(record.kind, 0) + 1
            by_status[str(record.status)] = by_status.get(str(record.status), 0) + 1
        first = self.log[0].at if self.log else 0.0
        last = self.log[-1].at if self.log else 0.0
        return {
            "requests": len(self.log),
            "by_kind": by_kind,
            "by_status": by_status,
            "span_seconds": last - first,
        }

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        if raw == STATS_PATH:  # the fake's own control route: neither logged nor counted
            stats = self.stats()
            if request.method == "DELETE":
                self.log.clear()
            return _ok(stats)
        path, _, query_string = raw.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        kind, name = self._route(request.method, path)
        auth = request.headers.get("Authorization")
        at = self.clock()
        if self.latency:
            await asyncio.sleep(self.latency)
        response = self._answer(kind, name, query, auth)
        self.log.append(
            RequestRecord(
                request.method,
                path,
                query,
                kind,
                name,
                auth,
                request.headers.get("x-goog-user-project"),
                response.status if response is not None else 0,
                at,
            )
        )
        if response is None:  # a connection reset: close the socket without an answer
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never reaches the client: the socket is gone
        return response

    def _answer(
        self,
        kind: str,
        name: str,
        query: Mapping[str, str],
        auth: str | None,
    ) -> web.StreamResponse | None:
        if self.valid_tokens is not None:
            token = auth[7:] if auth and auth.startswith("Bearer ") else None
            if token not in self.valid_tokens:
                return _error(
                    401,
                    "Request had invalid authentication credentials.",
                    reason="ACCESS_TOKEN_EXPIRED" if token else "CREDENTIALS_MISSING",
                )
        if self._quota is not None:
            rate, burst, per_region = self._quota
            key = "/".join(name.split("/")[:4]) if per_region else ""
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(rate, burst, burst, now)
            if not bucket.admit(now):
                return _fault_response(Fault.THROTTLE, self)
        fault = self._take_injection(kind, name)
        if fault is None and self.faults is not None:
            fault = self.faults.draw()
        if fault is not None:
            return _fault_response(fault, self)
        if kind == "unknown":
            return web.Response(status=404, body=_HTML_404, content_type="text/html")
        mode = self._mode_of(name)
        if mode is ParentMode.DENIED:
            return _error(
                403,
                f"Permission 'clouddeploy.operations.{kind}' denied on resource '{name}'.",
                reason="IAM_PERMISSION_DENIED",
            )
        if mode is ParentMode.UNAVAILABLE:
            return _error(503, "The service is currently unavailable.")
        if kind == "list":
            return self._list(name, query)
        if kind == "locations":
            return self._locations(name, query)
        op = self._ops.get(name)
        now = self.clock()
        if kind == "cancel":
            if mode is ParentMode.UNROUTED:
                return web.Response(status=404, body=_HTML_404, content_type="text/html")
            if op is None:
                return _error(404, f"Operation {name!r} not found.")
            op.cancel_requests += 1
            if mode is ParentMode.UNSUPPORTED:
                return _error(501, "Operation cancellation is not supported by this service.")
            if op.done(now):
                return _error(400, "Operation has already completed.", "FAILED_PRECONDITION")
            if op.behavior is Behavior.NOT_CANCELLABLE:
                return _error(
                    400,
                    "Operation is not cancellable in its current state.",
                    "FAILED_PRECONDITION",
                )
            op.accepted_cancels += 1
            if op.cancelled_at is None:
                op.cancelled_at = now
            return _ok({})
        if op is None:
            return _error(404, f"Operation {name!r} not found.")
        op.gets += 1
        return _ok(op.to_json(now))

    def _take_injection(self, kind: str, name: str) -> Fault | None:
        for injection in self._injections:
            if injection.kinds is not None and kind not in injection.kinds:
                continue
            if injection.prefix is not None and not name.startswith(injection.prefix):
                continue
            if injection.times is not None:
                injection.times -= 1
                if injection.times <= 0:
                    self._injections.remove(injection)
            return injection.fault
        return None

    def _page_bounds(self, query: Mapping[str, str]) -> tuple[int, int] | web.Response:
        try:
            size = int(query.get("pageSize") or 0)
        except ValueError:
            return _error(400, "Invalid value for pageSize.")
        if size < 0:
            return _error(400, "pageSize must not be negative.")
        size = min(size or self.default_page_size, self.max_page_size)
        token = query.get("pageToken") or ""
        if token:
            if not token.startswith("p") or not token[1:].isdigit():
                return _error(400, "Invalid page token.")
            return int(token[1:]), size
        return 0, size

    def _list(self, parent: str, query: Mapping[str, str]) -> web.Response:
        segments = parent.split("/")
        if len(segments) == 4 and segments[3] == "-":
            if not self.dash_listing:
                return _error(400, "Location '-' is not supported for this method.")
            prefix = "/".join(segments[:3]) + "/"
            names = [n for p, ns in self._children.items() if p.startswith(prefix) for n in ns]
        else:
            names = self._children.get(parent, [])
        want: bool | None = None
        filter_expr = query.get("filter", "")
        if filter_expr.strip():
            match = _FILTER.fullmatch(filter_expr)
            if match is None:
                return _error(400, f"Invalid filter: {filter_expr!r}.")
            want = match.group(1).lower() == "true"
        bounds = self._page_bounds(query)
        if isinstance(bounds, web.Response):
            return bounds
        start, size = bounds
        now = self.clock()
        page: list[dict[str, Any]] = []
        position = start
        # The filter applies before paging, as on a real server: walk until the page is full.
        while position < len(names) and len(page) < size:
            op = self._ops[names[position]]
            position += 1
            if want is None or op.done(now) == want:
                op.gets += 1
                page.append(op.to_json(now))
        body: dict[str, Any] = {"operations": page} if page else {}
        if parent in self._repeat_tokens:
            body["nextPageToken"] = f"p{size}"  # the second page, forever
        elif position < len(names):
            body["nextPageToken"] = f"p{position}"
        return _ok(body)

    def _locations(self, project: str, query: Mapping[str, str]) -> web.Response:
        ids = set(self._extra_locations.get(project, ()))
        prefix = project + "/locations/"
        for parent in self._children:
            if parent.startswith(prefix):
                ids.add(parent[len(prefix) :].split("/")[0])
        bounds = self._page_bounds(query)
        if isinstance(bounds, web.Response):
            return bounds
        start, size = bounds
        ordered = sorted(ids)
        page = [
            {"name": f"{prefix}{i}", "locationId": i, "displayName": i}
            for i in ordered[start : start + size]
        ]
        body: dict[str, Any] = {"locations": page}
        if start + size < len(ordered):
            body["nextPageToken"] = f"p{start + size}"
        return _ok(body)


def _fault_response(fault: Fault, server: FakeOperationsServer) -> web.Response | None:
    if fault is Fault.RESET:
        return None
    if fault is Fault.THROTTLE:
        return _error(
            429,
            "Quota exceeded for quota metric 'API requests' and limit 'API requests per minute "
            "per region'.",
            reason="RATE_LIMIT_EXCEEDED",
        )
    if fault is Fault.THROTTLE_HINTED:
        return _error(
            429,
            "Quota exceeded.",
            reason="RATE_LIMIT_EXCEEDED",
            details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"}],
        )
    if fault is Fault.THROTTLE_RETRY_AFTER:
        return _error(
            429, "Too many requests.", reason="RATE_LIMIT_EXCEEDED", headers={"Retry-After": "1"}
        )
    if fault is Fault.THROTTLE_403:
        return _error(403, "User Rate Limit Exceeded", reason="rateLimitExceeded")
    if fault is Fault.UNAVAILABLE:
        return _error(503, "The service is currently unavailable.")
    if fault is Fault.BAD_GATEWAY_HTML:
        return web.Response(status=502, body=_HTML_502, content_type="text/html")
    if fault is Fault.INTERNAL_HTML:
        return web.Response(
            status=500,
            body=b"<html><body>Internal Server Error</body></html>",
            content_type="text/html",
        )
    if fault is Fault.OVERSIZED:
        return web.Response(
            body=b'{"name":"' + b"x" * (6 * 1024 * 1024) + b'"}', content_type=_JSON
        )
    if fault is Fault.TRUNCATED:
        return web.Response(body=b'{"name":"projects/p/locations/l/operati', content_type=_JSON)
    if fault is Fault.REDIRECT:
        return web.Response(status=302, headers={"Location": server.redirect_to})
    if fault is Fault.UNAUTHENTICATED:
        return _error(401, "Request had invalid authentication credentials.")
    raise AssertionError(fault)  # pragma: no cover - every Fault is handled above


def populate(
    server: FakeOperationsServer,
    parent: str,
    count: int,
    behavior: Behavior | str = Behavior.CANCELS,
    *,
    cancel_delay: float = 0.0,
    prefix: str = "op-",
) -> list[str]:
    """Add ``count`` operations under ``parent``; returns their names."""
    names = [f"{parent}/operations/{prefix}{i:06d}" for i in range(count)]
    for name in names:
        server.add_operation(name, Behavior(behavior), cancel_delay=cancel_delay)
    return names


async def serve_forever(
    server: FakeOperationsServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled (``bulkcancel fake-server``)."""
    import anyio

    async with server.serve(host, port) as url:
        if on_ready is not None:
            on_ready(url)
        await anyio.sleep_forever()
