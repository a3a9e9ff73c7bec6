"""The pacing simulator: the real RateGovernor and OperationsClient against quota models, on
virtual time.

On ``tests._support.VirtualLoop``, whose clock jumps ahead whenever nothing is ready
(:func:`run_simulation`): every sleep, pacer wait and hint costs no real time, and a run is
deterministic. Server models (a token bucket, a fixed window, the fake's own quotas, open and
closed), a server answering by them, and :func:`simulate`, which cancels names through the real
client against one. Used by the pacing tests and by ``benchmarks/sweep.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._client import OperationsClient
from bulkcancel._limits import RateGovernor
from bulkcancel._pacer import KeyPacer
from bulkcancel._retry import Backoff
from bulkcancel._transport import CallableTransport, RawResponse
from bulkcancel.testing._personalities import Quota as FakeQuota
from bulkcancel.testing._personalities import QuotaShape, jitter_factor
from tests._support import NoAuth, VirtualLoop

T = TypeVar("T")


def run_simulation(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``main()`` to its end on a :class:`~tests._support.VirtualLoop` that jumps a nanosecond
    at least, by asyncio's own ``run_until_complete`` (no anyio around it): the simulations'
    figures, asserted exactly here and in ``benchmarks/sweep.py``'s outputs, were measured so."""
    loop = VirtualLoop(least=1e-9)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# -- server models ---------------------------------------------------------------------------

PROJECT = "projects/p"


def name(i: int, location: str = "a") -> str:
    return f"{PROJECT}/locations/{location}/operations/op-{i:05d}"


def throttle(
    retry_after: float | None = None, metadata: dict[str, str] | None = None
) -> RawResponse:
    details: list[dict[str, Any]] = []
    if metadata is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "metadata": metadata,
            }
        )
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": details}}
    hint = None if retry_after is None else str(retry_after)
    return RawResponse(429, json.dumps(body).encode(), "application/json", retry_after=hint)


OK = RawResponse(200, b"{}", "application/json")


class Bucket:
    """A token bucket quota: ``rate`` per second, ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, 0.0

    def admit(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Window:
    """A fixed, synchronized window: ``limit`` requests per ``period``, then nothing."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit, self.period, self.window, self.used = limit, period, 0, 0

    def admit(self, now: float) -> bool:
        window = int(now // self.period)
        if window != self.window:
            self.window, self.used = window, 0
        if self.used < self.limit:
            self.used += 1
            return True
        return False


class PhasedWindow:
    """The fake server's own fixed-window quota (``limit`` per ``period``), the run starting
    ``offset`` seconds into a window; its oracle (``Quota.oracle_seconds``) is the floor."""

    def __init__(self, limit: int, period: float, offset: float) -> None:
        self.quota = FakeQuota(limit / period, shape=QuotaShape.FIXED_WINDOW, window=period)
        self.offset = offset

    def admit(self, now: float) -> bool:
        return self.quota.admit(PROJECT, now + self.offset) is None


class Open:
    def admit(self, now: float) -> bool:
        return True


class Closed:
    def admit(self, now: float) -> bool:
        return False


Quota = Bucket | Window | PhasedWindow | Open | Closed


@dataclass
class Server:
    """Answers a cancel by the quota of its location (or a shared one)."""

    quotas: dict[str, Quota]
    noise: float = 0.0
    retry_after: float | None = None
    metadata: dict[str, str] | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    requests: int = 0
    throttled: int = 0
    hinted: dict[str, float] = field(default_factory=dict)  # name -> Retry-After, answered once
    log: list[tuple[float, str, bool]] = field(default_factory=list)
    reads: Quota | None = None  # reads (GETs) metered apart, on a quota of their own
    refused: frozenset[str] = frozenset()  # names always refused (a limit of their own)

    def answer(self, now: float, url: str, *, read: bool = False) -> RawResponse:
        self.requests += 1
        op = url.split("/v1/", 1)[1].removesuffix(":cancel")
        location = op.split("/")[3]
        quota = self.quotas.get(location) or self.quotas["*"]
        if read and self.reads is not None:
            quota = self.reads
        if op in self.hinted:
            self.throttled += 1
            self.log.append((now, location, False))
            return throttle(self.hinted.pop(op))
        admitted = quota.admit(now) and not self.rng.random() < self.noise
        admitted = admitted and op not in self.refused
        self.log.append((now, location, admitted))
        if admitted:
            return OK
        self.throttled += 1
        return throttle(self.retry_after, self.metadata)


@dataclass
class Result:
    answers: list[Answer]
    seconds: float
    server: Server
    done_at: dict[str, float]  # name -> virtual time its call returned

    @property
    def share_429(self) -> float:
        return self.server.throttled / max(1, self.server.requests)

    def finished(self, location: str) -> float:
        return max(t for n, t in self.done_at.items() if f"/locations/{location}/" in n)


def simulate(
    server: Server,
    names: Sequence[str],
    *,
    rate: float,
    concurrency: int = 32,
    workers: int = 64,
    latency: float = 0.02,
    jitter: float = 0.0,
    jitter_seed: int = 0,
    stop_at: float | None = None,
    stop_cancels_only: bool = False,
    throttle_budget: float = 120.0,
    at: tuple[float, Callable[[RateGovernor, float], None]] | None = None,
    read_after: float | None = None,
) -> Result:
    """Cancel every name through the real client against ``server``, on virtual time, with
    ``workers`` tasks per location (the client's slots bound what is in flight); ``at``: a
    virtual time and what happens to the governor then. ``jitter``: each way of a round trip
    takes ``latency / 2`` times a log-normal factor of that sigma (mean 1, drawn from
    ``jitter_seed``), so requests may reach the server, and answers the client, out of order.
    ``read_after``: each operation is read back by GET that many seconds after its cancel
    returned, as the reconciler does (every read must succeed; ``done_at`` stays the cancels')."""
    spread = random.Random(jitter_seed)

    def way() -> float:
        if jitter <= 0:
            return latency / 2
        return latency / 2 * jitter_factor(spread, jitter)

    async def main() -> Result:
        loop = asyncio.get_running_loop()

        async def handler(
            method: str, url: str, headers: Mapping[str, str], body: bytes | None
        ) -> RawResponse:
            await asyncio.sleep(way())
            raw = server.answer(loop.time(), url, read=method == "GET")
            await asyncio.sleep(way())
            return raw

        governor = RateGovernor(rate, throttle_budget=throttle_budget)
        client = OperationsClient(
            CallableTransport(handler),
            endpoint="http://sim.invalid",
            api_version="v1",
            tokens=NoAuth(),
            governor=governor,
            concurrency=concurrency,
            backoff=Backoff(base=0.05, cap=1.0, max_attempts=6),
            rng=random.Random(0),
        )
        done_at: dict[str, float] = {}
        reads: list[asyncio.Task[Answer]] = []

        async def read_back(op: str, delay: float) -> Answer:
            await asyncio.sleep(delay)
            return await client.get(op)

        async def one(op: str) -> Answer:
            answer = await client.cancel(op)
            done_at[op] = loop.time()
            if read_after is not None:
                reads.append(asyncio.ensure_future(read_back(op, read_after)))
            return answer

        # Like an engine with a queue per quota key: each location has its own workers, so
        # a slow location's backlog never occupies the workers of another.
        queues: dict[str, list[int]] = {}
        for i, op in enumerate(names):
            queues.setdefault(op.split("/")[3], []).append(i)
        answers: list[Answer | None] = [None] * len(names)

        async def worker(queue: list[int]) -> None:
            while queue:
                i = queue.pop(0)
                answers[i] = await one(names[i])

        if at is not None:
            loop.call_at(at[0], at[1], governor, at[0])
        if stop_at is not None:
            loop.call_at(stop_at, client.stop_cancels if stop_cancels_only else client.stop)
        start = loop.time()
        await asyncio.gather(
            *(worker(q) for q in queues.values() for _ in range(min(workers, len(q))))
        )
        assert all(a is not None for a in answers)
        assert all(read.ok for read in await asyncio.gather(*reads))
        if stop_cancels_only:  # reads still go out after a stop of the cancels
            read = await client.get(names[0])
            assert read.kind is not AnswerKind.STOPPED
        return Result([a for a in answers if a is not None], loop.time() - start, server, done_at)

    return run_simulation(main)


def per_minute_limit(per_second: float, location: str = "a") -> dict[str, str]:
    """ErrorInfo quota metadata as Google sends it: a per-minute limit of ``per_second`` x 60,
    for one region (``location``) or for the whole project (``"global"``)."""
    scope = "PerProject" if location == "global" else "PerProjectPerRegion"
    return {
        "quota_metric": "clouddeploy.googleapis.com/api_requests",
        "quota_limit": f"ApiRequestsPerMinute{scope}",
        "quota_limit_value": str(round(per_second * 60)),
        "quota_location": location,
    }


def bucket_floor(requests: int, rate: float, quota: float, burst: float) -> float:
    """No client can do better: the ceiling, and the quota once its burst is spent."""
    return max(requests / rate, (requests - burst) / quota)


def all_ok(result: Result) -> bool:
    return all(a.ok for a in result.answers)


def feed_marks(pacer: KeyPacer, start: float, rate: float, pattern: str) -> float:
    """Answers sent ``1/rate`` apart: ``A`` accepted, ``R`` refused, in send order."""
    now = start
    for mark in pattern:
        pacer.sent(now)
        pacer.on_answer(now + 0.01, throttled=mark == "R", sent_at=now)
        now += 1.0 / rate
    return now
