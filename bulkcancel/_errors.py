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
