"""The adaptive pacer, driven by a simulated clock and a simulated quota: exact and instant."""

from __future__ import annotations

import anyio
import pytest

from bulkcancel._limits import KeyPacer, RateGovernor


class Bucket:
    """A server-side token bucket quota, as the fake server and Google meter it."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.capacity, self.tokens, self.last = rate, burst, burst, 0.0

    def admit(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def drain(ceiling: float, quota: float, requests: int) -> tuple[float, int]:
    """Send ``requests`` successful requests through a pacer; return (seconds, 429s)."""
    pacer = KeyPacer(ceiling)
    server = Bucket(quota, quota)
    now, ok, throttled = 0.0, 0, 0
    spacing = 1.0 / ceiling  # the global --rate limiter
    while ok < requests:
        now += max(pacer.reserve(now), spacing)
        if server.admit(now):
            ok += 1
            pacer.on_success(now)
        else:
            throttled += 1
            pacer.on_throttle(now, None)
    return now, throttled


def test_converges_on_the_quota_without_wasting_it() -> None:
    seconds, throttled = drain(ceiling=200, quota=40, requests=600)
    floor = 600 / 40
    share = throttled / (600 + throttled)
    assert seconds <= 1.2 * floor, (seconds, floor)
    assert share <= 0.05, share


def test_no_throttling_means_full_speed() -> None:
    seconds, throttled = drain(ceiling=100, quota=1000, requests=500)
    assert throttled == 0
    assert seconds == pytest.approx(5.0, rel=0.01)


def test_probes_back_up_after_the_quota_grows() -> None:
    pacer = KeyPacer(100.0)
    pacer.on_throttle(0.1, None)
    assert pacer.rate == 50.0
    now = 0.1
    for _ in range(200):  # clean windows
        now += 1.0
        pacer.on_success(now)
    assert pacer.rate == 100.0


def test_retry_hint_pauses_every_waiter_of_the_key() -> None:
    pacer = KeyPacer(10.0)
    pacer.on_throttle(1.0, 2.5)
    first = pacer.reserve(1.0)
    second = pacer.reserve(1.0)
    assert first == pytest.approx(2.5)
    assert second == pytest.approx(2.5 + 1 / pacer.rate)


def test_one_decrease_per_window() -> None:
    pacer = KeyPacer(100.0)
    for i in range(10):
        pacer.on_throttle(0.5 + i * 0.01, None)
    assert pacer.rate == 50.0
    assert pacer.throttles == 10


async def test_keys_are_independent() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    governor = RateGovernor(1000.0, clock=lambda: now[0], sleep=fake_sleep)
    governor.on_throttle("projects/p/locations/a", 5.0)
    await governor.acquire("projects/p/locations/b")
    assert slept == []  # region b does not wait for region a's throttling
    await governor.acquire("projects/p/locations/a")
    assert slept == [pytest.approx(5.0)]
    assert governor.rates()["projects/p/locations/a"] == 500.0
    assert governor.rates()["projects/p/locations/b"] == 1000.0


async def test_ceiling_is_smooth_not_a_burst_per_second() -> None:
    """AsyncLimiter(burst, burst / rate): at 20/s the first 100 ms lets out ~2, not 20."""
    governor = RateGovernor(20.0)
    sent = 0
    with anyio.move_on_after(0.12):
        while True:
            await governor.acquire("k")
            sent += 1
    assert sent <= 5


def test_rejects_nonsense_rates() -> None:
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive"):
            RateGovernor(bad)
