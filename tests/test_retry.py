"""Backoff and retry decisions, with injected randomness."""

from __future__ import annotations

import random

import pytest

from bulkcancel._retry import Backoff, RetryDecision, parse_duration, parse_retry_after, verdict


@pytest.mark.parametrize(
    ("status", "code", "reason", "google", "expected"),
    [
        (0, None, None, False, RetryDecision.TRANSIENT),  # reset / timeout
        (503, "UNAVAILABLE", None, True, RetryDecision.TRANSIENT),
        (502, None, None, False, RetryDecision.TRANSIENT),  # front end HTML
        (504, None, None, False, RetryDecision.TRANSIENT),
        (504, "DEADLINE_EXCEEDED", None, True, RetryDecision.TRANSIENT),
        (500, "INTERNAL", None, True, RetryDecision.TRANSIENT),  # (every call here repeats safely)
        (500, "UNKNOWN", None, True, RetryDecision.TRANSIENT),
        (500, "DATA_LOSS", None, True, RetryDecision.FINAL),
        (500, None, None, False, RetryDecision.TRANSIENT),
        (429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED", True, RetryDecision.THROTTLED),
        (429, None, None, False, RetryDecision.THROTTLED),
        (403, "PERMISSION_DENIED", "rateLimitExceeded", True, RetryDecision.THROTTLED),
        (403, "PERMISSION_DENIED", "userRateLimitExceeded", True, RetryDecision.THROTTLED),
        (403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED", True, RetryDecision.FINAL),
        (401, "UNAUTHENTICATED", None, True, RetryDecision.FINAL),
        (400, "INVALID_ARGUMENT", None, True, RetryDecision.FINAL),
        (400, "FAILED_PRECONDITION", None, True, RetryDecision.FINAL),
        (404, "NOT_FOUND", None, True, RetryDecision.FINAL),
        (404, None, None, False, RetryDecision.FINAL),
        (501, "UNIMPLEMENTED", None, True, RetryDecision.FINAL),
        (409, "ABORTED", None, True, RetryDecision.TRANSIENT),
        (409, "ALREADY_EXISTS", None, True, RetryDecision.FINAL),
    ],
)
def test_verdicts(
    status: int, code: str | None, reason: str | None, google: bool, expected: RetryDecision
) -> None:
    assert verdict(status, code, reason, google_json=google) is expected


class FixedRandom(random.Random):
    """uniform() returns its upper bound, so the test sees the ceiling of each attempt."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_full_jitter_ceilings_grow_and_cap() -> None:
    backoff = Backoff(base=0.5, cap=4.0)
    ceilings = [backoff.delay(i, FixedRandom()) for i in range(6)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(10_000, FixedRandom()) == 4.0  # no overflow for absurd attempts


def test_the_default_backoff_is_quick_on_a_blip_and_patient_through_an_outage() -> None:
    backoff = Backoff()
    ceilings = [backoff.delay(i, FixedRandom()) for i in range(backoff.max_attempts - 1)]
    assert ceilings[0] == pytest.approx(0.1)  # a 503 at random is retried within 0.1 s
    assert 10.0 <= sum(ceilings) <= 15.0  # a call waits out several seconds of 503s


def test_full_jitter_spreads_between_zero_and_ceiling() -> None:
    rng = random.Random(1)
    delays = [Backoff(base=1.0, cap=1.0).delay(3, rng) for _ in range(500)]
    assert min(delays) >= 0.0
    assert max(delays) <= 1.0
    assert min(delays) < 0.1  # full jitter reaches down to zero...
    assert max(delays) > 0.9  # ...and up to the ceiling


def test_durations_and_retry_after() -> None:
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("3s") == 3.0
    assert parse_duration("soon") is None
    assert parse_duration(5) is None
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-1") is None
    assert parse_retry_after(None) is None
