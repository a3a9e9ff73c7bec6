"""Where the ``Authorization`` header comes from.

Three sources, one small protocol (:class:`TokenSource`):

* :func:`anonymous_source` sends nothing (emulators, the built-in fake);
* :func:`static_token_source` sends a token the user gave (``--token``); it cannot be refreshed;
* :func:`credentials_source` wraps any ``google.auth`` credentials (service account, user ADC,
  impersonated, metadata server), and :func:`default_source` finds them the way ``gcloud`` and
  the client libraries do (Application Default Credentials);
* :func:`impersonated_source` acts as a service account through the IAM Credentials API, as
  ``gcloud --impersonate-service-account`` does.

Every source here names who acts (an ``identity`` property; :func:`describe` reads it from any
source) for the prompt and the report: the service-account or user email when google-auth can
tell, otherwise what kind of credential it is. ``identity`` is not part of the protocol, so a
test's or a user's own token source need not have one.

google-auth is synchronous: token refreshes run in a worker thread, never on the event loop.
All workers share one refresh: whoever finds the token stale takes the lock and refreshes, the
others wait on the lock and then find it fresh. Tokens are refreshed *ahead* of expiry so a
long run does not meet a wave of 401s at the hour; a 401 anyway (revoked, clock skew) makes the
client call :meth:`TokenSource.invalidate`, which forces one refresh for everybody.

Tokens are secrets: they live only in the header mapping handed to the transport, and no
``repr``, log line or error message here contains one.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.to_thread

from bulkcancel._errors import ConfigError, CredentialsError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "REFRESH_AHEAD",
    "TokenSource",
    "anonymous_source",
    "credentials_source",
    "default_source",
    "describe",
    "describe_credentials",
    "impersonated_source",
    "static_token_source",
]

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: Refresh this long before the token's expiry (google-auth itself calls a token expired
#: 3 min 45 s early; a little more keeps the refresh off the critical path of most requests).
REFRESH_AHEAD = 300.0

_IMPERSONATION_HINT = (
    "\n(impersonation needs roles/iam.serviceAccountTokenCreator on the service account for the"
    " caller, and the IAM Service Account Credentials API enabled)"
)
_HOW_TO = (
    "No Google credentials were found. Provide them one of these ways:\n"
    "  * gcloud auth application-default login          (your user account)\n"
    "  * export GOOGLE_APPLICATION_CREDENTIALS=key.json  (a service-account key file)\n"
    "  * run on Google Cloud (Cloud Run, GKE, GCE) with a service account attached\n"
    "  * --token TOKEN or BULKCANCEL_ACCESS_TOKEN        (e.g. $(gcloud auth print-access-token))\n"
    "  * --anonymous                                     (only for emulators and the fake)"
)


class TokenSource(Protocol):
    """What the client needs: headers for the next request, and a way to report a 401."""

    #: False only for the anonymous source; used to decide whether plain HTTP is safe.
    @property
    def sends_credentials(self) -> bool: ...

    async def headers(self) -> Mapping[str, str]:
        """The auth headers for one request (the same mapping object until it changes)."""
        ...

    async def invalidate(self, used: Mapping[str, str]) -> bool:
        """``used`` was answered 401. Return True when retrying with new headers makes sense."""
        ...


def _quota_headers(quota_project: str | None) -> dict[str, str]:
    return {"x-goog-user-project": quota_project} if quota_project else {}


class _Fixed:
    """Anonymous and static-token sources: the headers never change."""

    __slots__ = ("_headers", "sends_credentials")

    def __init__(self, headers: dict[str, str], sends_credentials: bool) -> None:
        self._headers: Mapping[str, str] = headers
        self.sends_credentials = sends_credentials

    @property
    def identity(self) -> str:
        # An opaque token does not say whose it is (asking tokeninfo would send it elsewhere).
        return "access token" if self.sends_credentials else "anonymous"

    def __repr__(self) -> str:  # never the token
        return f"<TokenSource {self.identity}>"

    async def headers(self) -> Mapping[str, str]:
        return self._headers

    async def invalidate(self, used: Mapping[str, str]) -> bool:
        return False  # nothing to refresh: a rejected static token stays rejected


def anonymous_source(quota_project: str | None = None) -> TokenSource:
    return _Fixed(_quota_headers(quota_project), sends_credentials=False)


def static_token_source(token: str, quota_project: str | None = None) -> TokenSource:
    token = token.strip()
    if not token or any(c in token for c in "\r\n") or token.lower().startswith("bearer "):
        raise CredentialsError(
            "the access token is empty or malformed (give the bare token, without 'Bearer ')"
        )
    headers = {"authorization": f"Bearer {token}", **_quota_headers(quota_project)}
    return _Fixed(headers, sends_credentials=True)


class _CredentialsSource:
    """google-auth credentials, refreshed in a worker thread, one refresh for all workers."""

    sends_credentials = True

    def __init__(
        self,
        credentials: Credentials,
        quota_project: str | None,
        *,
        request: Callable[..., object] | None = None,
        clock: Callable[[], float] = time.time,
        refresh_ahead: float = REFRESH_AHEAD,
    ) -> None:
        self._creds = credentials
        self._quota = quota_project
        self._request = request
        self._clock = clock
        self._ahead = refresh_ahead
        self._lock = anyio.Lock()
        self._headers: Mapping[str, str] | None = None
        self._stale = True
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"<TokenSource {type(self._creds).__name__}>"

    @property
    def identity(self) -> str:
        return describe_credentials(self._creds)

    def _seconds_left(self) -> float | None:
        expiry = getattr(self._creds, "expiry", None)
        if not isinstance(expiry, _dt.datetime):
            return None
        # google-auth keeps expiry as a naive UTC datetime.
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=_dt.UTC)
        return expiry.timestamp() - self._clock()

    def _fresh(self) -> bool:
        if self._stale or self._headers is None:
            return False
        left = self._seconds_left()
        return left is None or left > self._ahead

    async def headers(self) -> Mapping[str, str]:
        if self._fresh():
            assert self._headers is not None
            return self._headers
        async with self._lock:
            if not self._fresh():  # somebody else may have refreshed while we waited
                await self._refresh()
            assert self._headers is not None
            return self._headers

    async def invalidate(self, used: Mapping[str, str]) -> bool:
        async with self._lock:
            if self._headers is not None and used is not self._headers:
                return True  # already refreshed since that request was sent: just retry
            self._stale = True
            await self._refresh()
            return True

    async def _refresh(self) -> None:
        from google.auth import exceptions as gexc

        request = self._request
        if request is None:
            import google.auth.transport.requests as gtr

            request = self._request = gtr.Request()
        try:
            await anyio.to_thread.run_sync(self._creds.refresh, request)
        except gexc.GoogleAuthError as exc:
            left = self._seconds_left()
            if self._headers is not None and left is not None and left > 10:
                # A refresh ahead of time failed (a network blip); the token still works.
                return
            hint = _IMPERSONATION_HINT if _impersonated(self._creds) else ""
            raise CredentialsError(f"could not refresh credentials: {_safe(exc)}{hint}") from None
        token = getattr(self._creds, "token", None)
        if not token:
            raise CredentialsError("the credentials produced no access token")
        headers = {"authorization": f"Bearer {token}"}
        quota = self._quota or getattr(self._creds, "quota_project_id", None)
        headers.update(_quota_headers(quota))
        self._headers = headers
        self._stale = False
        self.refreshes += 1


def describe(tokens: object) -> str:
    """Who acts through ``tokens`` (any token source): never a secret. Ask again after the first
    request: the metadata server's service account is known only after a refresh."""
    identity = getattr(tokens, "identity", None)
    return identity if isinstance(identity, str) else "custom token source"


def _email(value: object) -> str | None:
    return value if isinstance(value, str) and "@" in value else None


def _impersonated(creds: object) -> bool:
    return type(creds).__module__ == "google.auth.impersonated_credentials"


def describe_credentials(creds: object) -> str:
    """Who these google-auth credentials act as, as far as they say without a network call.

    A service account (key file, metadata server after its first refresh, impersonation) names
    its email; user credentials name their account when the ADC file recorded one. Otherwise the
    kind of credential, so the prompt never claims an identity it does not know.
    """
    if _impersonated(creds):
        target = _email(getattr(creds, "service_account_email", None))
        source = describe_credentials(getattr(creds, "_source_credentials", None))
        return f"{target or 'a service account'} (impersonated by {source})"
    email = _email(getattr(creds, "service_account_email", None))
    if email:
        return email
    account = _email(getattr(creds, "account", None))
    if account:
        return account
    module = type(creds).__module__
    if module == "google.auth.compute_engine.credentials":
        return "the attached service account (metadata server)"
    if module == "google.oauth2.credentials":
        return "user credentials"
    if module in ("google.auth.external_account", "google.auth.identity_pool", "google.auth.aws"):
        return "workload identity federation"
    return "google credentials" if creds is not None else "unknown credentials"


def _safe(exc: BaseException) -> str:
    """An error message fit for a terminal: first line, bounded."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def credentials_source(
    credentials: Credentials,
    quota_project: str | None = None,
    *,
    request: Callable[..., object] | None = None,
    clock: Callable[[], float] = time.time,
    refresh_ahead: float = REFRESH_AHEAD,
) -> TokenSource:
    """Wrap google-auth credentials (``request`` is a google-auth transport request)."""
    creds = credentials
    if getattr(creds, "requires_scopes", False):
        from google.auth.credentials import with_scopes_if_required

        creds = with_scopes_if_required(creds, [CLOUD_PLATFORM_SCOPE])  # type: ignore[no-untyped-call]
    return _CredentialsSource(
        creds, quota_project, request=request, clock=clock, refresh_ahead=refresh_ahead
    )


async def default_source(quota_project: str | None = None) -> TokenSource:
    """Application Default Credentials, found in a worker thread (it may probe the network)."""
    return credentials_source(await _application_default(), quota_project)


def _iam_url(base: str, principal: str) -> str:
    return f"{base.rstrip('/')}/v1/projects/-/serviceAccounts/{principal}:generateAccessToken"


async def _application_default() -> Credentials:
    import google.auth
    from google.auth import exceptions as gexc

    def find() -> Credentials:
        creds, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        return creds

    try:
        return await anyio.to_thread.run_sync(find)
    except gexc.DefaultCredentialsError as exc:
        raise CredentialsError(f"{_HOW_TO}\n({_safe(exc)})") from None
    except gexc.GoogleAuthError as exc:  # e.g. a malformed key file
        raise CredentialsError(f"the credentials could not be loaded: {_safe(exc)}") from None


async def impersonated_source(
    target_principal: str,
    quota_project: str | None = None,
    source_credentials: Credentials | None = None,
    *,
    iam_endpoint: str | None = None,
    lifetime: int = 3600,
    request: Callable[..., object] | None = None,
    clock: Callable[[], float] = time.time,
    refresh_ahead: float = REFRESH_AHEAD,
) -> TokenSource:
    """Act as ``target_principal`` (a service-account email) through IAM Credentials
    ``generateAccessToken``, like ``gcloud --impersonate-service-account``.

    As with gcloud, a comma-separated list is a delegation chain: the last email is the one acted
    as, the others are delegates in order (each holds Token Creator on the next). The source
    credentials default to Application Default Credentials. ``iam_endpoint`` replaces
    ``https://iamcredentials.googleapis.com`` (tests, private endpoints); it is passed to
    google-auth as its public ``iam_endpoint_override`` with the principal filled in.
    """
    chain = [p.strip() for p in target_principal.split(",")]
    for principal in chain:
        if (
            not principal
            or "@" not in principal
            or any(c.isspace() or c in "/?#" for c in principal)
        ):
            raise ConfigError(
                f"--impersonate-service-account: {principal!r} is not a service-account email"
            )
    target, delegates = chain[-1], chain[:-1]
    source = source_credentials or await _application_default()
    from google.auth import impersonated_credentials

    creds = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
        source_credentials=source,
        target_principal=target,
        target_scopes=[CLOUD_PLATFORM_SCOPE],
        delegates=delegates or None,
        lifetime=lifetime,
        quota_project_id=quota_project,
        iam_endpoint_override=_iam_url(iam_endpoint, target) if iam_endpoint else None,
    )
    return credentials_source(
        creds, quota_project, request=request, clock=clock, refresh_ahead=refresh_ahead
    )
