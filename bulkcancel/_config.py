"""What shapes a run, and the one place that refuses a bad configuration.

Everything a run is given is checked here, before a connection is opened: a number that is not
finite or out of range, an endpoint whose port cannot exist, a path the run could not write at
the end. Each refusal is a :class:`ConfigError` with one line naming the option (CLI exit 2),
never a traceback from deep inside the run after cancels were sent.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bulkcancel._auth import (
    TokenSource,
    anonymous_source,
    credentials_source,
    default_source,
    impersonated_source,
    static_token_source,
)
from bulkcancel._engine import ReconcileMode
from bulkcancel._errors import ConfigError
from bulkcancel._sources import Selection

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

DEFAULT_ENDPOINT = "https://clouddeploy.googleapis.com"
#: More requests in flight than this only queue in the connection pool: a 300-operation run
#: with 100,000 workers was 8x slower than with 32, and Google's quotas are per second anyway.
MAX_CONCURRENCY = 1000
#: ``pageSize`` is an int32 in every Google list request.
MAX_PAGE_SIZE = 2**31 - 1
_VERSION = re.compile(r"[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything that shapes a run. Defaults are the contract's."""

    endpoint: str = DEFAULT_ENDPOINT
    api_version: str = "v1"
    token: str | None = None
    credentials: Credentials | None = None
    anonymous: bool = False
    quota_project: str | None = None
    rate: float = 50.0
    concurrency: int = 32
    deadline: float = 120.0
    reconcile: ReconcileMode = ReconcileMode.AUTO
    parents: tuple[str, ...] = ()
    filter: str | None = None
    list_page_size: int = 0
    #: the service lists ``locations/-`` itself; otherwise bulkcancel fans out over locations.
    dash_ok: bool = False
    selection: Selection = field(default_factory=Selection)
    dry_run: bool = False
    journal: str | None = None
    request_timeout: float = 30.0
    poll_initial: float = 0.5
    poll_max: float = 10.0
    grace: float = 5.0
    seed: int | None = None
    #: act as this service account (a comma-separated list is a delegation chain, as gcloud's)
    impersonate: str | None = None
    #: where IAM ``generateAccessToken`` is asked (tests, private endpoints); None: Google's
    iam_endpoint: str | None = None
    #: ``--until-quiet``: keep re-listing the parents and cancelling what newly appears until a
    #: full pass has found nothing new for this many seconds (None: list once)
    until_quiet: float | None = None
    #: ``--max-operations``: the first selection is refused above it (before sending, by the
    #: application); a drain stops cancelling when it would go past it
    max_operations: int | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first thing that cannot work."""
        _number("--rate", self.rate, above=0.0)
        _whole("--concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        _number("--deadline", self.deadline, at_least=0.0)
        _whole("--page-size", self.list_page_size, 0, MAX_PAGE_SIZE)
        _number("--request-timeout", self.request_timeout, above=0.0)
        # A zero first poll interval would grow by multiplication forever from zero: a busy loop.
        _number("poll_initial", self.poll_initial, above=0.0)
        _number("poll_max", self.poll_max, at_least=self.poll_initial)
        _number("grace", self.grace, at_least=0.0)
        # Usually "v1"; some APIs put more in the prefix ("dns/v1", "v1/admin").
        if not isinstance(self.api_version, str) or not _VERSION.fullmatch(self.api_version):
            raise ConfigError(f"bad API version {self.api_version!r}")
        try:
            urlsplit(self.endpoint).port  # noqa: B018 - parsing it is the check
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"--endpoint {self.endpoint!r}: {exc}") from None
        if self.impersonate is not None and (self.anonymous or self.token is not None):
            other = "--anonymous" if self.anonymous else "--token"
            raise ConfigError(f"--impersonate-service-account and {other} exclude each other")
        if self.until_quiet is not None:
            _number("--until-quiet", self.until_quiet, above=0.0)
            if not self.parents:
                raise ConfigError(
                    "--until-quiet needs --parent: only listings can show new operations"
                )
        if self.max_operations is not None:
            _whole("--max-operations", self.max_operations, 0, 2**63 - 1)
        older = self.selection.older_than
        if older is not None:
            if older.total_seconds() < 0:
                raise ConfigError("--older-than must not be negative")
            try:
                self.selection.now() - older
            except OverflowError:
                raise ConfigError("--older-than reaches back before the year 1") from None


def _number(
    flag: str, value: object, *, above: float | None = None, at_least: float | None = None
) -> None:
    # bool is an int to Python, and a library caller's typo to us.
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, not {value!r}")
    if above is not None and not value > above:
        raise ConfigError(f"{flag} must be more than {above:g}, not {value!r}")
    if at_least is not None and not value >= at_least:
        raise ConfigError(f"{flag} must be at least {at_least:g}, not {value!r}")


def _whole(flag: str, value: object, lowest: int, highest: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{flag} must be a whole number, not {value!r}")
    if not lowest <= value <= highest:
        raise ConfigError(f"{flag} must be between {lowest} and {highest}, not {value}")


def check_writable(path: str, flag: str) -> None:
    """Refuse, before anything is sent, a file the run could not write when it ends.

    The check creates and removes a probe file in the directory: permissions, a read-only
    mount or a missing directory all show up exactly as they would for the real write.
    """
    target = Path(path)
    directory = target.parent
    if target.is_dir():
        raise ConfigError(f"{flag} {path} is a directory")
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise ConfigError(f"{flag} {path}: the directory {directory} {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=directory)
    except OSError as exc:
        raise ConfigError(
            f"{flag} {path}: cannot write in {directory} ({exc.strerror or exc})"
        ) from None
    os.close(fd)
    os.unlink(probe)


async def make_tokens(config: RunConfig) -> TokenSource:
    """The run's credentials: anonymous, a static token, impersonation (of given credentials or
    ADC), given credentials, or ADC."""
    if config.impersonate:
        return await impersonated_source(
            config.impersonate,
            config.quota_project,
            config.credentials,
            iam_endpoint=config.iam_endpoint,
        )
    if config.anonymous:
        return anonymous_source(config.quota_project)
    if config.token is not None:
        return static_token_source(config.token, config.quota_project)
    if config.credentials is not None:
        return credentials_source(config.credentials, config.quota_project)
    return await default_source(config.quota_project)
