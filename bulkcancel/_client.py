"""google.longrunning Operations over REST: cancel, get, list — with pacing and retries.

The client knows HTTP and Google's error envelope; it knows nothing of outcomes. Every call
returns an ``Answer`` (never raises for what the server said), so one operation's failure is a
record, not an exception that would tear down the run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import anyio

from bulkcancel._answers import Answer, AnswerKind, interpret
from bulkcancel._limits import RateGovernor, Sleep
from bulkcancel._models import StopReason
from bulkcancel._names import location_of, quota_key
from bulkcancel._retry import Backoff, RetryDecision, verdict
from bulkcancel._transport import Transport, TransportError

if TYPE_CHECKING:
    from bulkcancel._auth import TokenSource

_CANCEL_BODY = b"{}"
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_MAX_THROTTLE_RETRIES = 30
_THROTTLE_JITTER = 0.25  # seconds; a throttled request waits uniform(0, this) before its turn
_AUTH_GIVE_UP = 8  # this many 401s before any success: the credentials are wrong, stop early


@dataclass(slots=True)
class ClientStats:
    """Counts for the report: what the run cost on the wire."""

    requests: dict[str, int] = field(default_factory=lambda: {"cancel": 0, "get": 0, "list": 0})
    retries: int = 0
    throttled: int = 0
    unauthenticated: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class OperationsClient:
    """Operations REST calls for one run. Every attempt, retries included, is paced and counted."""

    def __init__(
        self,
        transport: Transport,
        *,
        endpoint: str,
        api_version: str,
        tokens: TokenSource,
        governor: RateGovernor,
        concurrency: int,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._transport = transport
        self._endpoint = endpoint.rstrip("/")
        self._regional = "{location}" in self._endpoint
        self._prefix = f"{self._endpoint}/{api_version}/"
        self._tokens = tokens
        self._governor = governor
        # asyncio's semaphore, not anyio's: anyio's yields to the loop twice per acquire
        # (a cancel checkpoint and a shielded one) even when a slot is free, which cost ~10% of
        # a fast run. The engine runs on anyio's asyncio backend only, where both cancel alike.
        self._slots = asyncio.Semaphore(concurrency)
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._sleep = sleep or anyio.sleep
        self.stats = ClientStats()
        self._successes = 0
        self._auth_seen: Mapping[str, str] | None = None
        self._plain_headers: Mapping[str, str] = {}
        self._body_headers: Mapping[str, str] = {}
        #: Why the whole run should stop (the first requests were all rejected as
        #: unauthenticated, say), or None. The engine and the listing check it.
        self.fatal: StopReason | None = None
        self._stopped = False

    def _headers(self, auth: Mapping[str, str], *, with_body: bool) -> Mapping[str, str]:
        """The request headers, built once per auth mapping (a token source hands out the same
        mapping until its token changes), not once per request."""
        if auth is not self._auth_seen:
            self._auth_seen = auth
            self._plain_headers = dict(auth)
            self._body_headers = {**_JSON_HEADERS, **auth}
        return self._body_headers if with_body else self._plain_headers

    def stop(self) -> None:
        """Start no new attempt from now on, retries included: each call that would make one
        returns a ``STOPPED`` answer instead. Requests already on the wire finish."""
        self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped

    def rates(self) -> dict[str, float]:
        """The adaptive rate reached per quota key."""
        return self._governor.rates()

    def url(self, path: str) -> str:
        """The URL for a resource path: ``{endpoint}/{version}/{path}``, nothing re-encoded."""
        if self._regional:
            # Regional hosts ({location}-aiplatform...); "global" lives on the bare host.
            location = location_of(path) or "global"
            if location == "global":
                return self._prefix.replace("{location}-", "").replace("{location}", "") + path
            return self._prefix.replace("{location}", location) + path
        return self._prefix + path

    async def cancel(self, name: str) -> Answer:
        return await self._call("cancel", "POST", self.url(name + ":cancel"), name, _CANCEL_BODY)

    async def get(self, name: str) -> Answer:
        return await self._call("get", "GET", self.url(name), name, None)

    async def list_page(
        self,
        parent: str,
        *,
        filter_expr: str | None = None,
        page_size: int = 0,
        page_token: str | None = None,
        collection: str = "operations",
    ) -> Answer:
        """One page of ``GET /{version}/{parent}/operations`` (or another collection)."""
        path = f"{parent}/{collection}" if parent else collection
        params: dict[str, str] = {}
        if filter_expr:
            params["filter"] = filter_expr
        if page_size:
            params["pageSize"] = str(page_size)
        if page_token:
            params["pageToken"] = page_token
        url = self.url(path)
        if params:
            url += "?" + urlencode(params, quote_via=quote, safe="")
        return await self._call("list", "GET", url, parent, None)

    async def _call(
        self, kind: str, method: str, url: str, name: str, body: bytes | None
    ) -> Answer:
        key = quota_key(name)
        attempts = throttled = transient = 0
        auth_retried = False
        while True:
            if self._stopped:
                return Answer(
                    AnswerKind.STOPPED,
                    message="not sent: the run was stopping",
                    attempts=attempts,
                    throttled=throttled,
                )
            async with self._slots:
                await self._governor.acquire(key)
                auth = await self._tokens.headers()
                headers = self._headers(auth, with_body=body is not None)
                attempts += 1
                self.stats.requests[kind] += 1
                try:
                    raw = await self._transport.request(method, url, headers, body)
                    answer = interpret(raw)
                except TransportError as exc:
                    answer = Answer(AnswerKind.TRANSPORT, message=str(exc)[:300])
            answer.attempts, answer.throttled = attempts, throttled
            google_json = answer.kind is AnswerKind.API_ERROR
            if answer.kind is AnswerKind.MALFORMED:
                # A 2xx cut short is most often a connection cut mid-body: worth another try.
                decision = RetryDecision.TRANSIENT
            elif answer.kind in (AnswerKind.OVERSIZED, AnswerKind.REDIRECT, AnswerKind.OK):
                decision = RetryDecision.FINAL
            else:
                decision = verdict(
                    answer.status, answer.code, answer.reason, google_json=google_json
                )
            if decision is RetryDecision.THROTTLED:
                throttled += 1
                self.stats.throttled += 1
                hint = answer.retry_delay
                self._governor.on_throttle(key, hint)
                if throttled > _MAX_THROTTLE_RETRIES:
                    answer.throttled = throttled
                    return answer
                self.stats.retries += 1
                if hint is None:
                    # The shared pacer has slowed the whole key already: a throttled request
                    # only needs to step out of the crowd, not wait out an exponential backoff
                    # of its own (that doubled the penalty and stretched the tail of a run).
                    await self._sleep(self._rng.uniform(0.0, _THROTTLE_JITTER))
                continue
            if decision is RetryDecision.TRANSIENT:
                transient += 1
                if transient >= self._backoff.max_attempts:
                    return answer
                self.stats.retries += 1
                await self._sleep(self._backoff.delay(transient - 1, self._rng))
                continue
            if answer.status == 401:
                self.stats.unauthenticated += 1
                if not self._successes and self.stats.unauthenticated >= _AUTH_GIVE_UP:
                    self.fatal = StopReason.UNAUTHENTICATED
                if not auth_retried and await self._tokens.invalidate(auth):
                    auth_retried = True
                    self.stats.retries += 1
                    continue
                return answer
            if answer.kind is not AnswerKind.TRANSPORT and answer.status < 500:
                self._governor.on_success(key)
                self._successes += 1
            return answer
