"""Durable, append-only progress of a run, so a crash, Ctrl-C or a rerun loses nothing.

A bulk cancel is not safe to simply run again: operations that already finished would be
touched a second time and accepted cancels would be sent twice. The journal records, per name:

* an **intent** before the cancel is sent, durable (fsynced) before the caller may send it;
* the server's **answer** to the cancel (accepted or not);
* the reconciled **outcome** (the full result record).

A rerun with the same journal replays it (:class:`JournalState`) and then only does what is
still owed: finished operations are reported from the journal, accepted cancels are only
reconciled, and cancels that were in flight at the crash may be sent again (cancel is
idempotent, so sending one twice is harmless; losing one is not).

File format: JSON Lines, compact. The first line is a header naming the run's identity
(endpoint, API version), so a journal is never resumed against another service::

    {"journal":"bulkcancel","version":1,"identity":{"endpoint":"...","api_version":"v1"}}
    {"i":"projects/p/locations/l/operations/op-1"}
    {"a":"projects/p/locations/l/operations/op-1","ok":true}
    {"o":{"name":"projects/p/locations/l/operations/op-1","outcome":"cancelled"}}

Only whole lines are written, each batch with one ``write`` and one ``fsync``. A crash can
still leave a torn last line; opening truncates it away. Any other bad line is corruption and
stops the run (it means something other than bulkcancel wrote the file).

Durability must not cost throughput, so writes are group-committed: every record goes into an
in-memory batch, and one flusher task writes and fsyncs the batch in a worker thread, releasing
every ``intent()`` that waited on it at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Literal

import anyio

from bulkcancel._errors import ConfigError, JournalMismatchError
from bulkcancel._models import OperationResult, Outcome

try:  # POSIX: keep two runs from interleaving their records in one journal
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "JOURNAL_VERSION",
    "Journal",
    "JournalBusyError",
    "JournalCorruptError",
    "JournalState",
    "read_journal",
    "settles",
]

JOURNAL_VERSION = 1
_MAGIC = "bulkcancel"
#: Every header starts with these bytes; a torn first line is only forgiven when it does too,
#: so a file that is not a journal (a names file given by mistake) is never truncated.
_HEADER_START = b'{"journal":"bulkcancel"'

Status = Literal["done", "accepted", "in_flight", "rejected", "new"]


class JournalCorruptError(ConfigError):
    """The journal has a bad line before its end, or is not a bulkcancel journal at all.

    Only a torn *last* line can come from a crash; anything else means the file was edited or
    written by something else, and guessing which operations finished could cancel twice.
    """


class JournalBusyError(ConfigError):
    """Another run holds the journal: two writers would interleave and redo each other's work."""


class _BadRecordError(Exception):
    """A line that is valid JSON but not in a shape bulkcancel writes."""


def _dumps(record: Mapping[str, Any]) -> bytes:
    # ensure_ascii (the default) keeps the file pure ASCII: a line can never hold a raw newline
    # or an invalid UTF-8 sequence, whatever a server put in an error message.
    return json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n"


def settles(result: OperationResult) -> bool:
    """Whether an outcome record finishes its operation for a rerun.

    The engine also records the results it makes up when a run stops early: ``not_attempted``
    for targets it never got to, and an ``interrupted`` verdict for cancels it was still
    reconciling. Those say "this run did not finish it", not what became of the operation, so a
    rerun must carry on from the earlier records (send, reconcile) instead of repeating them.
    """
    return (
        result.outcome is not Outcome.NOT_ATTEMPTED
        and result.details.get("interrupted") is not True
    )


@dataclass
class JournalState:
    """What a previous run left: each name it touched is in exactly one of the four places."""

    #: Finished: report from here, touch nothing.
    outcomes: dict[str, OperationResult] = field(default_factory=dict)
    #: Cancel accepted, no outcome yet: reconcile only, never cancel again.
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

    def _apply(self, record: Any) -> None:
        """Replay one record; the latest record about a name decides its status.

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
            _name(body["name"])
            if settles(result):
                self._forget(result.name)
                self.outcomes[result.name] = result
        else:
            raise _BadRecordError("unknown record")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _BadRecordError("operation name is not a non-empty string")
    return value


@dataclass
class _Replay:
    identity: dict[str, Any] | None  # None: no complete header (empty file, or torn header)
    state: JournalState
    good_length: int  # bytes up to the end of the last complete valid line
    size: int


def _replay(stream: BinaryIO, where: str) -> _Replay:
    """Read a journal; a torn last line is reported (``good_length < size``), not raised.

    Streams line by line: a journal of a million operations is hundreds of megabytes.
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
                identity = _header(record)
            except _BadRecordError as exc:
                raise _not_a_journal(where, str(exc)) from None
        else:
            try:
                state._apply(record)
            except _BadRecordError as exc:
                raise JournalCorruptError(
                    f"journal {where}: line {lineno} is corrupt ({exc})"
                ) from None
        good = offset
    return _Replay(identity=identity, state=state, good_length=good, size=offset)


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


def _header(header: Any) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("journal") != _MAGIC:
        raise _BadRecordError("no bulkcancel header")
    version = header.get("version")
    if version != JOURNAL_VERSION:
        raise _BadRecordError(
            f"version {version!r}; this bulkcancel reads version {JOURNAL_VERSION}"
        )
    identity = header.get("identity")
    if not isinstance(identity, dict):
        raise _BadRecordError("no identity")
    return identity


def _normalise_identity(identity: Mapping[str, object]) -> dict[str, Any]:
    """The identity as it reads back from the file (tuples become lists, keys strings)."""
    normalised: dict[str, Any] = json.loads(json.dumps(dict(identity)))
    return normalised


def _check_identity(path: Path, found: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    diffs = _identity_diff(found, wanted)
    if diffs:
        raise JournalMismatchError(f"journal {path} belongs to another run: " + "; ".join(diffs))


def _identity_diff(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    missing = object()
    diffs = []
    for key in sorted(set(found) | set(wanted)):
        have, want = found.get(key, missing), wanted.get(key, missing)
        if have != want:
            shown_have = "(absent)" if have is missing else json.dumps(have)
            shown_want = "(absent)" if want is missing else json.dumps(want)
            diffs.append(f"{key}: journal has {shown_have}, this run has {shown_want}")
    return diffs


def read_journal(path: str | os.PathLike[str]) -> tuple[dict[str, Any], JournalState]:
    """The header identity and the replayed state of a journal, without changing the file.

    For tools and tests. A torn last line is ignored (``Journal.open`` would truncate it); an
    empty file, or one whose header was torn, reads as an empty identity and state.
    Raises :class:`JournalCorruptError` like ``Journal.open``.
    """
    with open(path, "rb") as stream:
        replay = _replay(stream, os.fspath(path))
    return (replay.identity or {}), replay.state


@dataclass(eq=False)
class _Batch:
    """Records that become durable together, with one write and one fsync."""

    lines: list[bytes]
    started: float
    #: Created only when an intent() waits on this batch: answers and outcomes never wait.
    durable: anyio.Event | None = None
    error: BaseException | None = None

    def release(self, error: BaseException | None = None) -> None:
        self.error = error
        if self.durable is not None:
            self.durable.set()


class Journal:
    """An open journal: replayed state plus group-committed appends. Use :meth:`open`."""

    state: JournalState
    path: Path
    identity: dict[str, Any]
    #: Records made durable by this process, and the fsyncs that did it (header excluded).
    records_written: int
    fsyncs: int

    def __init__(
        self,
        path: Path,
        fd: int,
        identity: dict[str, Any],
        state: JournalState,
        *,
        window: float,
        max_batch: int,
    ) -> None:
        # No locks or events here: they belong to the event loop, and open() runs in it.
        self.path = path
        self.identity = identity
        self.state = state
        self.records_written = 0
        self.fsyncs = 0
        self._fd = fd
        self._window = window
        self._max_batch = max_batch
        self._batch: _Batch | None = None
        self._kick: anyio.Event | None = None
        self._write_lock: anyio.Lock | None = None
        self._failed: BaseException | None = None
        self._closed = False

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        identity: Mapping[str, object],
        *,
        window: float = 0.005,
        max_batch: int = 512,
    ) -> AsyncIterator[Journal]:
        """Open (or create) a journal, replay it, and append to it until the block ends.

        On exit, normal or not (an exception, a cancellation), everything buffered is written
        and fsynced before the file is closed: the records of an interrupted run are exactly
        what the rerun needs. If a write failed, the ``OSError`` is raised here too (unless the
        block is already raising), so a run never reports success over a journal it lost.
        """
        if not window >= 0 or math.isinf(window):
            raise ValueError(f"window must be a finite number of seconds >= 0, not {window!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch!r}")
        wanted = _normalise_identity(identity)
        journal = await anyio.to_thread.run_sync(
            partial(
                cls._open_sync, Path(os.fspath(path)), wanted, window=window, max_batch=max_batch
            )
        )
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                journal._write_lock = anyio.Lock()
                tg.start_soon(journal._flusher, name=f"journal flusher {journal.path}")
                try:
                    yield journal
                except BaseException as exc:
                    # Kept out of the task group, which would wrap it in an ExceptionGroup:
                    # the caller's own error (or cancellation) must reach it unchanged.
                    body_error = exc
                finally:
                    with anyio.CancelScope(shield=True):
                        await journal._drain()
                    tg.cancel_scope.cancel()
            if body_error is not None:
                raise body_error
            if journal._failed is not None:
                raise journal._failed
        finally:
            journal._closed = True
            os.close(journal._fd)  # also releases the lock

    @classmethod
    def _open_sync(
        cls, path: Path, wanted: dict[str, Any], *, window: float, max_batch: int
    ) -> Journal:
        """Open, lock, replay, repair and (for a new file) write the header. Runs in a thread."""
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(os.stat(path).st_mode):
                # A FIFO would block the open, a device cannot be fsynced or truncated.
                raise ConfigError(f"journal {path} is not a regular file")
        flags = os.O_CREAT | os.O_APPEND | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o600)  # 0600: names and error messages are nobody else's
        try:
            _lock(fd, path)
            with open(path, "rb") as stream:
                replay = _replay(stream, str(path))
            if replay.identity is not None:
                _check_identity(path, replay.identity, wanted)
            if replay.good_length < replay.size:
                # A crash cut the last line short: drop it, so appends start on a line boundary.
                os.ftruncate(fd, replay.good_length)
                os.fsync(fd)
            if replay.identity is None:
                _write_all(
                    fd, _dumps({"journal": _MAGIC, "version": JOURNAL_VERSION, "identity": wanted})
                )
                os.fsync(fd)
                _fsync_directory(path.parent)
            return cls(
                path,
                fd,
                replay.identity if replay.identity is not None else wanted,
                replay.state,
                window=window,
                max_batch=max_batch,
            )
        except BaseException:
            os.close(fd)
            raise

    # -- appending -------------------------------------------------------------------------

    async def intent(self, name: str) -> None:
        """Record that a cancel for ``name`` is about to be sent; returns once it is durable.

        Raises the write's ``OSError`` if the batch could not be written: the caller must then
        not send, since a rerun would not know the cancel might have gone out.
        """
        batch = self._append({"i": name})
        if batch.durable is None:
            batch.durable = anyio.Event()
        await batch.durable.wait()
        if batch.error is not None:
            raise batch.error

    def answer(self, name: str, accepted: bool, detail: Mapping[str, object] | None = None) -> None:
        """Record the server's answer to the cancel. Does not wait: it rides the next batch.

        Losing an answer in a crash is safe: the name replays as in flight and is sent again.
        """
        record: dict[str, Any] = {"a": name, "ok": accepted}
        if detail:
            record["d"] = dict(detail)
        self._append(record)

    def outcome(self, result: OperationResult) -> None:
        """Record how the operation ended. Does not wait: it rides the next batch."""
        self._append({"o": result.to_json()})

    async def flush(self) -> None:
        """Make every record buffered so far durable, including a batch being written now."""
        self._check_usable()
        await self._write_pending()
        if self._failed is not None:
            raise self._failed

    def _check_usable(self) -> None:
        if self._failed is not None:
            # After a failed write the file may end in a torn line: appending more would turn it
            # into corruption in the middle. The journal is finished; so is the run.
            raise self._failed
        if self._closed or self._write_lock is None:
            raise RuntimeError(f"journal {self.path} is not open")

    def _append(self, record: Mapping[str, Any]) -> _Batch:
        self._check_usable()
        line = _dumps(record)  # a value JSON cannot hold fails here, at the caller
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch([line], anyio.current_time())
            self._wake()  # the window starts with the batch's first record
        else:
            batch.lines.append(line)
            if len(batch.lines) == self._max_batch:
                self._wake()
        return batch

    def _wake(self) -> None:
        if self._kick is not None:
            self._kick.set()

    # -- writing ---------------------------------------------------------------------------

    async def _flusher(self) -> None:
        """Write a batch when it is full or its window has passed, one batch at a time."""
        while True:
            batch = self._batch
            timeout = math.inf
            if batch is not None:
                if self._failed is not None or len(batch.lines) >= self._max_batch:
                    timeout = 0.0
                else:
                    timeout = batch.started + self._window - anyio.current_time()
                if timeout <= 0:
                    # Records that arrive while this batch is written start the next one.
                    await self._write_pending()
                    continue
            self._kick = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._kick.wait()

    async def _write_pending(self) -> None:
        """Write and fsync whatever is buffered; one write at a time, in buffer order.

        The batch is taken only once the lock is held, so batches reach the file in the order
        they were filled, whoever (the flusher or flush()) writes them.
        """
        assert self._write_lock is not None
        async with self._write_lock:
            batch, self._batch = self._batch, None
            if batch is None:
                return
            if self._failed is not None:
                batch.release(self._failed)
                return
            data = b"".join(batch.lines)
            # Shielded: a cancelled run must still learn whether its records reached the disk,
            # and the thread cannot be stopped anyway.
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(self._write_sync, data)
                except Exception as exc:
                    self._failed = exc
            if self._failed is not None:
                batch.release(self._failed)
                if self._batch is not None:  # waiters that queued behind the failed batch
                    self._batch.release(self._failed)
                    self._batch = None
                return
            self.records_written += len(batch.lines)
            self.fsyncs += 1
            batch.release()

    def _write_sync(self, data: bytes) -> None:
        _write_all(self._fd, data)
        os.fsync(self._fd)

    async def _drain(self) -> None:
        """Write out everything buffered (the context exit); never raises, failures are kept."""
        while self._batch is not None or (
            self._write_lock is not None and self._write_lock.locked()
        ):
            await self._write_pending()
        self._closed = True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _lock(fd: int, path: Path) -> None:
    if fcntl is None:  # pragma: no cover
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalBusyError(
            f"journal {path} is in use by another bulkcancel run; wait for it to finish"
        ) from None


def _fsync_directory(directory: Path) -> None:
    """Make the new file's directory entry durable, so the journal itself survives a crash."""
    # Best effort: some filesystems and platforms cannot open or fsync a directory, and the
    # records themselves are fsynced regardless.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
