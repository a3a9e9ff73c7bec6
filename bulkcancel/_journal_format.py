"""The journal on disk: its records, how a rerun replays them, and what counts as corruption.

A bulk cancel is not safe to simply run again: operations that already finished would be
touched a second time and accepted cancels would be sent twice. The journal records, per name:

* an **intent** before the cancel is sent (the writer makes it durable before the send);
* the server's **answer** to the cancel (accepted or not);
* the reconciled **outcome** (the full result record).

File format: JSON Lines, compact, pure ASCII. The first line is a header naming the run's
identity (endpoint, API version), so a journal is never resumed against another service::

    {"journal":"bulkcancel","version":1,"identity":{"endpoint":"...","api_version":"v1"}}
    {"i":"projects/p/locations/l/operations/op-1"}
    {"a":"projects/p/locations/l/operations/op-1","ok":true}
    {"o":{"name":"projects/p/locations/l/operations/op-1","outcome":"cancelled"}}

An answer that was not an acceptance carries the server's detail: ``{"a":...,"ok":false,"d":{}}``.

**Resume rules.** Replay (:class:`JournalState`) puts every name in one of five places, and the
latest record about a name that counts decides:

* ``done``: a *final* outcome (see :func:`settles`); the rerun reports it and sends nothing;
* ``accepted``: the cancel was accepted; the rerun only reconciles (never cancels again);
* ``in_flight``: intent written, no answer; the server may have seen it, so the rerun may send
  again (cancel is idempotent: sending one twice is harmless, losing one is not);
* ``rejected``: answered but not accepted; the rerun may try again;
* ``new``: nothing recorded (or only a stop's placeholder); the rerun starts afresh.

An outcome is *provisional* when it records that the run stopped watching, not how the
operation ended: ``not_attempted``; anything marked ``interrupted``; anything whose ``reason``
is a stop reason (``interrupted``, ``journal_failed``, ``unreachable``...); and every
``still_running``, whether the run's deadline or a stop's grace ended the watch. A provisional
outcome never finishes a name: the earlier records decide, except that ``still_running``
(which is only ever given to an accepted cancel) means ``accepted``. So a resume reads such
operations back again and reports their true outcome, and never re-sends an accepted cancel.

**Corruption rules.** The writer appends whole lines only, so a crash can leave at most a torn
*last* line (or zeros, on some filesystems); opening truncates it away. Any other bad line, or
valid JSON in a shape bulkcancel never writes, is corruption: it means something else wrote the
file, and guessing which operations finished could cancel twice. A file whose first line is not
(the start of) our header is never used or repaired.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from bulkcancel._errors import ConfigError, JournalMismatchError
from bulkcancel._models import OperationResult, Outcome, StopReason

__all__ = [
    "JOURNAL_VERSION",
    "JournalCorruptError",
    "JournalState",
    "Replay",
    "Status",
    "check_identity",
    "encode",
    "header",
    "normalise_identity",
    "read_journal",
    "replay",
    "settles",
]

JOURNAL_VERSION = 1
_MAGIC = "bulkcancel"
#: Every header starts with these bytes; a torn first line is only forgiven when it does too,
#: so a file that is not a journal (a names file given by mistake) is never truncated.
_HEADER_START = b'{"journal":"bulkcancel"'
#: The ``reason`` values a run writes on the records it made up while stopping.
_STOP_REASONS = frozenset(reason.value for reason in StopReason)

Status = Literal["done", "accepted", "in_flight", "rejected", "new"]


class JournalCorruptError(ConfigError):
    """The journal has a bad line before its end, or is not a bulkcancel journal at all.

    Only a torn *last* line can come from a crash; anything else means the file was edited or
    written by something else, and guessing which operations finished could cancel twice.
    """


class _BadRecordError(Exception):
    """A line that is valid JSON but not in a shape bulkcancel writes."""


#: built once: ``json.dumps`` with options builds an encoder per call, and this is per record
_encode_line = json.JSONEncoder(separators=(",", ":")).encode


def encode(record: Mapping[str, Any]) -> bytes:
    """One record as one line."""
    # ensure_ascii (the default) keeps the file pure ASCII: a line can never hold a raw newline
    # or an invalid UTF-8 sequence, whatever a server put in an error message.
    return _encode_line(record).encode("ascii") + b"\n"


def header(identity: Mapping[str, Any]) -> bytes:
    """The first line of a new journal."""
    return encode({"journal": _MAGIC, "version": JOURNAL_VERSION, "identity": dict(identity)})


def settles(result: OperationResult) -> bool:
    """Whether an outcome record is final: a rerun reports it and leaves the operation alone.

    The engine also records results it makes up when a run stops early, and results that only
    say the run stopped watching; those are provisional (see the module docstring), and a rerun
    carries on from the earlier records instead of repeating them:

    * ``not_attempted``: the run never got to it (or never heard back from its cancel);
    * ``details["interrupted"] is True``: settled from the last observation when the run stopped;
    * ``details["reason"]`` is a :class:`StopReason` value: the run stopped for that reason;
    * ``still_running``: last seen running when the deadline or a stop's grace ended; it says
      nothing of how the operation ends, and reading it again costs one GET.
    """
    details = result.details
    return not (
        result.outcome is Outcome.NOT_ATTEMPTED
        or result.outcome is Outcome.STILL_RUNNING
        or details.get("interrupted") is True
        or details.get("reason") in _STOP_REASONS
    )


@dataclass
class JournalState:
    """What a previous run left: each name it touched is in exactly one of the four places."""

    #: Finished: report from here, touch nothing.
    outcomes: dict[str, OperationResult] = field(default_factory=dict)
    #: Cancel accepted, no final outcome: reconcile only, never cancel again.
    accepted: set[str] = field(default_factory=set)
    #: Intent written, no answer: the server may or may not have seen it; may send again.
    in_flight: set[str] = field(default_factory=set)
    #: Answered not accepted, no outcome: the recorded detail; the cancel may be retried.
    rejected: dict[str, dict[str, Any]] = field(default_factory=dict)

    def status(self, name: str) -> Status:
        if name in self.outcomes:
            return "done"
        if name in self.accepted:
            return "accepted"
        if name in self.in_flight:
            return "in_flight"
        if name in self.rejected:
            return "rejected"
        return "new"

    def __len__(self) -> int:
        return len(self.outcomes) + len(self.accepted) + len(self.in_flight) + len(self.rejected)

    def _forget(self, name: str) -> None:
        self.outcomes.pop(name, None)
        self.accepted.discard(name)
        self.in_flight.discard(name)
        self.rejected.pop(name, None)

    def apply(self, record: Any) -> None:
        """Replay one decoded record.

        Raises _BadRecordError when the record has no shape we write.
        """
        if not isinstance(record, dict):
            raise _BadRecordError("not a JSON object")
        if "i" in record and len(record) == 1:
            name = _name(record["i"])
            self._forget(name)
            self.in_flight.add(name)
        elif (
            "a" in record
            and isinstance(record.get("ok"), bool)
            and record.keys() <= {"a", "ok", "d"}
        ):
            name = _name(record["a"])
            detail = record.get("d", {})
            if not isinstance(detail, dict):
                raise _BadRecordError('"d" is not an object')
            self._forget(name)
            if record["ok"]:
                self.accepted.add(name)
            else:
                self.rejected[name] = detail
        elif "o" in record and len(record) == 1:
            body = record["o"]
            if not isinstance(body, dict):
                raise _BadRecordError('"o" is not an object')
            try:
                result = OperationResult.from_json(body)
            except (KeyError, ValueError) as exc:
                raise _BadRecordError(f"bad outcome record: {exc!r}") from None
            name = _name(body["name"])
            if settles(result):
                self._forget(name)
                self.outcomes[name] = result
            elif result.outcome is Outcome.STILL_RUNNING and name not in self.outcomes:
                # Only an accepted cancel is ever still_running: reconcile it, never re-send.
                self._forget(name)
                self.accepted.add(name)
            # Any other provisional outcome leaves the earlier records in charge.
        else:
            raise _BadRecordError("unknown record")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _BadRecordError("operation name is not a non-empty string")
    return value


@dataclass
class Replay:
    """What reading a journal found."""

    identity: dict[str, Any] | None  # None: no complete header (empty file, or torn header)
    state: JournalState
    good_length: int  # bytes up to the end of the last complete valid line
    size: int


def replay(stream: BinaryIO, where: str) -> Replay:
    """Read a journal; a torn last line is reported (``good_length < size``), not raised.

    Streams line by line: a journal of a million operations is hundreds of megabytes.
    Raises :class:`JournalCorruptError` for anything a crash cannot explain.
    """
    state = JournalState()
    identity: dict[str, Any] | None = None
    offset = good = 0
    pending_bad: tuple[int, str] | None = None  # a bad line is only forgivable if it is last
    lineno = 0
    for raw in stream:
        lineno += 1
        if pending_bad is not None:
            bad_line, why = pending_bad
            raise JournalCorruptError(f"journal {where}: line {bad_line} is corrupt ({why})")
        offset += len(raw)
        if not raw.endswith(b"\n"):
            # Only the last line can lack its newline: a write cut short by a crash.
            if lineno == 1 and not _torn_header(raw):
                raise _not_a_journal(where, "no complete first line")
            break
        try:
            record = json.loads(raw)
        except ValueError:
            # A torn write, or the zeros a filesystem can leave after a crash: forgiven only
            # when nothing follows it, and on line 1 only when it could be our own header.
            if lineno == 1 and not _torn_header(raw):
                raise _not_a_journal(where, "not valid JSON") from None
            pending_bad = (lineno, "not valid JSON")
            continue
        # Valid JSON in a shape we never write is not crash damage: refuse it anywhere.
        if lineno == 1:
            try:
                identity = _read_header(record)
            except _BadRecordError as exc:
                raise _not_a_journal(where, str(exc)) from None
        else:
            try:
                state.apply(record)
            except _BadRecordError as exc:
                raise JournalCorruptError(
                    f"journal {where}: line {lineno} is corrupt ({exc})"
                ) from None
        good = offset
    return Replay(identity=identity, state=state, good_length=good, size=offset)


def _not_a_journal(where: str, why: str) -> JournalCorruptError:
    return JournalCorruptError(
        f"journal {where}: line 1 is not a bulkcancel journal header ({why}); "
        "refusing to use or repair a file bulkcancel did not write"
    )


def _torn_header(raw: bytes) -> bool:
    """Whether an unparseable first line could be our own header cut short by a crash."""
    body = raw.rstrip(b"\n")
    if not body.strip(b"\0"):
        return True  # zeros: the file was extended but the data never reached the disk
    return body.startswith(_HEADER_START) or _HEADER_START.startswith(body)


def _read_header(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict) or record.get("journal") != _MAGIC:
        raise _BadRecordError("no bulkcancel header")
    version = record.get("version")
    if version != JOURNAL_VERSION:
        raise _BadRecordError(
            f"version {version!r}; this bulkcancel reads version {JOURNAL_VERSION}"
        )
    identity = record.get("identity")
    if not isinstance(identity, dict):
        raise _BadRecordError("no identity")
    return identity


def normalise_identity(identity: Mapping[str, object]) -> dict[str, Any]:
    """The identity as it reads back from the file (tuples become lists, keys strings)."""
    normalised: dict[str, Any] = json.loads(json.dumps(dict(identity)))
    return normalised


def check_identity(path: Path, found: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    """Refuse a journal written for another endpoint or API version, naming what differs."""
    missing = object()
    diffs = []
    for key in sorted(set(found) | set(wanted)):
        have, want = found.get(key, missing), wanted.get(key, missing)
        if have != want:
            shown_have = "(absent)" if have is missing else json.dumps(have)
            shown_want = "(absent)" if want is missing else json.dumps(want)
            diffs.append(f"{key}: journal has {shown_have}, this run has {shown_want}")
    if diffs:
        raise JournalMismatchError(f"journal {path} belongs to another run: " + "; ".join(diffs))


def read_journal(path: str | os.PathLike[str]) -> tuple[dict[str, Any], JournalState]:
    """The header identity and the replayed state of a journal, without changing the file.

    For tools and tests. A torn last line is ignored (``Journal.open`` would truncate it); an
    empty file, or one whose header was torn, reads as an empty identity and state.
    Raises :class:`JournalCorruptError` like ``Journal.open``.
    """
    with open(path, "rb") as stream:
        found = replay(stream, os.fspath(path))
    return (found.identity or {}), found.state
