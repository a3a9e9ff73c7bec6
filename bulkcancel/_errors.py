"""Exceptions that stop a run. Per-operation failures are never exceptions: they are results."""

from __future__ import annotations


class BulkCancelError(Exception):
    """Base of every error bulkcancel raises on purpose."""


class ConfigError(BulkCancelError):
    """The run was refused before anything was sent: bad options or input (CLI exit 2)."""


class UnsafeEndpointError(ConfigError):
    """Credentials would travel in clear text to a non-loopback host."""


class JournalMismatchError(ConfigError):
    """The journal belongs to another run (other endpoint or API version)."""


class CredentialsError(BulkCancelError):
    """No usable credentials (CLI exit 4)."""


class AuthenticationRejectedError(CredentialsError):
    """The server rejected the credentials on every one of the run's first requests."""


class RecordingError(BulkCancelError):
    """The run could not record its progress (CLI exit 6): the journal or report failed mid-run."""


class JournalError(RecordingError):
    """A journal write or sync failed: the run stops sending and settles what it has."""


class ReportError(RecordingError):
    """The report could not be written where asked; it went to a fallback path instead."""


def unwrap(error: BaseException) -> BaseException:
    """The exception that explains a failure, taken out of (possibly nested) exception groups.

    anyio's task groups wrap even a lone exception in an ``ExceptionGroup``; neither a library
    caller's ``except CredentialsError`` nor the CLI's exit codes can see through one. Where a
    group holds several, a deliberate bulkcancel error wins over any other exception, and any
    exception wins over cancellation (which is only the echo of the first failure elsewhere).
    Returns ``error`` itself when it is not a group, or holds nothing.
    """
    leaves = list(_leaves(error))
    if not leaves:
        return error
    return min(leaves, key=_rank)  # min() keeps the first of the best rank


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _rank(error: BaseException) -> int:
    if isinstance(error, BulkCancelError):
        return 0
    if isinstance(error, Exception):
        return 1
    return 2
