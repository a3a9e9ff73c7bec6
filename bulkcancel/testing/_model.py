"""The fakes' vocabulary: behaviours, parent modes, faults, operations and request records.

Both fakes (:class:`~bulkcancel.testing.FakeOperationsServer` on loopback and
:class:`~bulkcancel.testing.MemoryOperations` behind the transport seam) answer through
:class:`~bulkcancel.testing.OperationsModel` (``_world``) in these words, so there is one
behaviour enum, one status map (``_personalities.STATUS_NAMES``) and one set of answers: a test
that passes on one fake means the same thing on the other. Pure: no I/O, no clock of its own.

It follows ``WIRE.md``: the Operation JSON (no ``done`` key while running, ``error.code == 1``
when cancelled, Cloud Deploy's metadata with ``createTime``/``endTime`` on the wall clock and
``target`` as a full resource path ``projects/P/locations/L/targets/T``), Google's error
envelope, and the ways real front ends misbehave (:class:`Fault`)."""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bulkcancel.testing._personalities import RESET, Reply, error_reply

__all__ = [
    "Behavior",
    "FakeOperation",
    "Fault",
    "Faults",
    "ParentMode",
    "RequestRecord",
    "fault_reply",
]

_METADATA_TYPE = "type.googleapis.com/google.cloud.deploy.v1.OperationMetadata"
HTML = "text/html; charset=UTF-8"
HTML_404 = (
    b"<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 404 (Not Found)!!1</title>"
    b"<p><b>404.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The requested URL was not found "
    b"on this server. <ins>That\xe2\x80\x99s all we know.</ins></html>"
)
_HTML_502 = (
    b"<!DOCTYPE html><html lang=en><title>Error 502 (Server Error)!!1</title>"
    b"<p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The server encountered a temporary "
    b"error and could not complete your request.<p>Please try again in 30 seconds.</html>"
)


class Behavior(enum.StrEnum):
    """How one operation reacts to cancel, and how it ends. The outcome bulkcancel must report
    is :attr:`expected` (assuming a reconcile deadline longer than ``cancel_delay``)."""

    #: cancel accepted; ``cancel_delay`` seconds later done with error code 1 (CANCELLED).
    CANCELS = "cancels"
    #: cancel accepted, but the operation finishes with a response anyway (alias "completes").
    COMPLETES_ANYWAY = "completes_anyway"
    #: cancel accepted, but the operation fails with another error (code 13) anyway.
    FAILS_ANYWAY = "fails_anyway"
    #: cancel accepted; the operation never finishes.
    NEVER = "never"
    #: finished before the run: cancel answers 400 FAILED_PRECONDITION, GET shows it done.
    ALREADY_DONE = "already_done"
    #: running and not cancellable: cancel answers 400 FAILED_PRECONDITION, stays running.
    NOT_CANCELLABLE = "not_cancellable"
    #: cancel answers 501 UNIMPLEMENTED; the operation keeps running.
    UNSUPPORTED = "unsupported"
    #: every call on it answers 403 PERMISSION_DENIED.
    DENIED = "denied"
    #: it does not exist: every call answers 404 (and lists leave it out).
    MISSING = "missing"

    @classmethod
    def _missing_(cls, value: object) -> Behavior | None:
        return cls.COMPLETES_ANYWAY if value == "completes" else None

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
    Behavior.UNSUPPORTED: "unsupported",
    Behavior.DENIED: "permission_denied",
    Behavior.MISSING: "not_found",
}
ACCEPTING = (Behavior.CANCELS, Behavior.COMPLETES_ANYWAY, Behavior.FAILS_ANYWAY)


class ParentMode(enum.StrEnum):
    """How a whole parent (``projects/P/locations/L``) or project answers."""

    NORMAL = "normal"
    #: ``:cancel`` answers 501 UNIMPLEMENTED (the service does not support cancel).
    UNSUPPORTED = "unsupported"
    #: ``:cancel`` is not routed: an HTML 404 from the front end; GET still works.
    UNROUTED = "unrouted"
    #: every call answers 403 PERMISSION_DENIED (set it on ``projects/P`` for a whole project).
    DENIED = "denied"
    #: every call answers 503 (an unreachable location; ``locations/-`` lists report it).
    UNAVAILABLE = "unavailable"


class Fault(enum.StrEnum):
    """One misbehaviour, injected in place of the real answer (see ``inject``)."""

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
    REDIRECT = "redirect"  # 302 to ``redirect_to``
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


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class FakeOperation:
    """One operation's script and what happened to it. ``create_time`` is wall (epoch)
    seconds; ``cancelled_at`` is on the model's clock. With ``polls`` set, it is done only after
    more than ``polls`` reads (GET or list) following the accepted cancel."""

    name: str
    behavior: Behavior
    cancel_delay: float = 0.0
    create_time: float = 0.0
    target: str = "prod"
    verb: str = "deploy"
    polls: int | None = None
    #: cancels answered 200 (the same operation may rightly receive more only after a crash)
    accepted_cancels: int = 0
    cancel_requests: int = 0
    gets: int = 0
    reads_after_cancel: int = 0
    cancelled_at: float | None = None

    @property
    def expected(self) -> str:
        return self.behavior.expected

    @property
    def behaviour(self) -> str:  # the in-memory fake's spelling
        return self.behavior.value

    @property
    def accepted(self) -> int:
        return self.accepted_cancels

    @accepted.setter
    def accepted(self, count: int) -> None:
        """Script a cancel accepted before the run (at time 0 on the model's clock)."""
        self.accepted_cancels = count
        if count and self.cancelled_at is None:
            self.cancelled_at = float("-inf")

    def done(self, now: float) -> bool:
        b = self.behavior
        if b is Behavior.ALREADY_DONE:
            return True
        if b not in ACCEPTING or self.cancelled_at is None:
            return False
        if now - self.cancelled_at < self.cancel_delay:
            return False
        return self.polls is None or self.reads_after_cancel > self.polls

    def read(self) -> None:
        """Count one GET or list rendering (before :meth:`to_json`)."""
        self.gets += 1
        if self.cancelled_at is not None:
            self.reads_after_cancel += 1

    def full_target(self) -> str:
        if "/" in self.target:
            return self.target
        return "/".join(self.name.split("/")[:4]) + f"/targets/{self.target}"

    def to_json(self, now: float, wall_offset: float) -> dict[str, Any]:
        """The Operation as Cloud Deploy shows it; ``wall_offset`` turns clock into epoch."""
        meta: dict[str, Any] = {
            "@type": _METADATA_TYPE,
            "createTime": _rfc3339(self.create_time),
            "target": self.full_target(),
            "verb": self.verb,
            "apiVersion": "v1",
        }
        if self.cancelled_at is not None:
            meta["requestedCancellation"] = True
        body: dict[str, Any] = {"name": self.name, "metadata": meta}
        if self.done(now):
            body["done"] = True
            if self.cancelled_at is None or self.cancelled_at == float("-inf"):
                end = min(self.create_time + 60.0, now + wall_offset)
            else:
                end = self.cancelled_at + self.cancel_delay + wall_offset
            meta["endTime"] = _rfc3339(max(end, self.create_time))
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
    at: float  # the model's clock
    user_agent: str | None = None
    wall_time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """For a request log: what came, never the token itself."""
        return {
            "time": _rfc3339(self.wall_time),
            "method": self.method,
            "path": self.raw_path,
            "query": dict(self.query),
            "kind": self.kind,
            "status": self.status,
            "user_agent": self.user_agent,
            "token": self.authorization is not None,
            "user_project": self.user_project,
        }


def fault_reply(fault: Fault, redirect_to: str) -> Reply:
    """The answer that stands in for the real one when ``fault`` is injected."""
    if fault is Fault.RESET:
        return RESET
    if fault is Fault.THROTTLE:
        return error_reply(
            429,
            "Quota exceeded for quota metric 'API requests' and limit 'API requests per "
            "minute per region'.",
            reason="RATE_LIMIT_EXCEEDED",
        )
    if fault is Fault.THROTTLE_HINTED:
        hint = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"}
        return error_reply(429, "Quota exceeded.", reason="RATE_LIMIT_EXCEEDED", details=[hint])
    if fault is Fault.THROTTLE_RETRY_AFTER:
        return error_reply(
            429,
            "Too many requests.",
            reason="RATE_LIMIT_EXCEEDED",
            headers={"Retry-After": "1"},
        )
    if fault is Fault.THROTTLE_403:
        return error_reply(403, "User Rate Limit Exceeded", reason="rateLimitExceeded")
    if fault is Fault.UNAVAILABLE:
        return error_reply(503, "The service is currently unavailable.")
    if fault is Fault.BAD_GATEWAY_HTML:
        return Reply(502, _HTML_502, HTML)
    if fault is Fault.INTERNAL_HTML:
        return Reply(500, b"<html><body>Internal Server Error</body></html>", HTML)
    if fault is Fault.OVERSIZED:
        return Reply(200, b'{"name":"' + b"x" * (6 * 1024 * 1024) + b'"}')
    if fault is Fault.TRUNCATED:
        return Reply(200, b'{"name":"projects/p/locations/l/operati')
    if fault is Fault.REDIRECT:
        return Reply(302, b"", "text/plain", {"Location": redirect_to})
    if fault is Fault.UNAUTHENTICATED:
        return error_reply(401, "Request had invalid authentication credentials.")
    raise AssertionError(fault)  # pragma: no cover - every Fault is handled above
