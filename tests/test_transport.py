"""The aiohttp transport against real loopback servers: bounded bodies whatever their encoding,
and a TLS certificate that does not verify is final, with one clear line."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import ssl
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bulkcancel._transport import ACCEPT_ENCODING, AiohttpTransport, BoundedBody, TransportError
from bulkcancel.testing._hostile import HostileServer, Hostility, gzip_bomb

BODY = b'{"name": "projects/p/locations/l/operations/o", "done": true}'


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(aiohttp_server: AiohttpServer, handler: Handler) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def fetch(url: str, max_body: int = 1 << 20) -> tuple[bytes, bool]:
    async with AiohttpTransport(max_body=max_body) as transport:
        raw = await transport.request("GET", url + "/v1/x", {}, None)
    return raw.body, raw.oversized


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, no zlib header
        ("", lambda b: b),
        ("identity", lambda b: b),
    ],
    ids=["gzip", "deflate", "raw-deflate", "none", "identity"],
)
async def test_encoded_bodies_are_decoded(
    aiohttp_server: AiohttpServer, encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        headers = {"Content-Encoding": encoding} if encoding else {}
        return web.Response(body=encode(BODY), headers=headers)

    body, oversized = await fetch(await serve(aiohttp_server, handler))
    assert (body, oversized) == (BODY, False)
    assert seen == [ACCEPT_ENCODING]


async def test_an_undeclared_encoding_is_passed_on_undecoded(
    aiohttp_server: AiohttpServer,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"\x8b\x02\x80binary", headers={"Content-Encoding": "br"})

    assert await fetch(await serve(aiohttp_server, handler)) == (b"\x8b\x02\x80binary", False)


async def test_a_corrupt_gzip_body_is_a_transport_error(aiohttp_server: AiohttpServer) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(BODY)[:-12], headers={"Content-Encoding": "gzip"})

    with pytest.raises(TransportError, match="ended inside its gzip stream") as caught:
        await fetch(await serve(aiohttp_server, handler))
    assert caught.value.retryable


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_gzip_bomb_is_oversized_not_inflated(declared: bool) -> None:
    server = HostileServer(
        hostility=Hostility(gzip_bomb=True, bomb_size=64 << 20, bomb_declared=declared)
    )
    async with server.serve() as url:
        assert await fetch(url, max_body=4 << 20) == (b"", True)


def test_bounded_body_holds_at_most_the_cap_per_step() -> None:
    bomb = gzip_bomb(16 << 20)
    reader = BoundedBody(1000, "gzip")
    assert not reader.feed(bomb)  # 16 MiB of zeros stop one byte past the cap
    reader = BoundedBody(1 << 30, "gzip")
    assert reader.feed(bomb)
    assert len(reader.finish()) == 16 << 20
    wire = BoundedBody(10, "")
    assert wire.feed(b"0123456789")
    assert not wire.feed(b"x")  # the bytes on the wire are capped too


async def test_declared_length_over_the_cap_is_refused_unread(
    aiohttp_server: AiohttpServer,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b" " * 5000)

    assert await fetch(await serve(aiohttp_server, handler), max_body=4096) == (b"", True)


# ---- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that nothing trusts, generated for this test run."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bulkcancel test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_an_untrusted_certificate_is_final_with_one_clear_line(
    self_signed: tuple[Path, Path],
) -> None:
    server = HostileServer()
    async with server.serve(server_context(*self_signed)) as url, AiohttpTransport() as t:
        with pytest.raises(TransportError) as caught:
            await t.request("GET", f"{url}/v1/{server.names()[0]}", {}, None)
    error = caught.value
    assert not error.retryable
    message = str(error)
    assert message.startswith("TLS certificate verification failed for 127.0.0.1:")
    assert "self-signed certificate" in message or "self signed" in message
    assert "\n" not in message
    assert not any(word in message.lower() for word in ("disable", "insecure", "--no-"))


async def test_the_same_server_answers_when_its_certificate_is_trusted(
    self_signed: tuple[Path, Path],
) -> None:
    server = HostileServer()
    trusting = ssl.create_default_context(cafile=str(self_signed[0]))
    async with (
        server.serve(server_context(*self_signed)) as url,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as session,
        AiohttpTransport(session=session) as transport,
    ):
        raw = await transport.request("GET", f"{url}/v1/{server.names()[0]}", {}, None)
    assert raw.status == 200
    assert server.requests[0].raw_path == f"/v1/{server.names()[0]}"
