"""Shared test helpers: an engine wired to the in-memory Operations fake, on virtual time."""

from __future__ import annotations

import asyncio
import functools
import random
import selectors
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio

from bulkcancel._client import OperationsClient
from bulkcancel._engine import Engine, EngineOptions
from bulkcancel._limits import RateGovernor
from bulkcancel._models import OperationResult, Target
from bulkcancel._retry import Backoff
from bulkcancel._transport import CallableTransport, RawResponse, Transport
from bulkcancel.testing import MemoryOperations

PARENT = "projects/p/locations/l"
_T = TypeVar("_T")


def op(i: int, parent: str = PARENT) -> str:
    return f"{parent}/operations/op-{i:05d}"


class NoAuth:
    sends_credentials = False

    async def headers(self) -> Mapping[str, str]:
        return {}

    async def invalidate(self, used: Mapping[str, str]) -> bool:
        return False


def make_client(
    mem: MemoryOperations | None = None,
    *,
    transport: Transport | None = None,
    concurrency: int = 8,
    rate: float = 100_000.0,
    attempts: int = 4,
    throttle_budget: float = 120.0,
) -> OperationsClient:
    """A client on the running loop's clock (virtual under ``run_virtual``)."""
    if transport is None:
        assert mem is not None
        transport = mem.transport
    clock = asyncio.get_running_loop().time
    return OperationsClient(
        transport,
        endpoint="http://mem.invalid",
        api_version="v1",
        tokens=NoAuth(),
        governor=RateGovernor(
            rate, clock=clock, sleep=anyio.sleep, throttle_budget=throttle_budget
        ),
        concurrency=concurrency,
        backoff=Backoff(base=0.0005, cap=0.002, max_attempts=attempts),
        rng=random.Random(0),
        sleep=anyio.sleep,
    )


FAST = EngineOptions(concurrency=8, deadline=0.3, poll_initial=0.005, poll_max=0.02, sweep_gap=0.01)


class Recorder:
    """Collects results and asserts nothing is reported twice."""

    def __init__(self) -> None:
        self.results: dict[str, OperationResult] = {}

    async def __call__(self, result: OperationResult) -> None:
        assert result.name not in self.results, f"{result.name} reported twice"
        self.results[result.name] = result

    def outcomes(self) -> dict[str, str]:
        return {name: r.outcome.value for name, r in self.results.items()}


def make_engine(client: OperationsClient, options: EngineOptions = FAST, **kw: Any) -> Engine:
    """An engine on the running loop's clock."""
    return Engine(client, options, clock=asyncio.get_running_loop().time, **kw)


async def run_engine(
    mem: MemoryOperations,
    targets: Iterable[Target | str],
    options: EngineOptions = FAST,
    **engine_kw: Any,
) -> tuple[Engine, Recorder]:
    client = make_client(mem, concurrency=options.concurrency)
    engine = make_engine(client, options, **engine_kw)
    recorder = Recorder()
    items = [t if isinstance(t, Target) else Target(t) for t in targets]
    await engine.run(items, recorder)
    return engine, recorder


class _VirtualSelector(selectors.DefaultSelector):
    """Never blocks: when the loop would wait for its next timer, time jumps there instead."""

    loop: VirtualLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: nothing can ever happen (no timer, no I/O)")
        # At least ``least``: a wait shorter than a float can add to ``now`` (aiolimiter
        # computes some), or a timer due "now" by float rounding, would otherwise leave time
        # standing still, and the loop spinning.
        self.loop.now += max(timeout, self.loop.least)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time: ``sleep(60)`` returns at once, 60 virtual seconds
    later; when nothing is ready, time jumps by the wait, and by ``least`` seconds at least.
    Only for work without real I/O over the network (the in-memory fake, in-test servers);
    aiolimiter's tests patch ``loop.time`` the same way. (The pacing simulations,
    ``tests/_pacing.py``, jump a nanosecond at least: their figures were measured so.)"""

    def __init__(self, least: float = 1e-6) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0
        self.least = least

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[], Awaitable[_T]]) -> _T:
    """``anyio.run(main)`` on a ``VirtualLoop``."""
    return anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualLoop})


def now() -> float:
    return asyncio.get_running_loop().time()


def virtual(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on virtual time (parametrize arguments pass through)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        run_virtual(lambda: test(*args, **kwargs))

    return wrapper


def capped(mem: MemoryOperations, cap: int) -> Transport:
    """``mem``'s transport with list pages capped at ``cap`` (what AIP-158 lets servers do)."""

    async def handle(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        parts = urlsplit(url)
        if parts.path.endswith("/operations"):
            query = dict(parse_qsl(parts.query))
            query["pageSize"] = str(min(int(query.get("pageSize") or cap), cap))
            url = urlunsplit(parts._replace(query=urlencode(query)))
        return await mem.transport.request(method, url, headers, body)

    return CallableTransport(handle)
