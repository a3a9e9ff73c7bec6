"""Pure retry decisions and backoff: no I/O, no clock, no global randomness.

AIP-194 says retry UNAVAILABLE; a bulk engine must also ride out front-end 502/504s, a 500
INTERNAL or UNKNOWN, an ABORTED conflict, connection resets and timeouts, and treat throttling
(429, or a 403 whose reason is a rate limit) as a signal that slows the whole run rather than a
per-request failure.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from enum import Enum

#: ErrorInfo / legacy ``errors[].reason`` values that mean "slow down", whatever the HTTP status.
THROTTLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"})

_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
#: Beyond AIP-194's UNAVAILABLE: every call here is safe to repeat (a cancel is idempotent,
#: the rest are reads), so a 500 INTERNAL or UNKNOWN in Google's envelope is retried as one
#: without it is (it settled an accepted cancel as ``error`` at its first GET), and so is
#: ABORTED (a conflict: the next try may pass). DATA_LOSS is not.
_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "ABORTED"})


class RetryDecision(Enum):
    """What to do with an answer."""

    FINAL = "final"  # success or a definite answer: do not retry
    TRANSIENT = "transient"  # retry after backoff
    THROTTLED = "throttled"  # retry after the hinted delay, and slow the whole run


def verdict(
    http_status: int,
    canonical: str | None,
    reason: str | None,
    *,
    google_json: bool,
    message: str | None = None,
) -> RetryDecision:
    """Decide from what the server answered (``http_status`` 0 means no HTTP answer at all).

    A 403 is throttling when its reason says so, or when its message speaks of a per-minute
    quota (some APIs say "Quota exceeded for quota metric ... per minute" with a 403).

    Google JSON errors are judged by their canonical ``status`` string because several codes share
    an HTTP status (INTERNAL and UNKNOWN are 500 and retried, but so is DATA_LOSS, which is not;
    ABORTED is 409, retried, and so is ALREADY_EXISTS, which is not); a bare status is used only
    when the body is not Google's envelope (a front end's HTML 502, say).
    """
    if http_status == 0:
        return RetryDecision.TRANSIENT
    if http_status == 429 or canonical == "RESOURCE_EXHAUSTED":
        return RetryDecision.THROTTLED
    if reason in THROTTLE_REASONS and http_status in (403, 429):
        return RetryDecision.THROTTLED
    if http_status == 403 and message is not None and is_rate_quota_message(message):
        return RetryDecision.THROTTLED
    if google_json and canonical:
        return RetryDecision.TRANSIENT if canonical in _TRANSIENT_CODES else RetryDecision.FINAL
    if http_status in (502, 503, 504):
        return RetryDecision.TRANSIENT
    # A non-Google 500 (plain text, HTML) is a front end or proxy failing: worth another try.
    return RetryDecision.TRANSIENT if http_status in _TRANSIENT_STATUS else RetryDecision.FINAL


_RATE_QUOTA = re.compile(r"quota.*per (minute|second)|per (minute|second).*quota", re.IGNORECASE)


def is_rate_quota_message(message: str) -> bool:
    """Whether an error message speaks of a per-minute (or per-second) rate quota."""
    return _RATE_QUOTA.search(message[:500]) is not None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff: ``uniform(0, min(cap, base * 2**attempt))``.

    Full jitter spreads a thundering herd of workers that failed together; the cap keeps one
    operation from waiting minutes on a single retry. The first ceiling is 0.1 s, the initial
    retry delay of Google's own generated clients for UNAVAILABLE: a 503 at random costs a
    retry within a tenth of a second, not a quarter (the tail of a short run under the fault
    mix is its longest retry chains). Eight tries wait up to 12.7 s in all (the ceilings
    summed): a server out for several seconds is still waited out. Retries go through the
    key's pacer and the run's ceiling like any request, so retrying sooner never sends more.

    A server that sheds load with 503s while it answers other calls is up, and busy: there a
    call tries up to ``busy_attempts`` times (a server answering 70% of requests 503 ended 1-6
    operations of 250 per run as ``error`` after eight, and a queue that answers 503 to what
    overflows it 1-4; the client decides, see ``_client``).
    """

    base: float = 0.1
    cap: float = 8.0
    max_attempts: int = 8  # total tries, the first included
    busy_attempts: int = 32  # ... while the same quota key answers other calls meanwhile

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Sleep before retry number ``attempt`` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * (2.0 ** min(attempt, 32)))
        return rng.uniform(0.0, ceiling)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_duration(text: object) -> float | None:
    """A protobuf Duration in JSON form (``"1.5s"``) as seconds, or None if it is not one."""
    if not isinstance(text, str):
        return None
    match = _DURATION.match(text)
    return float(match.group(1)) if match else None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in its delta-seconds form. HTTP dates are ignored (Google does not send
    them, and trusting a remote clock to schedule a local sleep is worse than backing off)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
