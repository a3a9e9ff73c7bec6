"""Where the ``Authorization`` header comes from.

Three sources, one small protocol (:class:`TokenSource`):

* :func:`anonymous_source` sends nothing (emulators, the built-in fake);
* :func:`static_token_source` sends a token the user gave (``--token``); it cannot be refreshed;
* :func:`credentials_source` wraps any ``google.auth`` credentials (service account, user ADC,
  impersonated, metadata server), and :func:`default_source` finds them the way ``gcloud`` and
  the client libraries do (Application Default Credentials).

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

from bulkcancel._errors import CredentialsError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "REFRESH_AHEAD",
    "TokenSource",
    "anonymous_source",
    "credentials_source",
    "default_source",
    "static_token_source",
]

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: Refresh this long before the token's expiry (google-auth itself calls a token expired
#: 3 min 45 s early; a little more keeps the refresh off the critical path of most requests).
REFRESH_AHEAD = 300.0

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

    def __repr__(self) -> str:  # never the token
        kind = "static token" if self.sends_credentials else "anonymous"
        return f"<TokenSource {kind}>"

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
            raise CredentialsError(f"could not refresh credentials: {_safe(exc)}") from None
        token = getattr(self._creds, "token", None)
        if not token:
            raise CredentialsError("the credentials produced no access token")
        headers = {"authorization": f"Bearer {token}"}
        quota = self._quota or getattr(self._creds, "quota_project_id", None)
        headers.update(_quota_headers(quota))
        self._headers = headers
        self._stale = False
        self.refreshes += 1


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
    import google.auth
    from google.auth import exceptions as gexc

    def find() -> Credentials:
        creds, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        return creds

    try:
        creds = await anyio.to_thread.run_sync(find)
    except gexc.DefaultCredentialsError as exc:
        raise CredentialsError(f"{_HOW_TO}\n({_safe(exc)})") from None
    except gexc.GoogleAuthError as exc:  # e.g. a malformed key file
        raise CredentialsError(f"the credentials could not be loaded: {_safe(exc)}") from None
    return credentials_source(creds, quota_project)
