"""Helpers for end-to-end tests: a scripted fake world, and the CLI run beside it.

The fake server runs in the test's event loop; the CLI runs in a worker thread with its own
loop (it calls ``anyio.run`` itself), exactly as a user's process would talk to a server.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from aiohttp import web
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bulkcancel.cli import cli
from bulkcancel.testing import Behavior, FakeOperationsServer, ParentMode

MALFORMED = [
    "projects/p/locations/l/operations//x",  # empty segment
    "projects/p/locations/l/operations/.",
    "projects/p/locations/l/operations/..",
    "projects/p/locations/../operations/x",
    "projects/p/locations/l/operations/a%2Fb",
    "projects/p/locations/l/operations/a?b=c",
    "projects/p/locations/l/operations/a#frag",
    "projects/p/locations/l/operations/a b",
    "projects/p/locations/l/operations/a\tb",
    "projects\\p/locations/l/operations/x",
    "https://evil.example/v1/projects/p/locations/l/operations/x",
    "//evil.example/projects/p/locations/l/operations/x",
    "/projects/p/locations/l/operations/x",
    "projects/p/locations/l/operations/",
    "projects/p/locations/l",
    "projects/p/locations/l/operations/x:cancel",
    "projects/p/locations/l/operations/x/../../../../admin",
    "projects/p/locations/l/operations/ünïcode",
    "operations/x",  # the wrong shape for Cloud Deploy
    "projects/p/locations/l/operations/x\x00y",
]


@dataclass
class World:
    server: FakeOperationsServer
    lines: list[str]  # the names file, as written
    expected: dict[str, str]  # stripped line -> outcome (each distinct line once)


def mixed_world(seed: int = 0, *, per_kind: int = 34) -> World:
    """About 300 lines of every kind: each Behavior, unsupported and unrouted parents, a denied
    project, missing names, malformed lines, duplicates, blank lines and comments."""
    rng = random.Random(seed)
    server = FakeOperationsServer()
    names: list[str] = []
    for b_index, behavior in enumerate(Behavior):
        for i in range(per_kind):
            loc = ("us-central1", "europe-west1")[i % 2]
            name = f"projects/shop/locations/{loc}/operations/{behavior.value}-{i:03d}"
            server.add_operation(name, behavior, cancel_delay=rng.uniform(0, 0.3) * (b_index < 3))
            names.append(name)
    for parent, mode in (
        ("projects/legacy/locations/us-east1", ParentMode.UNSUPPORTED),
        ("projects/workflows/locations/us-east1", ParentMode.UNROUTED),
        ("projects/locked/locations/us-central1", ParentMode.DENIED),
    ):
        server.set_mode(parent, mode)
        for i in range(15):
            name = f"{parent}/operations/op-{i:03d}"
            server.add_operation(name, Behavior.CANCELS)
            names.append(name)
    expected = server.expected()
    for i in range(15):
        name = f"projects/shop/locations/us-central1/operations/gone-{i:03d}"
        names.append(name)
        expected[name] = "not_found"
    for line in MALFORMED:
        expected[line.strip()] = "invalid"
    lines = names + MALFORMED + rng.sample(names, 20) + ["", "# a comment", "   "]
    rng.shuffle(lines)
    return World(server, lines, expected)


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


async def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> CliResult:
    """Run ``bulkcancel ARGS`` in a worker thread; the fake keeps serving in this loop."""

    def invoke() -> CliResult:
        result = CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return await anyio.to_thread.run_sync(invoke)


def load_report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for record in report["operations"]:
        assert record["name"] not in result, f"{record['name']} reported twice"
        result[record["name"]] = record["outcome"]
    return result


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class TokenEndpoint:
    """A loopback OAuth token endpoint for google-auth service-account credentials."""

    url: str = ""
    requests: int = 0
    #: answer this many requests with a token, then refuse every one (None: never refuse)
    succeed: int | None = None
    expires_in: int = 3600


@asynccontextmanager
async def token_endpoint(
    *, succeed: int | None = None, expires_in: int = 3600
) -> AsyncIterator[TokenEndpoint]:
    state = TokenEndpoint(succeed=succeed, expires_in=expires_in)

    async def token(request: web.Request) -> web.Response:
        await request.post()
        state.requests += 1
        if state.succeed is not None and state.requests > state.succeed:
            # A revoked key: google-auth does not retry a 400.
            return web.json_response({"error": "invalid_grant"}, status=400)
        body = {
            "access_token": f"tok-{state.requests}",
            "expires_in": state.expires_in,
            "token_type": "Bearer",
        }
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/token"
        yield state
    finally:
        await runner.cleanup()


def service_account_key(directory: Path, token_uri: str) -> Path:
    """A freshly generated service-account key file whose tokens come from ``token_uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "bulkcancel-test@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path = directory / "sa.json"
    path.write_text(json.dumps(info))
    return path


def process_env(**extra: str) -> dict[str, str]:
    """The environment for a bulkcancel child process: this checkout importable, no job-runner
    variables or BULKCANCEL_* defaults leaking in from the test runner's own environment."""
    skip = ("CLOUD_RUN_", "JOB_", "BULKCANCEL_", "COLUMNS", "LINES", "NO_COLOR", "TERM")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def bulkcancel_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulkcancel", *args]
