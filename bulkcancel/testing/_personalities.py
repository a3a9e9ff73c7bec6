"""How a fake server says no: quota shapes, quota scopes, refusal bodies, background 429s, pages.

Pure and clock-injected: every decision takes ``now`` (seconds on the model's clock), so tests
drive a quota on virtual time and nothing here sleeps. The names below are stable strings; they
combine (one per group) as ``bucket-small,shared-quota,429-retryinfo`` from Python
(:func:`parse_personalities`) and from ``bulkcancel fake-server --personality``.

Quota shape (needs a rate: ``--quota R`` requests/s, sustained):

* ``bucket-small``: token bucket, burst of ``max(1, R/10)`` requests (the old default).
* ``bucket-minute``: token bucket whose burst is a whole window's worth, ``R * window``
  (a quota that lets you spend a minute's budget at once, then refills steadily).
* ``fixed-window``: ``R * window`` requests per window, windows aligned to multiples of
  ``window`` on the server's clock (Compute's synchronised minutes); ``window`` is scaled down
  (``--window 2``) so tests and benchmarks stay fast.

Quota scope: ``regional-quota`` (default; one quota per ``projects/P/locations/L``) or
``shared-quota`` (one per project, shared by all its regions, ``quota_location: global``).

Metering: ``reads-apart`` meters reads (GET, list) on a quota of their own, ``READ_SHARE``
times the write quota (Cloud Batch: 6,000 writes and 15,000 reads a minute per region), named
``write_requests`` / ``read_requests`` in ErrorInfo; by default every request counts on one
quota, as Cloud Deploy's ``api_requests``.

Refusal shape (quota refusals and background 429s): ``429-errorinfo`` (default; ErrorInfo
``RATE_LIMIT_EXCEEDED`` with quota metadata ``quota_metric``, ``quota_limit``,
``quota_limit_value`` (the sustained rate x 60, per minute as Google states it),
``quota_location``), ``429-bare`` (status and message only), ``429-retryinfo`` (ErrorInfo plus
RetryInfo ``retryDelay``: the time until the quota would admit again), ``403-rate-limit`` (403
with reason ``rateLimitExceeded``, in ErrorInfo and in legacy ``errors[]``).

Noise: ``background-429`` (a share of requests, ``--background-share``, default 0.1, answered
429 with no quota behind it: the share does not grow with the send rate) and ``fault-mix`` (8%
429, 5% 503, 2% HTML 502, 2% connection resets).

Pages: ``pages-50``, ``pages-100``, ``pages-1000`` (``pageSize`` capped there, default page
the cap or 50 if smaller) and ``pages-ignored`` (every page holds the server's default size
whatever ``pageSize`` asks).
"""

from __future__ import annotations

import enum
import json
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PERSONALITY_HELP",
    "READ_SHARE",
    "Personality",
    "Quota",
    "QuotaShape",
    "Refusal",
    "Reply",
    "error_reply",
    "jitter_factor",
    "parse_personalities",
    "throttle_reply",
]


def jitter_factor(rng: random.Random, sigma: float) -> float:
    """A network's jitter on one way of a round trip: a log-normal factor of ``sigma``, mean 1
    (so a latency varied by it keeps its mean). The fake server's ``--latency-jitter`` and the
    pacing simulator's ``jitter`` both draw it."""
    return math.exp(rng.gauss(0.0, sigma) - sigma * sigma / 2)


JSON = "application/json; charset=UTF-8"
#: One status name per HTTP status the fakes answer with (google.rpc.Code names).
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer, transport-neutral. ``status`` 0 means: reset the connection, no answer."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


RESET = Reply(0)


def error_reply(
    status: int,
    message: str,
    code: str | None = None,
    *,
    reason: str | None = None,
    metadata: Mapping[str, str] | None = None,
    details: Iterable[Mapping[str, Any]] = (),
    legacy_reason: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """Google's error envelope; ErrorInfo first when ``reason`` is given."""
    detail_list: list[Mapping[str, Any]] = []
    if reason:
        meta = {"service": "clouddeploy.googleapis.com", **(metadata or {})}
        detail_list.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": meta,
            }
        )
    detail_list += details
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": code or STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if legacy_reason:
        error["errors"] = [{"message": message, "domain": "usageLimits", "reason": legacy_reason}]
    if detail_list:
        error["details"] = detail_list
    return Reply(status, json.dumps({"error": error}).encode(), JSON, dict(headers or {}))


class Personality(enum.StrEnum):
    """A named trait of a fake server; see the module docstring for each."""

    BUCKET_SMALL = "bucket-small"
    BUCKET_MINUTE = "bucket-minute"
    FIXED_WINDOW = "fixed-window"
    SLIDING_WINDOW = "sliding-window"
    REGIONAL_QUOTA = "regional-quota"
    SHARED_QUOTA = "shared-quota"
    THROTTLE_ERROR_INFO = "429-errorinfo"
    THROTTLE_BARE = "429-bare"
    THROTTLE_RETRY_INFO = "429-retryinfo"
    THROTTLE_403 = "403-rate-limit"
    BACKGROUND_429 = "background-429"
    FAULT_MIX = "fault-mix"
    PAGES_50 = "pages-50"
    PAGES_100 = "pages-100"
    PAGES_1000 = "pages-1000"
    PAGES_IGNORED = "pages-ignored"
    READS_APART = "reads-apart"


#: ``reads-apart``: the read quota, as a multiple of the write quota (Cloud Batch's 15,000/6,000)
READ_SHARE = 2.5
#: the suffix of a read quota's key (``reads-apart``)
_READS = "|reads"

P = Personality
_GROUPS = (
    ("quota shape", (P.BUCKET_SMALL, P.BUCKET_MINUTE, P.FIXED_WINDOW, P.SLIDING_WINDOW)),
    ("quota scope", (P.REGIONAL_QUOTA, P.SHARED_QUOTA)),
    ("refusal", (P.THROTTLE_ERROR_INFO, P.THROTTLE_BARE, P.THROTTLE_RETRY_INFO, P.THROTTLE_403)),
    ("pages", (P.PAGES_50, P.PAGES_100, P.PAGES_1000, P.PAGES_IGNORED)),
    ("metering", (P.READS_APART,)),
)
#: One line per personality, for ``fake-server --help``.
PERSONALITY_HELP = {
    P.BUCKET_SMALL: "token bucket, burst max(1, R/10)",
    P.BUCKET_MINUTE: "token bucket, burst R*window (a minute's budget at once)",
    P.FIXED_WINDOW: "R*window requests per aligned window, then 429 until it turns",
    P.SLIDING_WINDOW: "R*window requests in any span of window seconds (a rolling log)",
    P.REGIONAL_QUOTA: "one quota per project+region (default)",
    P.SHARED_QUOTA: "one quota per project, shared by its regions",
    P.THROTTLE_ERROR_INFO: "429 with ErrorInfo quota metadata (default)",
    P.THROTTLE_BARE: "429 with status and message only",
    P.THROTTLE_RETRY_INFO: "429 with ErrorInfo and RetryInfo retryDelay",
    P.THROTTLE_403: "403 rateLimitExceeded instead of 429",
    P.BACKGROUND_429: "a share of 429s with no quota (--background-share)",
    P.FAULT_MIX: "8% 429, 5% 503, 2% HTML 502, 2% resets",
    P.PAGES_50: "list pages capped at 50",
    P.PAGES_100: "list pages capped at 100",
    P.PAGES_1000: "list pages capped at 1000",
    P.PAGES_IGNORED: "pageSize ignored: every page has the default size",
    P.READS_APART: f"reads (GET, list) on a quota of their own, {READ_SHARE:g}x the writes'",
}


def parse_personalities(spec: str | Iterable[str]) -> frozenset[Personality]:
    """``"bucket-small,shared-quota"`` (or an iterable of such strings) -> personalities.

    Raises ValueError on an unknown name or two of one group (two quota shapes, say)."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    chosen: set[Personality] = set()
    for part in parts:
        for word in part.split(","):
            word = word.strip().lower()
            if not word:
                continue
            try:
                chosen.add(Personality(word))
            except ValueError:
                known = ", ".join(p.value for p in Personality)
                raise ValueError(f"unknown personality {word!r} (known: {known})") from None
    for group, members in _GROUPS:
        picked = sorted(p.value for p in chosen if p in members)
        if len(picked) > 1:
            raise ValueError(f"pick one {group}, not {' and '.join(picked)}")
    return frozenset(chosen)


class QuotaShape(enum.StrEnum):
    BUCKET_SMALL = "bucket-small"
    BUCKET_MINUTE = "bucket-minute"
    FIXED_WINDOW = "fixed-window"
    SLIDING_WINDOW = "sliding-window"


class Refusal(enum.StrEnum):
    ERROR_INFO = "429-errorinfo"
    BARE = "429-bare"
    RETRY_INFO = "429-retryinfo"
    FORBIDDEN = "403-rate-limit"


@dataclass(slots=True)
class _KeyState:
    rate: float
    capacity: float
    tokens: float
    stamp: float
    first: float  # when this key saw its first request
    window_index: int = -1
    window_used: int = 0
    admitted: int = 0
    refused: int = 0
    #: sliding-window: when the requests admitted within the last window were
    log: deque[float] = field(default_factory=deque)


class Quota:
    """Admission per quota key. ``admit(name, now)`` is None when admitted, else the seconds
    until this key would admit again (a RetryInfo hint). Refused requests consume nothing."""

    def __init__(
        self,
        rate: float | None,
        *,
        shape: QuotaShape = QuotaShape.BUCKET_SMALL,
        window: float = 60.0,
        shared: bool = False,
        burst: float | None = None,
        location_rates: Mapping[str, float] | None = None,
        reads_apart: bool = False,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("a quota rate must be positive")
        if window <= 0:
            raise ValueError("a quota window must be positive")
        self.rate = rate
        self.shape = QuotaShape(shape)
        self.window = window
        self.shared = shared
        self.burst = burst
        #: location id -> rate: a different quota for that region (regional scope only)
        self.location_rates = dict(location_rates or {})
        #: reads (GET, list) count on a quota of their own, READ_SHARE times the writes'
        self.reads_apart = reads_apart
        self._keys: dict[str, _KeyState] = {}

    def key_of(self, name: str, *, read: bool = False) -> str:
        """``projects/P`` when shared, ``projects/P/locations/L`` per region (else the project);
        a read's key ends in ``|reads`` when reads are metered apart."""
        parts = name.split("/")
        if not self.shared and len(parts) >= 4 and parts[2] == "locations" and parts[3] != "-":
            key = "/".join(parts[:4])
        else:
            key = "/".join(parts[:2])
        return key + _READS if read and self.reads_apart else key

    def rate_of(self, key: str) -> float | None:
        base = key.removesuffix(_READS)
        location = base.split("/")[3] if base.count("/") >= 3 else None
        rate = self.rate
        if location is not None and location in self.location_rates:
            rate = self.location_rates[location]
        return rate * READ_SHARE if rate is not None and key != base else rate

    def _capacity(self, rate: float) -> float:
        if self.burst is not None:
            return self.burst
        if self.shape is QuotaShape.BUCKET_SMALL:
            return max(1.0, rate / 10)
        return max(1.0, math.floor(rate * self.window))

    def admit(self, name: str, now: float, *, read: bool = False) -> float | None:
        key = self.key_of(name, read=read)
        state = self._keys.get(key)
        if state is None:
            rate = self.rate_of(key)
            if rate is None:
                return None
            capacity = self._capacity(rate)
            state = self._keys[key] = _KeyState(rate, capacity, capacity, now, now)
        if self.shape is QuotaShape.FIXED_WINDOW:
            index = math.floor(now / self.window)
            if index != state.window_index:
                state.window_index, state.window_used = index, 0
            if state.window_used < state.capacity:
                state.window_used += 1
                state.admitted += 1
                return None
            state.refused += 1
            return (index + 1) * self.window - now
        if self.shape is QuotaShape.SLIDING_WINDOW:
            log = state.log
            while log and log[0] <= now - self.window:
                log.popleft()
            if len(log) < state.capacity:
                log.append(now)
                state.admitted += 1
                return None
            state.refused += 1
            return log[0] + self.window - now
        state.tokens = min(state.capacity, state.tokens + (now - state.stamp) * state.rate)
        state.stamp = now
        if state.tokens >= 1.0:
            state.tokens -= 1.0
            state.admitted += 1
            return None
        state.refused += 1
        return (1.0 - state.tokens) / state.rate

    def info(self, name: str, *, read: bool = False) -> dict[str, str]:
        """ErrorInfo quota metadata for a refusal of ``name`` (a read's, or not)."""
        key = self.key_of(name, read=read)
        rate = self.rate_of(key) or 0.0
        per = "PerProject" if self.shared else "PerProjectPerRegion"
        parts = key.removesuffix(_READS).split("/")
        meter, limit = "api_requests", "ApiRequests"
        if self.reads_apart:
            meter, limit = (
                ("read_requests", "ReadRequests") if read else ("write_requests", "WriteRequests")
            )
        return {
            "consumer": "/".join(parts[:2]),
            "quota_metric": f"clouddeploy.googleapis.com/{meter}",
            "quota_limit": f"{limit}PerMinute{per}",
            "quota_limit_value": str(round(rate * 60)),
            "quota_location": parts[3] if len(parts) >= 4 else "global",
        }

    def floor_seconds(self) -> float:
        """The least time the admitted requests could have taken: per key, what exceeded the
        first burst (or the first window) at the sustained rate; the slowest key decides."""
        floors = [
            max(0.0, s.admitted - s.capacity) / s.rate for s in self._keys.values() if s.admitted
        ]
        return max(floors, default=0.0)

    def oracle_seconds(self, ceiling: float) -> float:
        """The least time any client told ``ceiling`` requests/s could have taken to have what
        this quota admitted admitted: per key, an oracle that knows the quota sends at the
        ceiling from the key's first request and never draws a refusal (it waits for the next
        token, or the next window, instead); the slowest key decides. Unlike
        :meth:`floor_seconds` this counts window boundaries: a fixed window that admits all but
        the last few requests still makes every client wait for the window to turn."""
        if not math.isfinite(ceiling) or ceiling <= 0:
            raise ValueError("a ceiling must be a positive number")
        return max(
            (times[-1] - times[0] for times in self.oracle_schedule(ceiling).values()),
            default=0.0,
        )

    def oracle_schedule(self, ceiling: float) -> dict[str, list[float]]:
        """Per key that admitted anything, the oracle's send times (see
        :meth:`oracle_seconds`), on the clock :meth:`admit` is given."""
        return {k: self._oracle(s, ceiling) for k, s in self._keys.items() if s.admitted}

    def _oracle(self, state: _KeyState, ceiling: float) -> list[float]:
        step = 1.0 / ceiling
        at = state.first
        times: list[float] = []
        if self.shape is QuotaShape.FIXED_WINDOW:
            index, used = math.floor(at / self.window), 0
            for _ in range(state.admitted):
                if math.floor(at / self.window) > index:
                    index, used = math.floor(at / self.window), 0
                if used >= state.capacity:  # wait for the window to turn
                    index, used = index + 1, 0
                    at = index * self.window
                used += 1
                times.append(at)
                at += step
            return times
        if self.shape is QuotaShape.SLIDING_WINDOW:
            spent = math.ceil(state.capacity)  # (what admit lets into one window)
            for _ in range(state.admitted):
                if len(times) >= spent and times[-spent] + self.window > at:
                    at = times[-spent] + self.window  # the oldest of the budget ages out
                times.append(at)
                at += step
            return times
        tokens, stamp = state.capacity, at
        for _ in range(state.admitted):
            tokens = min(state.capacity, tokens + (at - stamp) * state.rate)
            stamp = at
            if tokens < 1.0:  # wait for the next token
                at += (1.0 - tokens) / state.rate
                tokens, stamp = 1.0, at
            tokens -= 1.0
            times.append(at)
            at += step
        return times

    def counts(self) -> dict[str, dict[str, int]]:
        return {k: {"admitted": s.admitted, "refused": s.refused} for k, s in self._keys.items()}


def throttle_reply(
    refusal: Refusal, *, quota: Mapping[str, str] | None = None, retry_after: float = 1.0
) -> Reply:
    """A throttle answer in one of the four shapes; ``quota`` is ErrorInfo's quota metadata
    (None for a 429 with no quota behind it), ``retry_after`` RetryInfo's delay in seconds."""
    if quota is not None:
        message = (
            f"Quota exceeded for quota metric '{quota['quota_metric']}' and limit "
            f"'{quota['quota_limit']}' of service 'clouddeploy.googleapis.com' for consumer "
            f"'{quota['consumer']}'."
        )
    else:
        message = "Resource has been exhausted (e.g. check quota)."
    if refusal is Refusal.BARE:
        return error_reply(429, message)
    if refusal is Refusal.FORBIDDEN:
        return error_reply(
            403,
            f"User Rate Limit Exceeded. {message}",
            reason="rateLimitExceeded",
            metadata=quota,
            legacy_reason="rateLimitExceeded",
        )
    details: list[Mapping[str, Any]] = []
    if refusal is Refusal.RETRY_INFO:
        delay = max(0.001, retry_after)
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay:.3f}s"}
        )
    return error_reply(429, message, reason="RATE_LIMIT_EXCEEDED", metadata=quota, details=details)
