"""The journal writer: durable, append-only progress of a run, group-committed.

What the records mean, how a rerun replays them and what counts as corruption lives in
:mod:`bulkcancel._journal_format`; this module gets them onto the disk.

**Durability.** ``intent()`` returns only once its record is written and fsynced, so a cancel
is never sent without the journal knowing it might have gone out. Answers and outcomes do not
wait: losing one in a crash is safe (the name replays as in flight, or as accepted, and the
rerun sends again or reconciles). Only whole lines are written, in order, each batch with one
``write`` and one ``fsync``, so a crash leaves at most a torn last line, which opening repairs.

**Throughput.** Durability must not cost throughput, so writes are group-committed: every
record goes into an in-memory batch, and one flusher task writes and fsyncs the batch in a
worker thread when it is full or its window has passed, releasing every ``intent()`` that
waited on it at once.

**Failures.** When a write or fsync fails mid-run (disk full, I/O error), or the file was
removed or replaced under the run, the journal is finished: the file may end in a torn line,
and appending more would turn it into corruption in the middle. Every waiting ``intent()`` is
released with a :class:`~bulkcancel._errors.JournalError`, and every later ``intent()``,
``answer()``, ``outcome()`` and ``flush()`` raises the same error at once, so a caller can
stop sending, settle what it has and keep calling without hanging. The flusher task never
raises: its failures only ever reach callers as that one ``JournalError``.

**The file.** Created 0600, and forced to 0600 if it already existed (it holds operation names
and servers' error messages). Only a regular file is used: a directory, FIFO or device is
refused, and so is a symbolic link (as the last path component), since following one would
write wherever the link points; give the real path. An advisory lock keeps a second run out.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from bulkcancel._errors import ConfigError, JournalError
from bulkcancel._journal_format import (
    JOURNAL_VERSION,
    JournalCorruptError,
    JournalState,
    Status,
    check_identity,
    encode,
    header,
    normalise_identity,
    read_journal,
    replay,
    settles,
)
from bulkcancel._models import OperationResult

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
    "Status",
    "Syscalls",
    "read_journal",
    "settles",
]


class JournalBusyError(ConfigError):
    """Another run holds the journal: two writers would interleave and redo each other's work."""


class Syscalls:
    """The system calls that put a batch on the disk: the seam where tests inject failures.

    A subclass may raise ``OSError`` from either, as the kernel would when the disk is full.
    """

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


_OS = Syscalls()


@dataclass(eq=False)
class _Batch:
    """Records that become durable together, with one write and one fsync."""

    lines: list[bytes]
    started: float
    #: Created only when an intent() waits on this batch: answers and outcomes never wait.
    durable: anyio.Event | None = None
    error: JournalError | None = None

    def release(self, error: JournalError | None = None) -> None:
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
        syscalls: Syscalls,
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
        self._syscalls = syscalls
        self._batch: _Batch | None = None
        self._kick: anyio.Event | None = None
        self._write_lock: anyio.Lock | None = None
        self._failed: JournalError | None = None
        self._closed = False

    @property
    def failed(self) -> JournalError | None:
        """The error that finished this journal, or None while it is healthy."""
        return self._failed

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
        syscalls: Syscalls = _OS,
    ) -> AsyncIterator[Journal]:
        """Open (or create) a journal, replay it, and append to it until the block ends.

        Raises :class:`ConfigError` (one line) when the path cannot be used: not a regular
        file, a symbolic link, unreadable, another run's journal, corrupt, or locked.

        On exit, normal or not (an exception, a cancellation), everything buffered is written
        and fsynced before the file is closed: the records of an interrupted run are exactly
        what the rerun needs. If a write failed, the :class:`JournalError` is raised here too
        (unless the block is already raising), so a run never reports success over a journal
        it lost.
        """
        if not window >= 0 or math.isinf(window):
            raise ValueError(f"window must be a finite number of seconds >= 0, not {window!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch!r}")
        wanted = normalise_identity(identity)
        journal = await anyio.to_thread.run_sync(
            partial(
                cls._open_sync,
                Path(os.fspath(path)),
                wanted,
                window=window,
                max_batch=max_batch,
                syscalls=syscalls,
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
        cls,
        path: Path,
        wanted: dict[str, Any],
        *,
        window: float,
        max_batch: int,
        syscalls: Syscalls,
    ) -> Journal:
        """Open, lock, replay, repair and (for a new file) write the header. Runs in a thread."""
        fd = _open_regular(path)
        try:
            _lock(fd, path)
            try:
                if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
                    os.fchmod(fd, 0o600)  # names and error messages are nobody else's
                os.lseek(fd, 0, os.SEEK_SET)
                # Read through the descriptor just checked and locked, not the path again.
                with open(os.dup(fd), "rb") as stream:
                    found = replay(stream, str(path))
                if found.identity is not None:
                    check_identity(path, found.identity, wanted)
                if found.good_length < found.size:
                    # A crash cut the last line short: drop it, so appends start on a line
                    # boundary.
                    os.ftruncate(fd, found.good_length)
                    syscalls.fsync(fd)
                if found.identity is None:
                    _write_all(syscalls, fd, header(wanted))
                    syscalls.fsync(fd)
                    _fsync_directory(path.parent)
            except OSError as exc:
                # Nothing was sent yet: the run is refused, with one line.
                raise ConfigError(f"journal {path}: cannot prepare it: {_why(exc)}") from None
            return cls(
                path,
                fd,
                found.identity if found.identity is not None else wanted,
                found.state,
                window=window,
                max_batch=max_batch,
                syscalls=syscalls,
            )
        except BaseException:
            os.close(fd)
            raise

    # -- appending -------------------------------------------------------------------------

    async def intent(self, name: str) -> None:
        """Record that a cancel for ``name`` is about to be sent; returns once it is durable.

        Raises :class:`JournalError` if the batch could not be written: the caller must then
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
        Raises :class:`JournalError` once the journal has failed.
        """
        record: dict[str, Any] = {"a": name, "ok": accepted}
        if detail:
            record["d"] = dict(detail)
        self._append(record)

    def outcome(self, result: OperationResult) -> None:
        """Record how the operation ended. Does not wait: it rides the next batch.

        Raises :class:`JournalError` once the journal has failed.
        """
        self._append({"o": result.to_json()})

    async def flush(self) -> None:
        """Make every record buffered so far durable, including a batch being written now.

        Raises :class:`JournalError` if that, or any earlier write, failed.
        """
        self._check_usable()
        await self._write_pending()
        if self._failed is not None:
            raise self._failed

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed or self._write_lock is None:
            raise RuntimeError(f"journal {self.path} is not open")

    def _append(self, record: Mapping[str, Any]) -> _Batch:
        self._check_usable()
        line = encode(record)  # a value JSON cannot hold fails here, at the caller
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
        """Write a batch when it is full or its window has passed, one batch at a time.

        Never raises: an exception here would leave intent() waiters hanging and reach the
        caller wrapped in an ExceptionGroup. Anything unexpected finishes the journal instead.
        """
        try:
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
        except Exception as exc:
            self._fail(_failure(self.path, "flush", exc))

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
            if self._failed is None:
                data = b"".join(batch.lines)
                # Shielded: a cancelled run must still learn whether its records reached the
                # disk, and the thread cannot be stopped anyway.
                with anyio.CancelScope(shield=True):
                    try:
                        await anyio.to_thread.run_sync(self._write_sync, data)
                    except JournalError as exc:
                        self._failed = exc
                    except Exception as exc:
                        self._failed = _failure(self.path, "write", exc)
            if self._failed is not None:
                batch.release(self._failed)
                self._fail(self._failed)  # waiters that queued behind the failed batch
                return
            self.records_written += len(batch.lines)
            self.fsyncs += 1
            batch.release()

    def _fail(self, error: JournalError) -> None:
        """Finish the journal: keep the first error, release whoever still waits."""
        if self._failed is None:
            self._failed = error
        if self._batch is not None:
            self._batch.release(self._failed)
            self._batch = None

    def _write_sync(self, data: bytes) -> None:
        try:
            _write_all(self._syscalls, self._fd, data)
        except OSError as exc:
            raise _failure(self.path, "write", exc) from exc
        try:
            self._syscalls.fsync(self._fd)
        except OSError as exc:
            raise _failure(self.path, "sync", exc) from exc
        if os.fstat(self._fd).st_nlink == 0:
            # Still a valid descriptor, but no rerun could ever find what it writes.
            raise JournalError(
                f"journal {self.path} was removed or replaced while the run was writing it"
            )

    async def _drain(self) -> None:
        """Write out everything buffered (the context exit); never raises, failures are kept."""
        while self._batch is not None or (
            self._write_lock is not None and self._write_lock.locked()
        ):
            await self._write_pending()
        self._closed = True


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _failure(path: Path, step: str, exc: BaseException) -> JournalError:
    error = JournalError(f"journal {path}: {step} failed: {_why(exc)}")
    error.__cause__ = exc
    return error


def _open_regular(path: Path) -> int:
    """Open the journal for appending, refusing anything but a regular file (one line each).

    Checked before opening (a FIFO would block, a device open can have side effects) and again
    on the open descriptor (the path may change in between); ``O_NOFOLLOW`` refuses a symlink.
    """
    with contextlib.suppress(FileNotFoundError):
        _refuse_unless_regular(path, os.lstat(path).st_mode)
    flags = (
        os.O_RDWR
        | os.O_CREAT
        | os.O_APPEND
        | os.O_NOCTTY
        | os.O_NONBLOCK  # a FIFO swapped in after the check must not block the open
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        fd = os.open(path, flags, 0o600)  # 0600: names and error messages are nobody else's
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_regular(path, "a symbolic link") from None
        if exc.errno == errno.EISDIR:
            raise _not_regular(path, "a directory") from None
        raise ConfigError(f"journal {path}: cannot open it: {_why(exc)}") from None
    try:
        _refuse_unless_regular(path, os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_unless_regular(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISLNK(mode):
        raise _not_regular(path, "a symbolic link")
    if stat.S_ISDIR(mode):
        raise _not_regular(path, "a directory")
    # A FIFO would block or hand records to a reader; a device cannot be fsynced or truncated.
    raise _not_regular(path, "not a regular file")


def _not_regular(path: Path, what: str) -> ConfigError:
    return ConfigError(f"journal {path} is {what}; give the path of a regular file")


def _write_all(syscalls: Syscalls, fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = syscalls.write(fd, view)
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
