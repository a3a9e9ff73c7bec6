"""The adaptive pacer, driven by a simulated clock and a simulated quota: exact and instant."""

from __future__ import annotations

import heapq

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
    next_global = 0.0
    while ok < requests:
        while (wait := pacer.reserve(now)) > 0:
            now += wait
        now = max(now, next_global)  # the global --rate limiter
        next_global = now + spacing
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
    assert share <= 0.10, share  # the issue asks <= 10% (aim: 5%)


def test_no_throttling_means_full_speed() -> None:
    seconds, throttled = drain(ceiling=100, quota=1000, requests=500)
    assert throttled == 0
    # Full speed after slow start (half the ceiling for the first window, then doubled).
    assert 5.0 <= seconds <= 5.0 + 0.6


def test_probes_back_up_after_the_quota_grows() -> None:
    pacer = KeyPacer(100.0, rate=100.0)
    pacer.on_throttle(0.1, None)
    assert pacer.rate == pytest.approx(70.0)
    now = 0.1
    for _ in range(200):  # clean windows
        now += 1.0
        pacer.on_success(now)
    assert pacer.rate == 100.0


def test_retry_hint_pauses_every_waiter_of_the_key() -> None:
    pacer = KeyPacer(10.0)
    pacer.on_throttle(1.0, 2.5)
    assert pacer.reserve(1.0) == pytest.approx(2.5)  # every waiter sees the pause
    assert pacer.reserve(1.0) == pytest.approx(2.5)
    assert pacer.reserve(3.5) == 0.0  # then they go one at a time, at the current rate
    assert pacer.reserve(3.5) == pytest.approx(1 / pacer.rate)


def test_one_decrease_per_window() -> None:
    pacer = KeyPacer(100.0, rate=100.0)
    for i in range(10):
        pacer.on_throttle(0.5 + i * 0.01, None)
    assert pacer.rate == pytest.approx(70.0)  # one decrease (x0.7) for the whole burst
    assert pacer.throttles == 10


async def test_keys_are_independent() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    governor = RateGovernor(1000.0, clock=lambda: now[0], sleep=fake_sleep)
    governor.on_throttle("projects/p/locations/a", 5.0)
    await governor.acquire("projects/p/locations/b")
    assert slept == []  # region b does not wait for region a's throttling
    await governor.acquire("projects/p/locations/a")
    assert slept == [pytest.approx(5.0)]
    start = 500.0  # slow start: half the ceiling
    assert governor.rates()["projects/p/locations/a"] == pytest.approx(start * 0.7)
    assert governor.rates()["projects/p/locations/b"] == start


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


def concurrent_drain(
    ceiling: float, quota: float, requests: int, workers: int, latency: float
) -> tuple[float, int]:
    """Like :func:`drain`, but with ``workers`` requests in flight whose answers arrive
    ``latency`` seconds later: the pacer learns of 429s late, as in a real run."""
    pacer = KeyPacer(ceiling)
    server = Bucket(quota, max(1.0, quota / 10))
    spacing = 1.0 / ceiling
    events = [(0.0, w) for w in range(workers)]  # (time the worker is free, worker)
    heapq.heapify(events)
    next_global = 0.0
    ok = throttled = 0
    now = 0.0
    while ok < requests:
        now, worker = heapq.heappop(events)
        wait = pacer.reserve(now)
        if wait > 0:
            heapq.heappush(events, (now + wait, worker))
            continue
        now = max(now, next_global)  # the global --rate limiter
        next_global = now + spacing
        admitted = server.admit(now)
        answered = now + latency
        if admitted:
            ok += 1
            pacer.on_success(answered)
        else:
            throttled += 1
            pacer.on_throttle(answered, None)
        heapq.heappush(events, (answered, worker))
    return now, throttled


@pytest.mark.parametrize("latency", [0.005, 0.05, 0.2])
def test_converges_with_many_requests_in_flight(latency: float) -> None:
    seconds, throttled = concurrent_drain(200, 40, 400, workers=32, latency=latency)
    floor = 400 / 40
    assert seconds <= 1.2 * floor, (seconds, floor)
    assert throttled / (400 + throttled) <= 0.10, throttled


def test_slow_start_doubles_until_the_first_throttle() -> None:
    pacer = KeyPacer(200.0)
    assert pacer.rate == 100.0
    pacer.on_success(0.5)
    pacer.on_success(1.01)  # the end of a clean window
    assert pacer.rate == 200.0
    pacer = KeyPacer(200.0)
    pacer.on_throttle(0.5, None)
    pacer.on_success(1.01)  # throttled window: measured, not doubled
    assert pacer.rate < 100.0
