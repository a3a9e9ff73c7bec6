"""The seam between the Operations client and HTTP: one small protocol, two implementations.

The client speaks in ``RawResponse`` objects and ``TransportError``; everything about sockets,
pools, timeouts and body caps lives here. Tests and the memory benchmark plug in an in-memory
transport; production uses aiohttp.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from bulkcancel._errors import ConfigError, UnsafeEndpointError

#: Operation JSON is a few KiB; a list page of 500 is well under a MiB. Past this, it is not an
#: answer we can trust, and reading it would let a broken server exhaust our memory.
DEFAULT_MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RawResponse:
    """What came back, before any interpretation."""

    status: int
    body: bytes
    content_type: str = ""
    retry_after: str | None = None
    oversized: bool = False


class TransportError(Exception):
    """No HTTP answer: reset, refused, timed out, disconnected.

    ``retryable`` is False for failures another try cannot mend (a TLS certificate that does not
    verify): the client then treats the answer as final.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Transport(Protocol):
    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse: ...

    async def aclose(self) -> None: ...


Handler = Callable[[str, str, Mapping[str, str], bytes | None], Awaitable[RawResponse]]


class CallableTransport:
    """A transport that hands each request to a coroutine function: for tests and benchmarks."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        return await self._handler(method, url, headers, body)

    async def aclose(self) -> None:
        return None


class AiohttpTransport:
    """aiohttp, configured for a bulk run: one session, a pool sized to the concurrency,
    per-request timeouts, redirects never followed, bodies read through a size cap.

    Build it inside the running loop (``async with AiohttpTransport(...)``). When given a session
    it uses it and leaves it open: the caller owns what it created.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = 32,
        timeout: float = 30.0,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._given = session
        self._session = session
        self._concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
        self._max_body = max_body
        # Our session carries the timeout already; a caller's session gets it per request.
        self._per_request: dict[str, Any] = {} if session is None else {"timeout": self._timeout}

    async def __aenter__(self) -> AiohttpTransport:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._concurrency, limit_per_host=self._concurrency, ttl_dns_cache=300
            )
            # trust_env=False: proxies from the environment are a user's choice we do not make
            # silently for a tool that carries credentials.
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=True
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None and self._given is None:
            await self._session.close()
        self._session = None if self._given is None else self._session

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        session = self._session
        if session is None:
            raise RuntimeError("AiohttpTransport used outside 'async with'")
        try:
            # encoded=True: the path is already exactly what must be sent; yarl must not
            # normalise dot segments or re-quote anything.
            async with session.request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                **self._per_request,
            ) as resp:
                content_type = resp.headers.get("Content-Type", "")
                retry_after = resp.headers.get("Retry-After")
                declared = resp.content_length
                if declared is not None:
                    if declared > self._max_body:
                        resp.release()
                        return RawResponse(
                            resp.status, b"", content_type, retry_after, oversized=True
                        )
                    # A declared length within the cap: aiohttp reads exactly that much.
                    return RawResponse(resp.status, await resp.read(), content_type, retry_after)
                chunks: list[bytes] = []  # no length given (chunked): count while reading
                size = 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > self._max_body:
                        return RawResponse(
                            resp.status, b"", content_type, retry_after, oversized=True
                        )
                    chunks.append(chunk)
                return RawResponse(resp.status, b"".join(chunks), content_type, retry_after)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(type(exc).__name__ + (f": {exc}" if str(exc) else "")) from exc


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str, *, sends_credentials: bool) -> str:
    """Validate an endpoint and return it without a trailing slash.

    Credentials travel only over HTTPS, or plain HTTP to a loopback host: refused before any
    connection is made, so a typo can never leak a token.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"endpoint must be an http(s) URL with a host, got {endpoint!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError("endpoint must not carry a query, fragment or user info")
    # A regional template such as https://{location}-aiplatform.googleapis.com is fine: the host
    # is filled per operation, and is a Google host either way.
    if parts.scheme == "http" and sends_credentials and not is_loopback_host(parts.hostname):
        raise UnsafeEndpointError(
            f"refusing to send credentials over plain HTTP to {parts.hostname}: use https, "
            "a loopback host, or --anonymous"
        )
    return endpoint.rstrip("/")
