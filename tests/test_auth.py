"""Auth with real google-auth credentials: a generated service-account key, a loopback token
endpoint, one refresh shared by all workers, refresh ahead of expiry, clear errors; impersonation
through a loopback IAM Credentials endpoint; who acts, for the prompt and the report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from click.testing import CliRunner
from google.oauth2 import service_account

from bulkcancel._auth import (
    REFRESH_AHEAD,
    anonymous_source,
    credentials_source,
    default_source,
    describe,
    describe_credentials,
    impersonated_source,
    static_token_source,
)
from bulkcancel._errors import ConfigError, CredentialsError
from bulkcancel.cli import cli
from tests._e2e import service_account_key


@dataclass
class TokenServer:
    url: str
    requests: int = 0
    fail: bool = False
    expires_in: int = 3600


@pytest.fixture
async def token_server() -> AsyncIterator[TokenServer]:
    state = TokenServer("")

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        state.requests += 1
        if state.fail:  # a revoked key: google-auth does not retry a 400
            return web.json_response({"error": "invalid_grant"}, status=400)
        await anyio.sleep(0.05)  # long enough for concurrent callers to pile up
        return web.json_response(
            {
                "access_token": f"tok-{state.requests}",
                "expires_in": state.expires_in,
                "token_type": "Bearer",
            }
        )

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/token"
    yield state
    await runner.cleanup()


PRIVATE_MARKER = "BEGIN PRIVATE KEY"


def credentials(path: Path) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call,no-any-return]
        str(path), scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )


async def test_fifty_workers_share_one_refresh(tmp_path: Path, token_server: TokenServer) -> None:
    source = credentials_source(credentials(service_account_key(tmp_path, token_server.url)))
    assert source.sends_credentials
    results: list[str] = []

    async def worker() -> None:
        headers = await source.headers()
        results.append(headers["authorization"])

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(worker)
    assert token_server.requests == 1
    assert results == ["Bearer tok-1"] * 50


async def test_refreshes_ahead_of_expiry(tmp_path: Path, token_server: TokenServer) -> None:
    now = [0.0]
    creds = credentials(service_account_key(tmp_path, token_server.url))
    source = credentials_source(creds, clock=lambda: now[0])
    import time

    now[0] = time.time()
    assert (await source.headers())["authorization"] == "Bearer tok-1"
    assert creds.expiry is not None
    expiry = creds.expiry.timestamp() if creds.expiry.tzinfo else _utc(creds.expiry)
    now[0] = expiry - REFRESH_AHEAD - 5  # still comfortably valid: no refresh
    assert (await source.headers())["authorization"] == "Bearer tok-1"
    assert token_server.requests == 1
    now[0] = expiry - REFRESH_AHEAD + 5  # inside the window, before expiry: refresh now
    assert (await source.headers())["authorization"] == "Bearer tok-2"
    assert token_server.requests == 2


def _utc(naive: object) -> float:
    import datetime as dt

    assert isinstance(naive, dt.datetime)
    return naive.replace(tzinfo=dt.UTC).timestamp()


async def test_a_401_wave_forces_exactly_one_refresh(
    tmp_path: Path, token_server: TokenServer
) -> None:
    source = credentials_source(credentials(service_account_key(tmp_path, token_server.url)))
    stale = await source.headers()
    answers: list[bool] = []

    async def worker() -> None:
        answers.append(await source.invalidate(stale))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(worker)
    assert answers == [True] * 20
    assert token_server.requests == 2  # the first fetch, then one refresh for all twenty
    assert (await source.headers())["authorization"] == "Bearer tok-2"


async def test_failing_refresh_keeps_a_valid_token_and_explains_otherwise(
    tmp_path: Path, token_server: TokenServer
) -> None:
    path = service_account_key(tmp_path, token_server.url)
    now = [0.0]
    import time

    source = credentials_source(credentials(path), clock=lambda: now[0])
    now[0] = time.time()
    await source.headers()
    token_server.fail = True
    now[0] += 3600 - REFRESH_AHEAD + 10  # time to refresh ahead, but the token still works
    assert (await source.headers())["authorization"] == "Bearer tok-1"

    fresh = credentials_source(credentials(path))
    with pytest.raises(CredentialsError) as caught:
        await fresh.headers()
    message = str(caught.value)
    assert "refresh" in message
    assert PRIVATE_MARKER not in message
    assert "tok-" not in message


async def test_quota_project_static_and_anonymous_sources() -> None:
    source = static_token_source("ya29.secret-value", "billing-project")
    headers = await source.headers()
    assert headers == {
        "authorization": "Bearer ya29.secret-value",
        "x-goog-user-project": "billing-project",
    }
    assert await source.invalidate(headers) is False
    assert "secret" not in repr(source)
    for bad in ("", "  ", "a\nb", "Bearer ya29.x"):
        with pytest.raises(CredentialsError):
            static_token_source(bad)
    anonymous = anonymous_source()
    assert not anonymous.sends_credentials
    assert await anonymous.headers() == {}
    assert await anonymous_source("q").headers() == {"x-goog-user-project": "q"}


async def test_quota_project_on_google_credentials(
    tmp_path: Path, token_server: TokenServer
) -> None:
    source = credentials_source(
        credentials(service_account_key(tmp_path, token_server.url)), "billing"
    )
    headers = await source.headers()
    assert headers["x-goog-user-project"] == "billing"
    assert "tok-1" not in repr(source)


@pytest.fixture
def no_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # google-auth reads NO_GCE_CHECK once, at import: set what it read, so no metadata probe.
    from google.auth.compute_engine import _metadata

    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("BULKCANCEL_ACCESS_TOKEN", raising=False)
    return env


async def test_no_credentials_anywhere_says_how_to_provide_them(
    no_ambient_credentials: dict[str, str],
) -> None:
    with pytest.raises(CredentialsError) as caught:
        await default_source()
    message = str(caught.value)
    assert "gcloud auth application-default login" in message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message


async def test_application_default_credentials_from_a_service_account_key(
    tmp_path: Path,
    token_server: TokenServer,
    no_ambient_credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "GOOGLE_APPLICATION_CREDENTIALS", str(service_account_key(tmp_path, token_server.url))
    )
    source = await default_source()
    assert (await source.headers())["authorization"] == "Bearer tok-1"


def test_cli_without_credentials_exits_4_with_instructions(
    no_ambient_credentials: dict[str, str],
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "cancel",
            "projects/p/locations/l/operations/o",
            "--yes",
            "--endpoint",
            "http://127.0.0.1:9",
        ],
        env=no_ambient_credentials,
        catch_exceptions=False,
    )
    assert result.exit_code == 4
    assert "gcloud auth application-default login" in result.output
    assert "Traceback" not in result.output


SA_EMAIL = "bulkcancel-test@test-project.iam.gserviceaccount.com"
TARGET = "canceller@prod-project.iam.gserviceaccount.com"


@dataclass
class IamServer:
    url: str
    calls: list[dict[str, object]]
    status: int = 200


@pytest.fixture
async def iam_server() -> AsyncIterator[IamServer]:
    """IAM Credentials ``generateAccessToken`` on loopback: it checks the caller's token and
    answers with a token for the service account named in the path."""
    state = IamServer("", [])

    async def generate(request: web.Request) -> web.Response:
        body = await request.json()
        state.calls.append(
            {
                "principal": request.match_info["principal"],
                "authorization": request.headers.get("authorization"),
                "body": body,
            }
        )
        if state.status != 200:
            return web.json_response(
                {
                    "error": {
                        "code": 403,
                        "message": "Permission 'iam.serviceAccounts.getAccessToken' denied",
                        "status": "PERMISSION_DENIED",
                    }
                },
                status=state.status,
            )
        return web.json_response(
            {"accessToken": f"imp-{len(state.calls)}", "expireTime": "2099-01-01T00:00:00Z"}
        )

    app = web.Application()
    app.router.add_post("/v1/projects/-/serviceAccounts/{principal}:generateAccessToken", generate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


async def test_impersonation_exchanges_the_source_token_at_the_iam_endpoint(
    tmp_path: Path, token_server: TokenServer, iam_server: IamServer
) -> None:
    source = credentials(service_account_key(tmp_path, token_server.url))
    tokens = await impersonated_source(TARGET, "billing", source, iam_endpoint=iam_server.url)
    headers = await tokens.headers()
    assert headers == {"authorization": "Bearer imp-1", "x-goog-user-project": "billing"}
    assert token_server.requests == 1  # the key was exchanged for the caller's token once
    (call,) = iam_server.calls
    assert call["principal"] == TARGET
    assert call["authorization"] == "Bearer tok-1"  # the caller's token, never the target's
    body = call["body"]
    assert isinstance(body, dict)
    assert body["scope"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert body["lifetime"] == "3600s"
    assert describe(tokens) == f"{TARGET} (impersonated by {SA_EMAIL})"
    assert "imp-1" not in repr(tokens)


async def test_impersonation_through_a_delegation_chain(
    tmp_path: Path, token_server: TokenServer, iam_server: IamServer
) -> None:
    middle = "hop@mid-project.iam.gserviceaccount.com"
    source = credentials(service_account_key(tmp_path, token_server.url))
    tokens = await impersonated_source(
        f"{middle}, {TARGET}", source_credentials=source, iam_endpoint=iam_server.url
    )
    assert (await tokens.headers())["authorization"] == "Bearer imp-1"
    (call,) = iam_server.calls
    assert call["principal"] == TARGET
    body = call["body"]
    assert isinstance(body, dict)
    assert body["delegates"] == [middle]


async def test_impersonation_denied_says_what_is_missing(
    tmp_path: Path, token_server: TokenServer, iam_server: IamServer
) -> None:
    iam_server.status = 403
    source = credentials(service_account_key(tmp_path, token_server.url))
    tokens = await impersonated_source(
        TARGET, source_credentials=source, iam_endpoint=iam_server.url
    )
    with pytest.raises(CredentialsError) as caught:
        await tokens.headers()
    message = str(caught.value)
    assert "roles/iam.serviceAccountTokenCreator" in message
    assert "tok-1" not in message
    assert PRIVATE_MARKER not in message


@pytest.mark.parametrize("bad", ["", "not-an-email", "a@b/../c", "x@y, ", "a b@c"])
async def test_impersonation_refuses_what_is_not_an_email(bad: str) -> None:
    with pytest.raises(ConfigError):
        await impersonated_source(bad, source_credentials=object())  # type: ignore[arg-type]


async def test_impersonation_finds_application_default_source_credentials(
    tmp_path: Path,
    token_server: TokenServer,
    iam_server: IamServer,
    no_ambient_credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "GOOGLE_APPLICATION_CREDENTIALS", str(service_account_key(tmp_path, token_server.url))
    )
    tokens = await impersonated_source(TARGET, iam_endpoint=iam_server.url)
    assert (await tokens.headers())["authorization"] == "Bearer imp-1"
    assert iam_server.calls[0]["authorization"] == "Bearer tok-1"


async def test_identity_names_who_acts_and_never_a_secret(tmp_path: Path) -> None:
    assert describe(anonymous_source()) == "anonymous"
    assert describe(static_token_source("ya29.secret")) == "access token"
    assert describe(object()) == "custom token source"
    sa = credentials(service_account_key(tmp_path, "http://127.0.0.1:9/token"))
    assert describe(credentials_source(sa)) == SA_EMAIL

    from google.auth import compute_engine
    from google.oauth2 import credentials as user_credentials

    user = user_credentials.Credentials(token=None, account="ada@example.com")  # type: ignore[no-untyped-call]
    assert describe_credentials(user) == "ada@example.com"
    anonymous_user = user_credentials.Credentials(token="ya29.user-secret")  # type: ignore[no-untyped-call]
    assert describe_credentials(anonymous_user) == "user credentials"
    metadata = compute_engine.Credentials()  # type: ignore[no-untyped-call]
    assert describe_credentials(metadata) == "the attached service account (metadata server)"
