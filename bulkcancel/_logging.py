"""Log lines for jobs: ``--log-format json`` writes one JSON object per event to stderr.

Cloud Logging (Cloud Run, GKE) reads a JSON line on stderr as a structured entry: ``severity``,
``time`` (RFC 3339) and ``message`` become the entry's own fields, everything else its
``jsonPayload``. The library logs through the ``logging`` logger ``"bulkcancel"`` (and its
children), so a program embedding bulkcancel sees the same events through its own handlers;
:func:`setup_logging` is for the CLI, and touches only that logger, never the root.

Structured fields travel in ``extra``; :func:`event` puts them under one attribute so a field
may be called ``name`` or ``message`` without colliding with ``LogRecord``'s own attributes.
Tokens never reach a log line: :class:`RedactTokens` masks anything shaped like a bearer or
OAuth access token, whatever code wrote the message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = [
    "LOGGER",
    "JsonFormatter",
    "RedactTokens",
    "TextFormatter",
    "event",
    "logger",
    "setup_logging",
]

LOGGER = "bulkcancel"
_FIELDS = "bulkcancel_fields"
#: Cloud Logging's severity names for Python's levels.
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
#: What a LogRecord carries by itself; anything else on a record came in through ``extra``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", _FIELDS}
)
_RESERVED = frozenset({"severity", "time", "message", "logger"})
_TOKEN = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+|ya29\.[\w.\-~+/]+")


def logger() -> logging.Logger:
    return logging.getLogger(LOGGER)


def event(message: str, /, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with structured fields: ``event("run started", targets=120)``."""
    logger().log(level, message, extra={_FIELDS: fields})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
    structured = getattr(record, _FIELDS, None)
    if isinstance(structured, dict):
        fields.update(structured)
    return {(f"field_{k}" if k in _RESERVED else k): v for k, v in fields.items()}


def _rfc3339(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


class RedactTokens(logging.Filter):
    """Masks bearer and OAuth access tokens in the message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = _TOKEN.sub(lambda m: (m.group(1) or "") + "[redacted]", text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``severity``, ``time``, ``message``, ``logger``, then the
    record's extra fields. Non-JSON values are written as their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "time": _rfc3339(record.created),
            "message": record.getMessage(),
            "logger": record.name,
        }
        entry.update(_fields(record))
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {error}"
            entry["stack_trace"] = self.formatException(record.exc_info)
        text = json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))
        return _TOKEN.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class TextFormatter(logging.Formatter):
    """``bulkcancel: warning: message (key=value ...)``: for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"bulkcancel: {record.levelname.lower()}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            text += " (" + " ".join(f"{k}={v}" for k, v in fields.items()) + ")"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when the record is emitted (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always sys.stderr


def setup_logging(
    fmt: Literal["text", "json"] = "text", level: int | str = logging.WARNING
) -> logging.Handler:
    """Send the ``bulkcancel`` logger to stderr in ``fmt``; idempotent (replaces our handler).

    The logger stops propagating to the root, so an application's own root handler does not
    print every event a second time.
    """
    log = logger()
    for handler in list(log.handlers):
        if isinstance(handler, _StderrHandler):
            log.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactTokens())
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    return handler
