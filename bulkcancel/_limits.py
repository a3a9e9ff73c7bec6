"""Request pacing: a hard ceiling for the whole run, and an adaptive rate per quota key.

Two layers, because they answer different questions:

* ``--rate`` is a promise to the user: never more than R requests per second, all calls of the run
  together. An aiolimiter leaky bucket enforces it, built as ``AsyncLimiter(burst, burst / rate)``
  with a burst of a tenth of a second's worth, so the server never sees more than ~1.1 R in any
  one-second window (``AsyncLimiter(rate, 1)`` would let a whole second out at once).
* The server's quota is a fact we learn. Google meters per project and region, so each quota key
  (``projects/P/locations/L``) gets its own pacer: one region being throttled never slows another.

The adaptive pacer is AIMD with a measured ceiling:

* multiplicative decrease: a throttle answer halves the key's rate at once (at most once per
  100 ms, so one burst of 429s counts once), and every waiter of that key honours the server's
  retry hint (one shared signal, not N backoffs);
* measurement: at the end of each one-second window that saw throttling, the rate becomes 95% of
  what the server actually *accepted* in that window: while a quota bucket is empty, that is the
  quota itself, so the second estimate is nearly exact instead of oscillating by halves;
* additive increase: each clean window adds 3% (at least a small step), probing back toward
  ``--rate`` so a quota that grows, or a per-minute bucket that refills, is used again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from aiolimiter import AsyncLimiter

_WINDOW = 1.0  # seconds over which accepted requests are counted
_MEASURED_SHARE = 0.95  # keep a little under the measured quota
_INCREASE_SHARE = 0.10  # additive probe per clean window, as a share of the current rate
_DECREASE = 0.7  # multiplicative decrease on a throttle answer...
_DECREASE_GAP = 0.1  # ...at most once per this many seconds (one burst of 429s, one decrease)
_MIN_RATE = 0.5  # requests/s: never stall a key completely
_START_SHARE = 0.5  # a new key starts at this share of the ceiling (slow start)


@dataclass(slots=True)
class KeyPacer:
    """The adaptive rate of one quota key. Pure: every method takes ``now``.

    At the ceiling with no pause in force, ``reserve`` is free: the global limiter alone paces.
    Below it, requests are spaced exactly ``1/rate`` apart (GCRA), which keeps a throttled key
    smooth instead of bursting whenever the bucket refills.
    """

    ceiling: float
    rate: float = 0.0
    next_free: float = 0.0
    paused_until: float = 0.0
    window_start: float = 0.0
    window_ok: int = 0
    window_throttled: int = 0
    last_decrease: float = float("-inf")
    #: what the server accepted per second the last time it throttled: the quota, roughly.
    estimate: float = float("inf")
    throttles: int = field(default=0)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            # Slow start: half the ceiling, doubling after each clean window until the first
            # throttle, so a run told more than the quota does not open with a wall of 429s.
            self.rate = max(_MIN_RATE, self.ceiling * _START_SHARE)

    def reserve(self, now: float) -> float:
        """Claim a slot if one is free now (return 0); otherwise return how long to wait
        before asking again, *without* claiming anything.

        Nothing is booked ahead: a waiter asks again when its turn may have come, at the rate
        in force then. (Booking ahead meant that slots claimed while the rate was briefly at
        its floor stayed seconds apart after the rate had recovered.)
        """
        if self.rate >= self.ceiling and self.paused_until <= now:
            return 0.0
        slot = max(self.next_free, self.paused_until)
        if slot > now:
            return slot - now
        self.next_free = now + 1.0 / self.rate
        return 0.0

    def on_success(self, now: float) -> None:
        self._roll(now)
        self.window_ok += 1

    def on_throttle(self, now: float, hint: float | None) -> None:
        self._roll(now)
        self.throttles += 1
        self.window_throttled += 1
        if now - self.last_decrease >= _DECREASE_GAP:
            self.rate = max(_MIN_RATE, self.rate * _DECREASE)
            self.last_decrease = now
        if hint is not None and hint > 0:
            self.paused_until = max(self.paused_until, now + hint)

    def _roll(self, now: float) -> None:
        elapsed = now - self.window_start
        if elapsed < _WINDOW:
            return
        if self.window_throttled:
            self.estimate = self.window_ok / elapsed
            self.rate = max(_MIN_RATE, min(self.ceiling, self.estimate * _MEASURED_SHARE))
        elif self.window_ok and self.rate < self.ceiling:
            # Decreases overshoot (several may land before the measurement does): return to the
            # measured quota at once, then probe above it additively.
            if self.throttles == 0:  # slow start: no throttle seen yet, double
                probe = self.rate * 2
            else:
                probe = self.rate + max(self.rate * _INCREASE_SHARE, _MIN_RATE)
            known = self.estimate * _MEASURED_SHARE  # inf until the first throttled window
            self.rate = min(self.ceiling, probe if known > self.ceiling else max(probe, known))
        self.window_start = now
        self.window_ok = 0
        self.window_throttled = 0


Sleep = Callable[[float], Awaitable[None]]


class RateGovernor:
    """Paces every request of a run: the ``--rate`` ceiling plus one adaptive pacer per quota key.

    Build it inside the running event loop (the leaky bucket binds to the loop on first use).
    ``clock`` and ``sleep`` are injectable so tests can drive it without waiting.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if not rate > 0 or math.isinf(rate) or math.isnan(rate):
            raise ValueError("rate must be a positive number")
        self.ceiling = rate
        burst = max(1.0, rate / 50.0)  # 20 ms worth: smooth, and a small first burst
        self._limiter = AsyncLimiter(burst, burst / rate)
        self._clock = clock or time.monotonic  # asyncio's own clock, without anyio's lookup
        self._sleep = sleep or anyio.sleep
        self._pacers: dict[str, KeyPacer] = {}

    def pacer(self, key: str) -> KeyPacer:
        pacer = self._pacers.get(key)
        if pacer is None:
            pacer = self._pacers[key] = KeyPacer(self.ceiling, window_start=self._clock())
        return pacer

    async def acquire(self, key: str) -> None:
        """Wait for permission to send one request counted against ``key``."""
        pacer = self.pacer(key)
        while (wait := pacer.reserve(self._clock())) > 0:
            await self._sleep(wait)
        await self._limiter.acquire()

    def on_success(self, key: str) -> None:
        self.pacer(key).on_success(self._clock())

    def on_throttle(self, key: str, hint: float | None) -> None:
        self.pacer(key).on_throttle(self._clock(), hint)

    def rates(self) -> dict[str, float]:
        """Current rate per quota key, for the report."""
        return {key: round(p.rate, 3) for key, p in self._pacers.items()}
