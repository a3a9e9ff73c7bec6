"""The seam between the Operations client and HTTP: one small protocol, two implementations.

The client speaks in ``RawResponse`` objects and ``TransportError``; everything about sockets,
pools, timeouts and body caps lives here. Tests and the memory benchmark plug in an in-memory
transport; production uses aiohttp.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from bulkcancel._errors import ConfigError, UnsafeEndpointError

#: Operation JSON is a few KiB; a list page of 500 is well under a MiB. Past this, it is not an
#: answer we can trust, and reading it would let a broken server exhaust our memory. The cap
#: counts the bytes we would hold: the decompressed body, and the bytes on the wire too.
DEFAULT_MAX_BODY = 4 * 1024 * 1024
#: What we ask for, and all we decode ourselves (aiohttp's own decoding is turned off so that
#: no library inflates a body past the cap before we can count it).
ACCEPT_ENCODING = "gzip, deflate"
_READ_CHUNK = 65536


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


class BoundedBody:
    """Collects a response body, decoding gzip/deflate as it streams, never holding more than
    ``limit`` decoded bytes: a 1 MB gzip that inflates to 1 GB stops at the cap.

    ``feed`` returns False once the body is over the cap. A body in an encoding we did not ask
    for (``br``, ``zstd``, stacked encodings) is kept undecoded: it then reads as malformed.
    """

    def __init__(self, limit: int, content_encoding: str = "") -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0  # decoded bytes held
        self._wire = 0  # bytes received
        self._encoding = content_encoding.strip().lower()
        self._inflater: Any = None
        if self._encoding in ("gzip", "x-gzip", "deflate"):
            # 47: a gzip or zlib header, detected; raw deflate is chosen on the first byte.
            self._inflater = zlib.decompressobj(47)

    def feed(self, chunk: bytes) -> bool:
        self._wire += len(chunk)
        if self._wire > self._limit:
            return False
        if self._inflater is None:
            return self._keep(chunk)
        first = self._wire == len(chunk)
        if first and self._encoding == "deflate" and chunk and chunk[0] & 0x0F != 8:
            # "deflate" without its zlib header: raw deflate, seen in the wild.
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        data = chunk
        while data and not self._inflater.eof:
            # max_length: never more than one byte past the cap per step, whatever the ratio.
            try:
                out = self._inflater.decompress(data, self._limit - self._size + 1)
            except zlib.error as exc:
                raise TransportError(f"response body is not valid {self._encoding}: {exc}") from exc
            if not self._keep(out):
                return False
            data = self._inflater.unconsumed_tail
        return True

    def _keep(self, data: bytes) -> bool:
        self._size += len(data)
        if self._size > self._limit:
            self._chunks.clear()
            return False
        if data:
            self._chunks.append(data)
        return True

    def finish(self) -> bytes:
        if self._inflater is not None and self._wire and not self._inflater.eof:
            raise TransportError(f"response body ended inside its {self._encoding} stream")
        return b"".join(self._chunks)


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
        # Decompression is always ours (BoundedBody): aiohttp's would inflate before we count.
        self._per_request: dict[str, Any] = {"auto_decompress": False}
        self._origins: dict[str, URL] = {}
        if session is not None:
            self._per_request["timeout"] = self._timeout

    async def __aenter__(self) -> AiohttpTransport:
        if self._session is None:
            # One limit for all hosts (a per-host limit equal to it could never bind, and
            # aiohttp keeps its books per host on every request when it is set).
            connector = aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300)
            # trust_env=False: proxies from the environment are a user's choice we do not make
            # silently for a tool that carries credentials.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                headers={"Accept-Encoding": ACCEPT_ENCODING},
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

    def _url(self, url: str) -> URL:
        """``url`` as yarl's URL, sent exactly as given (``encoded``: no dot segment is resolved
        and nothing is re-quoted). The origin is parsed once per host and each request's path
        joined to it: parsing every whole URL was a measurable part of a fast run."""
        start = url.find("://")
        slash = url.find("/", start + 3) if start > 0 else -1
        if slash < 0 or "?" in url or "#" in url:
            return URL(url, encoded=True)
        origin = url[:slash]
        base = self._origins.get(origin)
        if base is None:
            base = self._origins[origin] = URL(origin, encoded=True)
        return base.with_path(url[slash:], encoded=True)

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        session = self._session
        if session is None:
            raise RuntimeError("AiohttpTransport used outside 'async with'")
        if self._given is not None:
            # A caller's session may advertise encodings we do not decode (br, zstd).
            headers = {**headers, "Accept-Encoding": ACCEPT_ENCODING}
        try:
            # encoded=True: the path is already exactly what must be sent; yarl must not
            # normalise dot segments or re-quote anything.
            async with session.request(
                method,
                self._url(url),
                headers=headers,
                data=body,
                allow_redirects=False,
                **self._per_request,
            ) as resp:
                status, received = resp.status, resp.headers
                content_type = received.get("Content-Type", "")
                retry_after = received.get("Retry-After")
                # A declared length is the length on the wire (compressed, if it is): past the
                # cap, refused unread; within it, still counted as it is decoded.
                declared = resp.content_length
                if declared is not None and declared > self._max_body:
                    resp.release()
                    return RawResponse(status, b"", content_type, retry_after, oversized=True)
                encoding = received.get("Content-Encoding", "")
                plain = not encoding or encoding.strip().lower() == "identity"
                if declared is not None and plain:
                    # Plain, of a declared length within the cap: what arrives is what we keep,
                    # so one read does (the common answer, and the hot path of a run).
                    return RawResponse(status, await resp.read(), content_type, retry_after)
                reader = BoundedBody(self._max_body, encoding)
                async for chunk in resp.content.iter_chunked(_READ_CHUNK):
                    if not reader.feed(chunk):
                        return RawResponse(status, b"", content_type, retry_after, oversized=True)
                return RawResponse(status, reader.finish(), content_type, retry_after)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TransportError(_certificate_message(exc), retryable=False) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(type(exc).__name__ + (f": {exc}" if str(exc) else "")) from exc


def _certificate_message(exc: aiohttp.ClientConnectorCertificateError) -> str:
    """One line that says what failed and where to look; verification is never turned off."""
    cause = exc.certificate_error
    reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or cause
    return (
        f"TLS certificate verification failed for {exc.host}:{exc.port} ({reason}): "
        "the server's certificate is not trusted; check --endpoint and this machine's CA "
        "certificates"
    )


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
