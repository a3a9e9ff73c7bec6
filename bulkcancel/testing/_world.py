"""One fake Operations API as a pure model: its state and the answer to every request.

Both fakes answer through :class:`OperationsModel`: ``FakeOperationsServer`` (aiohttp.web on
loopback) and ``MemoryOperations`` (the client's transport seam). Nothing here does I/O or
sleeps: time comes from the injected ``clock`` (monotonic: when a cancel lands, quota buckets
and windows) and ``wall`` (epoch: only the timestamps in ``metadata``), randomness from
``seed``. Routes follow ``WIRE.md``: cancel, get, list (``filter``, ``pageSize``,
``pageToken``, ``returnPartialSuccess`` with ``unreachable``, ``locations/-`` when enabled) and
list locations; paths are matched raw and exactly, so a client that lets a URL library
normalise ``..`` or ``%2F`` would be caught, not helped.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from bulkcancel.testing._model import (
    ACCEPTING,
    HTML,
    HTML_404,
    Behavior,
    FakeOperation,
    Fault,
    Faults,
    ParentMode,
    RequestRecord,
    fault_reply,
)
from bulkcancel.testing._personalities import (
    Personality,
    Quota,
    QuotaShape,
    Refusal,
    Reply,
    error_reply,
    parse_personalities,
    throttle_reply,
)
from bulkcancel.testing._producer import RunawayProducer

__all__ = ["OperationsModel"]

_FILTER = re.compile(r"\s*done\s*[=:]\s*(true|false)\s*", re.IGNORECASE)


@dataclass(slots=True)
class _Injection:
    fault: Fault
    kinds: frozenset[str] | None
    prefix: str | None
    times: int | None  # None: forever


def _ok(body: object) -> Reply:
    return Reply(200, json.dumps(body, separators=(",", ":")).encode())


#: First segments of the resource names the Operations routes serve (WIRE.md's name shapes).
_ROOTS = frozenset({"projects", "organizations", "folders", "operations"})


class OperationsModel:
    """The state of one fake Operations API and the answer to every request. All knobs are
    plain attributes; :meth:`personality` sets several from the named personalities."""

    def __init__(
        self,
        *,
        api_version: str = "v1",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        default_page_size: int = 50,
        max_page_size: int = 1000,
        seed: int = 0,
        keep_log: bool = True,
    ) -> None:
        self.api_version = api_version
        self.clock = clock
        self.wall = wall
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        #: every page holds ``default_page_size`` whatever ``pageSize`` asks
        self.ignore_page_size = False
        self._ops: dict[str, FakeOperation] = {}
        #: parent -> names under it, in creation order (lists page through this)
        self._children: dict[str, list[str]] = {}
        self._modes: dict[str, ParentMode] = {}
        self._extra_locations: dict[str, set[str]] = {}
        self._injections: deque[_Injection] = deque()
        self._repeat_tokens: set[str] = set()
        self._rng = random.Random(seed)  # noqa: S311 - a test double, not security
        #: the quota (None: no quota) and how its refusals (and background 429s) look
        self.quota_policy: Quota | None = None
        self.refusal = Refusal.ERROR_INFO
        #: share of requests answered 429 with no quota behind them
        self.background_429 = 0.0
        self.keep_log = keep_log
        #: every request, in arrival order (when ``keep_log``)
        self.log: list[RequestRecord] = []
        #: called with every request's record (a request log on disk, say)
        self.on_record: Callable[[RequestRecord], None] | None = None
        #: None: accept any (or no) credentials. A set: require ``Bearer <one of them>``.
        self.valid_tokens: set[str] | None = None
        #: random faults per request (after auth, before the real answer)
        self.faults: Faults | None = None
        #: where :attr:`Fault.REDIRECT` points
        self.redirect_to: str = "http://127.0.0.1:9/elsewhere"
        #: accept ``locations/-`` in list calls (most services do not)
        self.dash_listing: bool = False
        #: honour ``returnPartialSuccess`` (else it earns 501, as on most services)
        self.partial_success: bool = False
        #: unknown names act as this behaviour, already cancelled, without being stored
        self.unknown: Behavior | None = None
        self.wall_offset = wall() - clock()
        #: runaway producers (see :meth:`runaway`), caught up before every answer
        self.producers: list[RunawayProducer] = []

    # ---- scripting ---------------------------------------------------------------------------
    def add_operation(
        self,
        name: str,
        behavior: Behavior | str = Behavior.CANCELS,
        *,
        cancel_delay: float = 0.0,
        age: float = 600.0,
        target: str = "prod",
        verb: str = "deploy",
        polls: int | None = None,
    ) -> FakeOperation:
        """Add (or replace) an operation, ``age`` seconds old by its ``createTime``."""
        op = FakeOperation(
            name,
            Behavior(behavior),
            cancel_delay=cancel_delay,
            create_time=self.wall() - age,
            target=target,
            verb=verb,
            polls=polls,
        )
        if name not in self._ops:
            parent = name.rpartition("/operations/")[0]
            self._children.setdefault(parent, []).append(name)
        self._ops[name] = op
        return op

    def runaway(
        self,
        parent: str,
        *,
        rate: float,
        duration: float,
        behavior: Behavior | str = Behavior.CANCELS,
        start: float | None = None,
        cancel_delay: float = 0.0,
        prefix: str = "runaway-",
    ) -> RunawayProducer:
        """A runaway producer: ``rate`` new operations per second under ``parent`` for
        ``duration`` seconds from ``start`` (default: now), on the model's clock. They appear
        as requests arrive (see :mod:`bulkcancel.testing._producer`)."""
        producer = RunawayProducer(
            parent,
            rate,
            duration,
            self.clock() if start is None else start,
            Behavior(behavior),
            prefix,
            cancel_delay,
        )
        self.producers.append(producer)
        return producer

    def catch_up(self, now: float | None = None) -> None:
        """Create what the runaway producers have made by ``now`` (default: the clock)."""
        now = self.clock() if now is None else now
        for producer in self.producers:
            for name, age in producer.due(now):
                self.add_operation(
                    name, producer.behavior, cancel_delay=producer.cancel_delay, age=age
                )

    def set_mode(self, parent: str, mode: ParentMode | str) -> None:
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
        """List calls on ``parent`` return the same ``nextPageToken`` forever."""
        self._repeat_tokens.add(parent)

    def quota(self, rate: float, *, burst: float | None = None, per_region: bool = False) -> None:
        """Answer 429 past a token bucket of ``rate`` requests/s, per project (or per region)."""
        self.quota_policy = Quota(
            rate, burst=burst if burst is not None else max(1.0, rate / 10), shared=not per_region
        )

    def personality(
        self,
        spec: str | Iterable[str],
        *,
        rate: float | None = None,
        window: float = 60.0,
        background_share: float = 0.1,
        location_rates: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> frozenset[Personality]:
        """Take on the named personalities (see ``_personalities``): a quota of ``rate``
        requests/s (per ``location_rates`` for some regions), a ``window`` for the per-window
        shapes, a ``background_share`` of 429s. Raises ValueError on a bad combination."""
        chosen = parse_personalities(spec)
        shapes = [QuotaShape(p.value) for p in chosen if p.value in set(QuotaShape)]
        if Personality.READS_APART in chosen and rate is None and not location_rates:
            raise ValueError("reads-apart needs a quota rate")
        if (rate is not None or location_rates) or shapes:
            if rate is None and not location_rates:
                raise ValueError(f"{shapes[0]} needs a quota rate")
            self.quota_policy = Quota(
                rate,
                shape=shapes[0] if shapes else QuotaShape.BUCKET_SMALL,
                window=window,
                shared=Personality.SHARED_QUOTA in chosen,
                location_rates=location_rates,
                reads_apart=Personality.READS_APART in chosen,
            )
        for refusal in Refusal:
            if Personality(refusal.value) in chosen:
                self.refusal = refusal
        if Personality.BACKGROUND_429 in chosen:
            if not 0.0 <= background_share <= 1.0:
                raise ValueError("the background share of 429s must be between 0 and 1")
            self.background_429 = background_share
        if Personality.FAULT_MIX in chosen:
            self.faults = Faults(
                throttle=0.08, unavailable=0.05, bad_gateway_html=0.02, reset=0.02, seed=seed
            )
        for p, cap in ((Personality.PAGES_50, 50), (Personality.PAGES_100, 100)):
            if p in chosen:
                self.max_page_size, self.default_page_size = cap, min(cap, 50)
        if Personality.PAGES_1000 in chosen:
            self.max_page_size = 1000
        if Personality.PAGES_IGNORED in chosen:
            self.ignore_page_size = True
        self._rng.seed(seed)
        return chosen

    # ---- reading back ------------------------------------------------------------------------
    def operations(self) -> list[FakeOperation]:
        return list(self._ops.values())

    def operation(self, name: str) -> FakeOperation:
        return self._ops[name]

    def parents(self) -> list[str]:
        """Every parent holding an operation, in creation order."""
        return list(self._children)

    def requests(self, kind: str | None = None) -> list[RequestRecord]:
        return [r for r in self.log if kind is None or r.kind == kind]

    def expected(self) -> dict[str, str]:
        """Outcome per stored operation, given its behaviour and its parent's mode."""
        return {name: self.expected_outcome(name) for name in self._ops}

    def expected_outcome(self, name: str) -> str:
        mode = self.mode_of(name)
        if mode is ParentMode.DENIED:
            return "permission_denied"
        if mode is ParentMode.UNAVAILABLE:
            return "error"
        op = self._ops.get(name)
        if op is None:
            return "not_found"
        unsupported = op.behavior in ACCEPTING or op.behavior is Behavior.NEVER
        if mode in (ParentMode.UNSUPPORTED, ParentMode.UNROUTED) and unsupported:
            return "unsupported"
        return op.expected

    def stats(self, ceiling: float | None = None) -> dict[str, Any]:
        """Counts of what the server saw (for benchmarks): requests by kind, status and
        location (with first and last arrival), and the quota floor of what it admitted; with
        a ``ceiling`` (the clients' requests/s), also the quota oracle's time (see
        :meth:`Quota.oracle_seconds`)."""
        by_kind: dict[str, int] = {}
        by_status: dict[str, int] = {}
        by_location: dict[str, dict[str, float]] = {}
        for record in self.log:
            by_kind[record.kind] = by_kind.get(record.kind, 0) + 1
            by_status[str(record.status)] = by_status.get(str(record.status), 0) + 1
            where = "/".join(record.name.split("/")[:4])
            entry = by_location.setdefault(
                where, {"requests": 0, "throttled": 0, "first": record.at, "last": record.at}
            )
            entry["requests"] += 1
            entry["throttled"] += record.status == 429
            entry["last"] = record.at
        first = self.log[0].at if self.log else 0.0
        last = self.log[-1].at if self.log else 0.0
        policy = self.quota_policy
        return {
            "requests": len(self.log),
            "by_kind": by_kind,
            "by_status": by_status,
            "by_location": by_location,
            "span_seconds": last - first,
            "quota_floor_seconds": policy.floor_seconds() if policy else None,
            "quota_keys": policy.counts() if policy else {},
            "quota_oracle_seconds": (
                policy.oracle_seconds(ceiling) if policy and ceiling is not None else None
            ),
        }

    # ---- answering ---------------------------------------------------------------------------
    def mode_of(self, name: str) -> ParentMode:
        parts = name.split("/")
        for depth in (4, 2):  # projects/P/locations/L, then projects/P
            mode = self._modes.get("/".join(parts[:depth]))
            if mode is not None and len(parts) >= depth:
                return mode
        return ParentMode.NORMAL

    def route(self, method: str, path: str) -> tuple[str, str]:
        """``(kind, name)`` for a raw path: cancel, get, list, locations or unknown."""
        prefix = f"/{self.api_version}/"
        if not path.startswith(prefix):
            return "unknown", ""
        rest = path[len(prefix) :]
        if rest.split("/", 1)[0] not in _ROOTS:
            # Google's front end routes by the method's URL template: a path whose resource
            # name does not start with a known collection (an extra "/v1", say) never reaches
            # the service and gets the front end's HTML 404.
            return "unknown", rest
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

    def handle(
        self,
        method: str,
        raw: str,
        headers: Mapping[str, str],
        *,
        at: float | None = None,
        routed: tuple[str, str] | None = None,
    ) -> Reply:
        """Answer one request (``raw``: path and query as sent) and record it."""
        path, _, query_string = raw.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        kind, name = routed if routed is not None else self.route(method, path)
        lower = {k.lower(): v for k, v in headers.items()}
        auth = lower.get("authorization")
        at = self.clock() if at is None else at
        if self.producers:
            self.catch_up(max(at, self.clock()))
        reply = self.answer(kind, name, query, auth)
        if self.keep_log or self.on_record is not None:
            record = RequestRecord(
                method,
                path,
                query,
                kind,
                name,
                auth,
                lower.get("x-goog-user-project"),
                reply.status,
                at,
                lower.get("user-agent"),
                at + self.wall_offset,
            )
            if self.keep_log:
                self.log.append(record)
            if self.on_record is not None:
                self.on_record(record)
        return reply

    def answer(self, kind: str, name: str, query: Mapping[str, str], auth: str | None) -> Reply:
        if self.valid_tokens is not None:
            token = auth[7:] if auth and auth.startswith("Bearer ") else None
            if token not in self.valid_tokens:
                return error_reply(
                    401,
                    "Request had invalid authentication credentials.",
                    reason="ACCESS_TOKEN_EXPIRED" if token else "CREDENTIALS_MISSING",
                )
        if self.background_429 and self._rng.random() < self.background_429:
            return throttle_reply(self.refusal, quota=None)
        if self.quota_policy is not None:
            read = kind != "cancel"  # (GET, list and the locations listing are reads)
            wait = self.quota_policy.admit(name, self.clock(), read=read)
            if wait is not None:
                info = self.quota_policy.info(name, read=read)
                return throttle_reply(self.refusal, quota=info, retry_after=wait)
        fault = self._take_injection(kind, name)
        if fault is None and self.faults is not None:
            fault = self.faults.draw()
        if fault is not None:
            return fault_reply(fault, self.redirect_to)
        if kind == "unknown":
            return Reply(404, HTML_404, HTML)
        mode = self.mode_of(name)
        if mode is ParentMode.DENIED:
            return _denied(kind, name)
        if mode is ParentMode.UNAVAILABLE:
            return error_reply(503, "The service is currently unavailable.")
        if kind == "list":
            return self._list(name, query)
        if kind == "locations":
            return self._locations(name, query)
        return self._operation(kind, name, mode)

    def _operation(self, kind: str, name: str, mode: ParentMode) -> Reply:
        if kind == "cancel" and mode is ParentMode.UNROUTED:
            return Reply(404, HTML_404, HTML)  # the front end never reaches the service
        now = self.clock()
        op = self._ops.get(name)
        stored = op is not None
        if op is None and self.unknown is not None:
            op = FakeOperation(name, self.unknown, create_time=self.wall() - 600.0)
            if kind != "cancel":
                op.accepted = 1  # unstored names act as if cancelled earlier
        if op is None or op.behavior is Behavior.MISSING:
            return error_reply(404, f"Operation {name!r} not found.")
        if op.behavior is Behavior.DENIED:
            return _denied(kind, name)
        if kind == "cancel":
            op.cancel_requests += 1
            if mode is ParentMode.UNSUPPORTED or op.behavior is Behavior.UNSUPPORTED:
                return error_reply(501, "Operation cancellation is not supported by this service.")
            if op.done(now):
                return error_reply(400, "Operation has already completed.", "FAILED_PRECONDITION")
            if op.behavior is Behavior.NOT_CANCELLABLE:
                return error_reply(
                    400,
                    "Operation is not cancellable in its current state.",
                    "FAILED_PRECONDITION",
                )
            if stored:
                op.accepted_cancels += 1
                if op.cancelled_at is None:
                    op.cancelled_at = now
            return _ok({})
        op.read()
        return _ok(op.to_json(now, self.wall_offset))

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

    def _page_bounds(self, query: Mapping[str, str]) -> tuple[int, int] | Reply:
        try:
            size = int(query.get("pageSize") or 0)
        except ValueError:
            return error_reply(400, "Invalid value for pageSize.")
        if size < 0:
            return error_reply(400, "pageSize must not be negative.")
        if self.ignore_page_size:
            size = self.default_page_size
        size = min(size or self.default_page_size, self.max_page_size)
        token = query.get("pageToken") or ""
        if token:
            if not token.startswith("p") or not token[1:].isdigit():
                return error_reply(400, "Invalid page token.")
            return int(token[1:]), size
        return 0, size

    def _list(self, parent: str, query: Mapping[str, str]) -> Reply:
        partial = query.get("returnPartialSuccess", "").lower() in ("true", "1")
        if partial and not self.partial_success:
            return error_reply(501, "returnPartialSuccess is not supported by this method.")
        segments = parent.split("/")
        unreachable: list[str] = []
        if len(segments) == 4 and segments[3] == "-":
            if not self.dash_listing:
                return error_reply(400, "Location '-' is not supported for this method.")
            prefix = "/".join(segments[:3]) + "/"
            parents = [p for p in self._children if p.startswith(prefix)]
            unreachable = [p for p in parents if self.mode_of(p) is ParentMode.UNAVAILABLE]
            if unreachable and not partial:
                return error_reply(503, f"Location {unreachable[0]!r} is unavailable.")
            names = [n for p in parents if p not in unreachable for n in self._children[p]]
        else:
            names = self._children.get(parent, [])
        want: bool | None = None
        filter_expr = query.get("filter", "")
        if filter_expr.strip():
            match = _FILTER.fullmatch(filter_expr)
            if match is None:
                return error_reply(400, f"Invalid filter: {filter_expr!r}.")
            want = match.group(1).lower() == "true"
        bounds = self._page_bounds(query)
        if isinstance(bounds, Reply):
            return bounds
        start, size = bounds
        now = self.clock()
        page: list[dict[str, Any]] = []
        position = start
        # The filter applies before paging, as on a real server: walk until the page is full.
        while position < len(names) and len(page) < size:
            op = self._ops[names[position]]
            position += 1
            if op.behavior is Behavior.MISSING:
                continue
            if want is None or op.done(now) == want:
                op.read()
                page.append(op.to_json(now, self.wall_offset))
        body: dict[str, Any] = {"operations": page} if page else {}
        if parent in self._repeat_tokens:
            body["nextPageToken"] = f"p{size}"  # the second page, forever
        elif position < len(names):
            body["nextPageToken"] = f"p{position}"
        if unreachable and start == 0:
            body["unreachable"] = unreachable
        return _ok(body)

    def _locations(self, project: str, query: Mapping[str, str]) -> Reply:
        ids = set(self._extra_locations.get(project, ()))
        prefix = project + "/locations/"
        for parent in self._children:
            if parent.startswith(prefix):
                ids.add(parent[len(prefix) :].split("/")[0])
        bounds = self._page_bounds(query)
        if isinstance(bounds, Reply):
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


def _denied(kind: str, name: str) -> Reply:
    return error_reply(
        403,
        f"Permission 'clouddeploy.operations.{kind}' denied on resource '{name}'.",
        reason="IAM_PERMISSION_DENIED",
    )
