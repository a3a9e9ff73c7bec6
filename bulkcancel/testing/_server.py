"""The fake Operations API over real HTTP: aiohttp.web on loopback, answering from the model.

Everything a test may want to assert on is kept by the model: every request in
:attr:`FakeOperationsServer.log` (method, raw path, query, kind, whether a token came, the
User-Agent, status), and per operation how many cancels were accepted. The server adds only
what needs a socket: latency, connection resets, and a control route for benchmarks.

Example::

    fake = FakeOperationsServer()
    fake.add_operation("projects/p/locations/l/operations/op-1", Behavior.CANCELS)
    fake.personality("bucket-small,429-retryinfo", rate=50)
    async with fake.serve() as endpoint:       # "http://127.0.0.1:PORT"
        ...
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from bulkcancel.testing._model import Behavior
from bulkcancel.testing._personalities import jitter_factor
from bulkcancel.testing._world import OperationsModel

__all__ = ["STATS_PATH", "FakeOperationsServer", "populate", "serve_forever"]

#: ``GET`` answers :meth:`FakeOperationsServer.stats`; ``DELETE`` also clears the log.
STATS_PATH = "/_fake/stats"


class FakeOperationsServer(OperationsModel):
    """The model (see :class:`~bulkcancel.testing._model.OperationsModel` for every knob) and
    its aiohttp.web application."""

    def __init__(
        self,
        *,
        api_version: str = "v1",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        default_page_size: int = 50,
        max_page_size: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__(
            api_version=api_version,
            clock=clock,
            wall=wall,
            default_page_size=default_page_size,
            max_page_size=max_page_size,
            seed=seed,
        )
        #: seconds added before every answer
        self.latency: float = 0.0
        #: 0: every answer waits :attr:`latency` after its request reached the model. Above 0,
        #: a network's jitter: half the latency before the request reaches the model (its
        #: quota) and half after, each times a log-normal factor of this sigma (mean 1), so
        #: requests reach the quota, and answers the client, out of the order they were sent
        self.latency_jitter: float = 0.0
        self._spread = random.Random(seed)  # noqa: S311 - a test double, not security
        self.app = web.Application(client_max_size=1024**2)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on loopback; yields the endpoint URL (``http://127.0.0.1:PORT``)."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            bound = runner.addresses[0][1] if runner.addresses else port
            shown = f"[{host}]" if ":" in host else host
            yield f"http://{shown}:{bound}"
        finally:
            await runner.cleanup()

    def ways(self) -> tuple[float, float]:
        """Seconds one request waits before it reaches the model, and after (see
        :attr:`latency_jitter`)."""
        sigma = self.latency_jitter
        if not self.latency or sigma <= 0:
            return 0.0, self.latency
        half = self.latency / 2
        return half * jitter_factor(self._spread, sigma), half * jitter_factor(self._spread, sigma)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        if raw.partition("?")[0] == STATS_PATH:  # the fake's control route: neither logged
            ceiling = request.query.get("ceiling")  # nor counted; ?ceiling=R adds the oracle
            try:
                stats = self.stats(float(ceiling) if ceiling else None)
            except ValueError:
                return web.json_response({"error": "ceiling must be a positive number"}, status=400)
            if request.method == "DELETE":
                self.log.clear()
            return web.json_response(stats)
        up, down = self.ways()
        if up:
            await asyncio.sleep(up)
        at = self.clock()
        if down:
            await asyncio.sleep(down)
        reply = self.handle(request.method, raw, request.headers, at=at)
        if reply.status == 0:  # a connection reset: close the socket without an answer
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never reaches the client: the socket is gone
        content_type, _, charset = reply.content_type.partition("; charset=")
        return web.Response(
            status=reply.status,
            body=reply.body,
            content_type=content_type,
            charset=charset or None,
            headers=reply.headers,
        )


def populate(
    server: OperationsModel,
    parent: str,
    count: int,
    behavior: Behavior | str = Behavior.CANCELS,
    *,
    cancel_delay: float = 0.0,
    prefix: str = "op-",
) -> list[str]:
    """Add ``count`` operations under ``parent``; returns their names."""
    names = [f"{parent}/operations/{prefix}{i:06d}" for i in range(count)]
    for name in names:
        server.add_operation(name, Behavior(behavior), cancel_delay=cancel_delay)
    return names


async def serve_forever(
    server: FakeOperationsServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled (``bulkcancel fake-server``)."""
    import anyio

    async with server.serve(host, port) as url:
        if on_ready is not None:
            on_ready(url)
        await anyio.sleep_forever()
