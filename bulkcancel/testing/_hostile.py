"""A hostile Operations server: real HTTP on loopback that misbehaves on purpose.

Separate from the well-behaved fake (``_fake.py``): this one exists to attack the client. Each
misbehaviour is one switch of ``Hostility``; everything left off answers like a plain, honest
Cloud Deploy. Every request is logged exactly as it arrived (raw path and query, undecoded), so
a test can prove that nothing was ever sent outside its targets.
"""

from __future__ import annotations

import functools
import json
import ssl
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: Location names a hostile server hands a ``locations/-`` fan-out: path traversal, a query
#: smuggled in, a fragment, percent-encoded dots, another project, the wildcard itself.
HOSTILE_LOCATIONS: tuple[object, ...] = (
    "{project}/locations/../../../x/y",
    "{project}/locations/a?pageSize=1&filter=evil",
    "{project}/locations/b/%2e%2e/c",
    "{project}/locations/c#frag",
    "{project}/locations/-",
    "projects/victim/locations/us-central1",
    "{project}/locations/d/operations/x",
    None,
    17,
)


def foreign_entries(parent: str) -> list[object]:
    """Listing entries that are not this parent's operations to cancel."""
    return [
        {"name": "projects/victim/locations/us-central1/operations/v-1"},
        {"name": f"{parent}-evil/operations/v-2"},
        {"name": f"{parent}/operations/v-3/operations/nested"},
        {"name": f"{parent}/operations/%2e%2e"},
        {"metadata": {"verb": "deploy"}},  # no name at all
        {"name": ""},
        {"name": 42},
        {"name": True},
        "not an object",
    ]


@dataclass(slots=True)
class Hostility:
    """Which misbehaviours are on. All off: an honest server."""

    #: Operation listings add the entries of ``foreign_entries`` after the real ones.
    foreign_names: bool = False
    #: The locations listing returns ``HOSTILE_LOCATIONS`` beside one good location.
    hostile_locations: bool = False
    #: Every answer is a gzip body of ``bomb_size`` zeros (about 1/1000 of that on the wire).
    gzip_bomb: bool = False
    bomb_size: int = 1 << 30
    #: Send the bomb with its Content-Length (True) or chunked (False).
    bomb_declared: bool = True
    #: Listings never end: every page is ``page_size`` fresh names and a fresh token.
    endless_listing: bool = False
    #: Listings never end and never list anything: empty pages with fresh tokens.
    endless_empty_pages: bool = False
    #: Error answers quote the request's Authorization header in their message.
    echo_authorization: bool = False
    #: Every GET of an operation answers ``{"name": name, **operation_body}``.
    operation_body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    method: str
    raw_path: str  # path and query exactly as received


@dataclass(slots=True)
class HostileServer:
    """Serves ``count`` operations under each of ``parents`` and misbehaves as told."""

    parents: tuple[str, ...] = ("projects/p/locations/l",)
    count: int = 3
    hostility: Hostility = field(default_factory=Hostility)
    page_size: int = 500
    api_version: str = "v1"
    requests: list[LoggedRequest] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)

    def names(self, parent: str | None = None) -> list[str]:
        parents = self.parents if parent is None else (parent,)
        return [f"{p}/operations/op-{i}" for p in parents for i in range(self.count)]

    @asynccontextmanager
    async def serve(self, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
        """Serve on 127.0.0.1; yields the endpoint URL (https when given an SSL context)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
            await site.start()
            port = runner.addresses[0][1]
            yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        finally:
            await runner.cleanup()

    def paths_outside(self, allowed: tuple[str, ...]) -> list[str]:
        """Logged requests whose path is not under ``/{version}/{one of allowed}``."""
        prefixes = tuple(f"/{self.api_version}/{a}" for a in allowed)
        return [r.raw_path for r in self.requests if not r.raw_path.startswith(prefixes)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(LoggedRequest(request.method, request.raw_path))
        hostility = self.hostility
        if hostility.gzip_bomb:
            return await self._bomb(request)
        path, _, query = request.raw_path.partition("?")
        rest = path.removeprefix(f"/{self.api_version}/")
        if request.method == "POST" and rest.endswith(":cancel"):
            return self._cancel(request, rest.removesuffix(":cancel"))
        if request.method != "GET":
            return _error(405, "INVALID_ARGUMENT", "method not allowed")
        if rest.endswith("/locations"):
            return self._locations(rest.removesuffix("/locations"))
        if rest.endswith("/operations"):
            return self._list(rest.removesuffix("/operations"), _token(query))
        return self._get(rest)

    def _cancel(self, request: web.Request, name: str) -> web.Response:
        if self.hostility.echo_authorization:
            said = request.headers.get("Authorization", "")
            return _error(403, "PERMISSION_DENIED", f"caller with {said} may not cancel {name}")
        if name not in self.names():
            return _error(404, "NOT_FOUND", f"operation {name} not found")
        self.cancelled.add(name)
        return web.json_response({})

    def _get(self, name: str) -> web.Response:
        if name not in self.names():
            return _error(404, "NOT_FOUND", f"operation {name} not found")
        if self.hostility.operation_body is not None:
            return web.json_response({"name": name, **self.hostility.operation_body})
        if name in self.cancelled:
            error = {"code": 1, "message": "Operation cancelled by user."}
            return web.json_response({"name": name, "done": True, "error": error})
        return web.json_response({"name": name, "metadata": {"verb": "deploy"}})

    def _list(self, parent: str, token: int) -> web.Response:
        hostility = self.hostility
        if hostility.endless_empty_pages:
            return web.json_response({"operations": [], "nextPageToken": f"t{token + 1}"})
        if hostility.endless_listing:
            start = token * self.page_size
            names = [f"{parent}/operations/endless-{start + i}" for i in range(self.page_size)]
            body = {"operations": [{"name": n} for n in names], "nextPageToken": f"t{token + 1}"}
            return web.json_response(body)
        entries: list[object] = [{"name": n, "metadata": {}} for n in self.names(parent)]
        if hostility.foreign_names:
            entries += foreign_entries(parent)
        return web.json_response({"operations": entries})

    def _locations(self, project: str) -> web.Response:
        good = [{"name": p, "locationId": p.rsplit("/", 1)[1]} for p in self.parents]
        entries: list[object] = [g for g in good if g["name"].startswith(project + "/")]
        if self.hostility.hostile_locations:
            for raw in HOSTILE_LOCATIONS:
                name = raw.format(project=project) if isinstance(raw, str) else raw
                entries.append({"name": name, "locationId": "x"})
            entries.append({"locationId": "nameless"})
        return web.json_response({"locations": entries})

    async def _bomb(self, request: web.Request) -> web.StreamResponse:
        body = gzip_bomb(self.hostility.bomb_size)
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        if self.hostility.bomb_declared:
            return web.Response(body=body, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 65536):
            await response.write(body[start : start + 65536])
        await response.write_eof()
        return response


def _token(query: str) -> int:
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "pageToken" and value.startswith("t") and value[1:].isdigit():
            return int(value[1:])
    return 0


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": status, "status": code, "message": message}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


@functools.lru_cache(maxsize=2)
def gzip_bomb(size: int) -> bytes:
    """A valid gzip stream of ``size`` zero bytes (a multiple of 1 MiB), built without ever
    holding or compressing ``size`` bytes: one fully flushed deflate block of 1 MiB of zeros
    is byte-identical each time, so it is repeated. 1 GiB takes about 1 MB."""
    block = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    blocks = size >> 20
    crc = 0
    for _ in range(blocks):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    stream = first + again * (blocks - 1) + deflate.flush(zlib.Z_FINISH)
    return header + stream + struct.pack("<II", crc, (blocks << 20) & 0xFFFFFFFF)
