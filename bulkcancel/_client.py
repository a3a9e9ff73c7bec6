"""google.longrunning Operations over REST: cancel, get, list — one attempt loop, paced.

The client knows HTTP and Google's error envelope; it knows nothing of outcomes. Every call
returns an ``Answer`` (never raises for what the server said), so one operation's failure is a
record, not an exception that would tear down the run.

One attempt, in order: wait for the quota key's turn (a FIFO per key, holding nothing), then an
in-flight slot, then a unit of the run's ``--rate``; send; report the answer to the key's pacer
exactly once (throttle or capacity). Retries: throttles are retried at the pacer's pace (a hint
makes that request wait for it, capped, or until its key accepts again); transient failures
(503, 502/504, resets, timeouts, a cut body) with full-jitter backoff up to ``Backoff.max_attempts``
tries, or up to ``Backoff.busy_attempts`` on a busy key (a quarter or more of its calls' first
tries lately failed so, or of the other calls' tries since this one's first failure, and it
answered another call meanwhile: a server shedding load with 503s is up, and eight in a row
there is chance, not an outage; one operation that always fails beside others that pass gets
the usual tries);
a call's own time (its tries, backoff and hint waits; not its turns at its key, which are the
key's backlog) is bounded by ``max_call_time``, and throttle retries by the governor's
``throttle_budget`` in which the call's quota key ended no call of its kind (cancels, or
reads), counted from the call's first throttle (then the call ends as a ``THROTTLED`` answer,
which classification reports as an error): a key that refuses everything ends its calls in
bounded time, while a slow key that keeps answering ends none of those waiting out its backlog
(in simulation, a window of 30 a minute with 64 calls waiting ended 16 of 150 so when the
budget ran from the first throttle alone, and 400 calls at once at 1/s ended 110 when turns
counted as the call's time). A stop, or a fatal condition of the whole run, wakes every waiting
call at once and they return ``STOPPED``.

Fatal conditions (``fatal`` and a one-line ``fatal_detail``): 401 on the first requests
(``UNAUTHENTICATED``); no HTTP answer at all to the run's first attempts, or a TLS failure
(``UNREACHABLE``); non-JSON 404 pages to several GET or list calls before any Google JSON answer
(``WRONG_ENDPOINT``). :class:`bulkcancel._fail_fast.FailFast` tells them from the answers; the
in-flight slots and the scopes a stop of the cancels ends are :mod:`bulkcancel._slots`.

Every request carries ``User-Agent: bulkcancel/VERSION (+python aiohttp)``. Server text is scrubbed
of the bearer token sent before it becomes part of an Answer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlencode

import anyio

from bulkcancel._answers import Answer, AnswerKind, interpret, scrub_text
from bulkcancel._fail_fast import FailFast
from bulkcancel._limits import Grant, KeyExhaustedError, RateGovernor, Sleep
from bulkcancel._models import StopReason
from bulkcancel._names import in_our_spelling, location_of, quota_key
from bulkcancel._retry import Backoff, RetryDecision, verdict
from bulkcancel._slots import CancelWait, Slots
from bulkcancel._transport import Transport, TransportError

if TYPE_CHECKING:
    from bulkcancel._auth import TokenSource

_CANCEL_BODY = b"{}"
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_BUSY_CALLS = 16  # calls' first tries averaged to tell a key that sheds load ...
_BUSY_SHARE = 0.25  # ... when this share of them failed transiently
_MIN_SECRET = 4  # shorter "tokens" are not scrubbed (they would mangle every message)
_NO_SCOPE: AbstractContextManager[None] = nullcontext()


def _user_agent() -> str:
    try:
        version = metadata.version("bulkcancel")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"bulkcancel/{version} (+python aiohttp)"


USER_AGENT = _user_agent()


@dataclass(slots=True)
class ClientStats:
    """Counts for the report: what the run cost on the wire."""

    requests: dict[str, int] = field(default_factory=lambda: {"cancel": 0, "get": 0, "list": 0})
    retries: int = 0
    throttled: int = 0
    unauthenticated: int = 0
    #: calls that ended because their throttle or time budget ran out
    gave_up_throttled: int = 0

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
        max_call_time: float = 300.0,
    ) -> None:
        self._transport = transport
        self._endpoint = endpoint.rstrip("/")
        self._regional = "{location}" in self._endpoint
        self._prefix = f"{self._endpoint}/{api_version}/"
        self._tokens = tokens
        self._governor = governor
        self._slots = Slots(concurrency)
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._sleep = sleep  # None: the governor's naps, which a stop cuts short
        self._max_call_time = max_call_time
        self.stats = ClientStats()
        #: (quota key, reads) -> when it last gave a call of that kind an answer that ends it
        #: (not a transient failure, not a throttle): what a throttled call's budget counts
        #: from (reads may be metered apart from cancels, and a key whose writes are refused
        #: all day may answer its reads); either kind says the server is up for that key
        self._ended_at: dict[tuple[str, bool], float] = {}
        #: quota key -> the share of its calls' first tries that failed transiently (a moving
        #: average over about 16: retries are left out, so one call failing again and again
        #: does not make its key look busy)
        self._first_failed: dict[str, float] = {}
        #: quota key -> [answers, transient failures] of all its calls' tries but throttles
        #: (counted from a call's first failure on, less its own, when the average above
        #: misses a key whose retries fail more often than its first tries)
        self._tried: dict[str, list[int]] = {}
        self._auth_seen: Mapping[str, str] | None = None
        self._plain_headers: Mapping[str, str] = {"User-Agent": USER_AGENT}
        self._body_headers: Mapping[str, str] = {**_JSON_HEADERS, "User-Agent": USER_AGENT}
        self._secrets: tuple[bytes, ...] = ()
        #: Why the whole run should stop, or None. The engine and the listing check it; once it
        #: is set the client makes no further attempt.
        self.fatal: StopReason | None = None
        #: One line for people: the endpoint and what was seen.
        self.fatal_detail: str = ""
        self._stopped = False
        self._cancels_stopped = False
        #: cancel calls waiting (for their key's turn, a hint, a backoff): stop_cancels() ends
        #: those waits at once
        self._cancel_waits: set[anyio.CancelScope] = set()
        self._fail_fast = FailFast(self._endpoint)

    def _headers(self, auth: Mapping[str, str], *, with_body: bool) -> Mapping[str, str]:
        """The request headers, built once per auth mapping (a token source hands out the same
        mapping until its token changes), not once per request."""
        if auth is not self._auth_seen:
            self._auth_seen = auth
            self._plain_headers = {"User-Agent": USER_AGENT, **auth}
            self._body_headers = {**_JSON_HEADERS, "User-Agent": USER_AGENT, **auth}
            secrets = []
            for value in auth.values():
                scheme, _, credential = value.partition(" ")
                if scheme.lower() == "bearer" and len(credential) >= _MIN_SECRET:
                    secrets.append(credential.encode())
            self._secrets = tuple(secrets)
        return self._body_headers if with_body else self._plain_headers

    def stop(self) -> None:
        """Start no new attempt from now on, retries included: each call that would make one
        returns a ``STOPPED`` answer instead, and every call waiting for its turn, a hint or a
        backoff is woken at once. Requests already on the wire finish."""
        self._stopped = True
        self._governor.stop()

    def stop_cancels(self) -> None:
        """Start no new *cancel* attempt from now on, retries included, while GET and list go
        on: a graceful stop still reads back the cancels that were accepted. Cancel calls
        waiting for their turn, a hint or a backoff return ``STOPPED`` at once."""
        self._cancels_stopped = True
        for scope in list(self._cancel_waits):
            scope.cancel()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _refused(self, kind: str) -> bool:
        """No new attempt of this kind may start."""
        return (
            self._stopped or self.fatal is not None or (self._cancels_stopped and kind == "cancel")
        )

    def _wait_scope(self, kind: str) -> AbstractContextManager[None]:
        """Around a cancel call's waits (never around a request on the wire), so that
        ``stop_cancels`` can end them; the caller checks ``_refused`` afterwards. Other calls'
        waits need no scope (and a GET run makes one wait per request)."""
        return CancelWait(self._cancel_waits) if kind == "cancel" else _NO_SCOPE

    def _fail(self, reason: StopReason, detail: str) -> None:
        """The whole run is doomed: remember why, and behave as stopped."""
        if self.fatal is None:
            self.fatal = reason
            self.fatal_detail = detail
        self._governor.stop()

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
        return await self._call("get", "GET", self.url(name), name, None, expect_name=name)

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

    async def _nap(self, seconds: float) -> None:
        if self._sleep is not None:
            await self._sleep(seconds)
        else:
            await self._governor.nap(seconds)

    async def _call(
        self,
        kind: str,
        method: str,
        url: str,
        name: str,
        body: bytes | None,
        *,
        expect_name: str | None = None,
    ) -> Answer:
        governor = self._governor
        base, read = quota_key(name), kind != "cancel"
        key = base
        deadline = governor.now() + self._max_call_time
        first_throttle = math.inf
        attempts = throttled = transient = 0
        first_failure = math.inf  # when this call's first transient failure came back
        tried_before = (0, 0)  # the key's tries and failures before that failure
        auth_retried = False
        last: Answer | None = None
        last_throttled = False
        while True:
            if self._refused(kind):
                return _stopped(attempts, throttled)
            budget_end = self._throttle_end(base, read, first_throttle)
            if read:  # (a key's reads may be paced apart from its cancels: a later try)
                key = governor.key_for(base, read=True)
            # The key's turn: at once when it is free (no wait, so no scope to enter), or
            # waited for in a scope a stop can end.
            grant = governor.try_acquire_key(key)
            try:
                if grant is None:
                    # (a turn waited for is the key's backlog, not this call's own time)
                    waited_from = governor.now()
                    with self._wait_scope(kind):
                        grant = await governor.acquire_key(base, budget_end, read=read)
                    deadline += governor.now() - waited_from
            except KeyExhaustedError:
                if last is not None and not last_throttled:
                    return last
                why = f"{key or 'the quota key'} refused every request for "
                why += f"{governor.throttle_budget:g}s"
                return self._gave_up(last, why, attempts, throttled)
            if grant is None or self._refused(kind):
                if grant is not None:
                    governor.release(grant)
                if self._refused(kind) or governor.stopped:
                    return _stopped(attempts, throttled)
                if last is not None and not last_throttled:
                    return last
                if governor.now() < self._throttle_end(base, read, first_throttle):
                    continue  # (the key answered others meanwhile: it is slow, not refusing)
                why = f"{key or 'the quota key'} answered no {'read' if read else 'cancel'} "
                why += f"for {governor.throttle_budget:g}s"
                return self._gave_up(last, why, attempts, throttled)
            sent = await self._attempt(kind, method, url, body, grant)
            if sent is None:
                return _stopped(attempts, throttled)
            if sent == "again":
                continue
            answer, auth = sent
            attempts += 1
            answer.attempts, answer.throttled = attempts, throttled
            if expect_name is not None and answer.ok and answer.body is not None:
                answer = _check_name(answer, expect_name)
            decision = RetryDecision.FINAL if answer.kind is AnswerKind.OK else self._decide(answer)
            governor.report(
                grant,
                throttled=decision is RetryDecision.THROTTLED,
                hint=answer.retry_delay,
                quota=answer.quota,
                key=key,
                read=read,
            )
            doomed = self._fail_fast.answered(kind, url, answer)
            if doomed is not None:
                self._fail(*doomed)
            last = answer
            last_throttled = decision is RetryDecision.THROTTLED
            if decision is RetryDecision.THROTTLED:
                now = governor.now()
                throttled += 1
                answer.throttled = throttled
                self.stats.throttled += 1
                first_throttle = min(first_throttle, now)
                if now >= min(deadline, self._throttle_end(base, read, first_throttle)):
                    why = f"still refused after {throttled} tries in {now - first_throttle:.0f}s"
                    return self._gave_up(answer, why, attempts, throttled)
                self.stats.retries += 1
                hint = answer.retry_delay
                if hint is not None and hint > 0:
                    # This request waits for the hint (capped), or until its key accepts again.
                    with self._wait_scope(kind):
                        await governor.hint_wait(
                            grant, min(hint, governor.hint_cap, deadline - now)
                        )
                continue
            failing = decision is RetryDecision.TRANSIENT
            if attempts - throttled == 1:  # (this call's first answer that was no throttle)
                failed = self._first_failed.get(base, 0.0)
                failed += (failing - failed) / _BUSY_CALLS
                self._first_failed[base] = failed
            tried = self._tried.setdefault(base, [0, 0])
            tried[0] += 1
            tried[1] += failing
            if failing:
                now = governor.now()
                transient += 1
                if transient == 1:
                    first_failure = now
                    tried_before = (tried[0] - 1, tried[1] - 1)
                delay = self._backoff.delay(transient - 1, self._rng)
                tries = self._backoff.max_attempts
                if self._busy(base, first_failure, tried_before, transient):
                    tries = self._backoff.busy_attempts  # up and shedding load
                if transient >= tries or now + delay >= deadline:
                    doomed = self._fail_fast.gave_up(answer)
                    if doomed is not None and self.fatal is None:
                        self._fail(*doomed)
                    return answer
                self.stats.retries += 1
                with self._wait_scope(kind):
                    await self._nap(delay)
                continue
            if answer.status == 401:
                self.stats.unauthenticated += 1
                doomed = self._fail_fast.unauthenticated(self.stats.unauthenticated)
                if doomed is not None:
                    self._fail(*doomed)
                if not auth_retried and await self._tokens.invalidate(auth):
                    auth_retried = True
                    self.stats.retries += 1
                    continue
                return answer
            if answer.kind is not AnswerKind.TRANSPORT and answer.status < 500:
                self._fail_fast.successes += 1
            self._ended_at[base, read] = governor.now()
            return answer

    def _throttle_end(self, base: str, read: bool, first_throttle: float) -> float:
        """When a call first throttled at ``first_throttle`` stops retrying throttles: after
        the governor's ``throttle_budget`` in which its key ended no call of its kind (reads,
        or cancels), counted from the later of that throttle and the last such call's end. A
        slow key that keeps answering never ends a call that waits behind its backlog; a key
        that refuses everything (or every cancel) ends them all in bounded time."""
        since = max(first_throttle, self._ended_at.get((base, read), -math.inf))
        return since + self._governor.throttle_budget

    def _busy(self, base: str, first_failure: float, before: tuple[int, int], own: int) -> bool:
        """The key is up and shedding load: it gave another call an answer since this call's
        first failure, and a quarter or more of its calls' first tries fail transiently (a
        moving average), or of the other calls' tries since that failure, 16 or more (behind
        a queue that sheds what overflows, retries fail more often than first tries: 15% of
        first tries, over half of all)."""
        ended = self._ended_at.get
        if max(ended((base, False), -math.inf), ended((base, True), -math.inf)) <= first_failure:
            return False
        if self._first_failed.get(base, 0.0) >= _BUSY_SHARE:
            return True
        answers, failures = self._tried[base]
        others = answers - before[0] - own
        return others >= _BUSY_CALLS and failures - before[1] - own >= _BUSY_SHARE * others

    async def _attempt(
        self, kind: str, method: str, url: str, body: bytes | None, grant: Grant
    ) -> tuple[Answer, Mapping[str, str]] | Literal["again"] | None:
        """Send once: a slot, the run's ceiling, the request. None if stopped before sending;
        ``"again"`` if the key parked or cut its rate while this request waited for its slot
        or the run's ceiling (a unit of the ceiling it took goes to the next in line);
        otherwise the answer and the auth headers it was sent with."""
        governor = self._governor
        sent = False
        slots = self._slots
        try:
            waited = not slots.take_now()
            if waited:
                await slots.take()
            try:
                if grant.stale:
                    return "again"  # (cut or parked while this request waited for a slot)
                if not governor.try_ceiling():
                    waited = True
                    if not await governor.acquire_ceiling():
                        return None
                if self._refused(kind):
                    return None
                if grant.stale:
                    governor.unused_ceiling()
                    return "again"
                auth = await self._tokens.headers()
                headers = self._headers(auth, with_body=body is not None)
                self.stats.requests[kind] += 1
                governor.sent(grant, waited=waited)
                sent = True
                try:
                    raw = await self._transport.request(method, url, headers, body)
                    return interpret(raw, self._secrets), auth
                except TransportError as exc:
                    message = scrub_text(str(exc), self._secrets)[:300]
                    if not exc.retryable:
                        self._fail(StopReason.UNREACHABLE, f"{self._endpoint}: {message}")
                        return Answer(AnswerKind.TRANSPORT, message=message, final=True), auth
                    return Answer(AnswerKind.TRANSPORT, message=message), auth
            finally:
                slots.give()
        finally:
            if not sent:
                governor.release(grant)

    def _decide(self, answer: Answer) -> RetryDecision:
        if answer.kind is AnswerKind.MALFORMED:
            # A 2xx cut short is most often a connection cut mid-body: worth another try; an
            # answer about another operation is not.
            return RetryDecision.FINAL if answer.final else RetryDecision.TRANSIENT
        if answer.kind in (AnswerKind.OVERSIZED, AnswerKind.REDIRECT, AnswerKind.OK):
            return RetryDecision.FINAL
        if answer.final:
            return RetryDecision.FINAL
        return verdict(
            answer.status,
            answer.code,
            answer.reason,
            google_json=answer.kind is AnswerKind.API_ERROR,
            message=answer.message,
        )

    def _gave_up(self, last: Answer | None, why: str, attempts: int, throttled: int) -> Answer:
        """End a call whose throttle budget (or time budget, while throttled) ran out."""
        self.stats.gave_up_throttled += 1
        seen = f"; last answer HTTP {last.status}" if last is not None and last.status else ""
        return Answer(
            AnswerKind.THROTTLED,
            code=last.code if last is not None else None,
            reason=last.reason if last is not None else None,
            message=f"throttled: {why}{seen}",
            quota=last.quota if last is not None else None,
            attempts=attempts,
            throttled=throttled,
        )


def _stopped(attempts: int, throttled: int) -> Answer:
    return Answer(
        AnswerKind.STOPPED,
        message="not sent: the run was stopping",
        attempts=attempts,
        throttled=throttled,
    )


def _check_name(answer: Answer, expected: str) -> Answer:
    """A GET whose Operation names another operation is not this operation's state (the same
    one with its project spelled by number is: see ``in_our_spelling``)."""
    assert answer.body is not None
    named = answer.body.get("name")
    if named is None or named == expected:
        return answer
    if isinstance(named, str) and in_our_spelling(named, expected) == expected:
        return answer  # (its project spelled by number where we gave its ID, or the reverse)
    shown = named[:200] if isinstance(named, str) else type(named).__name__
    return Answer(
        AnswerKind.MALFORMED,
        answer.status,
        message=f"the server answered for another operation ({shown!r}), not this one",
        attempts=answer.attempts,
        throttled=answer.throttled,
        final=True,
    )
