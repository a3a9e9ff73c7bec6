"""A journal that fails mid-run: typed errors at the right call, released waiters, no hang.

Failures are injected through the writer's ``Syscalls`` seam (a disk that fills after N
writes), by removing the file under a run, and by a real kernel limit in a child process
(``RLIMIT_FSIZE``: the same short write and ``EFBIG`` a full disk gives, and it works as root).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from bulkcancel._errors import JournalError, RecordingError
from bulkcancel._journal import Journal, Syscalls, read_journal
from bulkcancel._models import OperationResult, Outcome

ID = {"endpoint": "https://clouddeploy.googleapis.com", "api_version": "v1"}
NEVER = 60.0


def op(i: int | str) -> str:
    return f"projects/p/locations/l/operations/op-{i}"


class FillingDisk(Syscalls):
    """A disk with room for ``writes`` more writes (or fsyncs): then ``errno_`` on each."""

    def __init__(self, *, writes: int = 10**9, fsyncs: int = 10**9, errno_: int = errno.ENOSPC):
        self.writes_left = writes
        self.fsyncs_left = fsyncs
        self.errno = errno_
        self.calls = 0

    def write(self, fd: int, data: memoryview) -> int:
        self.calls += 1
        if self.writes_left <= 0:
            raise OSError(self.errno, os.strerror(self.errno))
        self.writes_left -= 1
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self.calls += 1
        if self.fsyncs_left <= 0:
            raise OSError(self.errno, os.strerror(self.errno))
        self.fsyncs_left -= 1
        super().fsync(fd)


@pytest.mark.parametrize(
    ("disk", "says"),
    [
        (lambda: FillingDisk(writes=1 + 3), "write failed: No space left on device"),
        (lambda: FillingDisk(fsyncs=1 + 3, errno_=errno.EIO), "sync failed: Input/output error"),
    ],
)
async def test_fails_after_n_writes_at_the_right_call_and_stays_failed(
    tmp_path: Path, disk: Callable[[], FillingDisk], says: str
) -> None:
    """The header plus three batches succeed; the fourth batch's intent gets JournalError."""
    path = tmp_path / "j.jsonl"
    syscalls = disk()
    failures: list[JournalError] = []

    async def run() -> None:
        async with Journal.open(path, ID, window=0, syscalls=syscalls) as journal:
            for i in range(3):
                journal.answer(op(f"before-{i}"), True)
                await journal.intent(op(i))  # one caller, window 0: one batch per intent
            assert journal.failed is None
            journal.answer(op(3), True)
            with anyio.fail_after(5), pytest.raises(JournalError, match=says) as first:
                await journal.intent(op(3))
            failure = first.value
            failures.append(failure)
            assert isinstance(failure, RecordingError)
            assert str(path) in str(failure) and "\n" not in str(failure)
            assert isinstance(failure.__cause__, OSError)
            assert journal.failed is failure
            # Safe to keep calling: every call raises the same error at once, none waits.
            calls = syscalls.calls
            with anyio.fail_after(5):
                for attempt in (
                    lambda: journal.answer(op(9), True),
                    lambda: journal.outcome(OperationResult(op(9), Outcome.CANCELLED)),
                ):
                    with pytest.raises(JournalError) as again:
                        attempt()
                    assert again.value is failure
                with pytest.raises(JournalError) as again:
                    await journal.intent(op(9))
                assert again.value is failure
                with pytest.raises(JournalError) as again:
                    await journal.flush()
                assert again.value is failure
            assert syscalls.calls == calls  # nothing more was written after the failure

    with pytest.raises(JournalError, match=says) as at_exit:
        await run()
    failure = failures[0]
    assert at_exit.value is failure
    # What reached the disk replays: the three durable intents with their answers. A batch
    # whose fsync failed may still be in the file: in flight only means "may send again".
    state = read_journal(path)[1]
    durable = {op(i) for i in range(3)}
    assert durable <= state.in_flight <= durable | {op(3)}
    assert {op(f"before-{i}") for i in range(3)} <= state.accepted


async def test_every_waiter_is_released_with_the_error_and_nothing_hangs(
    tmp_path: Path,
) -> None:
    """Many intents waiting on the failing batch, and more queued behind it, all get the error;
    the flusher raises nothing of its own (no ExceptionGroup reaches the caller)."""
    path = tmp_path / "j.jsonl"
    syscalls = FillingDisk(writes=1 + 2)
    outcomes: dict[str, str] = {}

    async def worker(journal: Journal, w: int) -> None:
        for k in range(50):
            try:
                await journal.intent(op(f"{w}-{k}"))
            except JournalError:
                outcomes[f"{w}-{k}"] = "failed"
                return
            outcomes[f"{w}-{k}"] = "durable"

    async def run() -> None:
        async with (
            Journal.open(path, ID, window=0.001, syscalls=syscalls) as journal,
            anyio.create_task_group() as tg,
        ):
            for w in range(32):
                tg.start_soon(worker, journal, w)

    with anyio.fail_after(10), pytest.raises(JournalError, match="No space left"):
        await run()
    assert list(outcomes.values()).count("failed") == 32  # every worker stopped by the error
    durable = {op(key) for key, how in outcomes.items() if how == "durable"}
    assert durable, "failed before any batch: the test proves nothing"
    assert read_journal(path)[1].in_flight == durable


async def test_a_waiter_queued_behind_a_failing_batch_is_released(tmp_path: Path) -> None:
    """An intent that joined the next batch while the failing one was being written."""
    path = tmp_path / "j.jsonl"
    entered, proceed = anyio.Event(), anyio.Event()
    token = anyio.lowlevel.current_token()

    class SlowThenFull(Syscalls):
        def write(self, fd: int, data: memoryview) -> int:
            if b'"i"' not in bytes(data):
                return super().write(fd, data)  # the header
            anyio.from_thread.run_sync(entered.set, token=token)
            anyio.from_thread.run(proceed.wait, token=token)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    errors: list[JournalError] = []

    async def intent(journal: Journal, name: str) -> None:
        try:
            await journal.intent(name)
        except JournalError as exc:
            errors.append(exc)

    async def run() -> None:
        async with (
            Journal.open(path, ID, window=0, syscalls=SlowThenFull()) as journal,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(intent, journal, op(1))
            await entered.wait()  # the first batch is in write()
            tg.start_soon(intent, journal, op(2))  # rides the next batch
            await anyio.wait_all_tasks_blocked()
            proceed.set()

    with anyio.fail_after(5), pytest.raises(JournalError):
        await run()
    assert len(errors) == 2 and errors[0] is errors[1]


async def test_a_journal_removed_mid_run_fails_typed(tmp_path: Path) -> None:
    """An unlinked file still takes writes, but no rerun could find them: that is a failure."""
    path = tmp_path / "j.jsonl"

    async def run() -> None:
        async with Journal.open(path, ID, window=0) as journal:
            await journal.intent(op(1))
            path.unlink()
            with pytest.raises(JournalError, match="removed or replaced"):
                await journal.intent(op(2))

    with pytest.raises(JournalError, match="removed or replaced") as at_exit:
        await run()
    assert str(path) in str(at_exit.value)


async def test_a_journal_replaced_mid_run_fails_typed(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"

    async def run() -> None:
        async with Journal.open(path, ID, window=0) as journal:
            await journal.intent(op(1))
            other = tmp_path / "other"
            other.write_bytes(b"")
            other.replace(path)
            journal.answer(op(1), True)
            await journal.flush()

    with pytest.raises(JournalError, match="removed or replaced"):
        await run()
    assert path.read_bytes() == b""  # the replacement was not written into


async def test_the_bodys_own_error_is_not_masked(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"

    async def run() -> None:
        async with Journal.open(
            path, ID, window=NEVER, syscalls=FillingDisk(fsyncs=1, errno_=errno.EIO)
        ) as journal:
            journal.answer(op(1), True)
            with pytest.raises(JournalError, match="Input/output"):
                await journal.flush()
            raise KeyError("the body's own")

    with pytest.raises(KeyError, match="the body's own"):
        await run()


async def test_a_full_disk_at_open_refuses_the_run_in_one_line(tmp_path: Path) -> None:
    """Nothing was sent yet, so a header that cannot be written is a refusal, not exit 6."""
    from bulkcancel._errors import ConfigError

    path = tmp_path / "j.jsonl"
    with pytest.raises(ConfigError, match="cannot prepare it: No space left on device"):
        async with Journal.open(path, ID, syscalls=FillingDisk(writes=0)):
            pass


def test_a_real_file_size_limit_fails_typed_and_the_journal_resumes(tmp_path: Path) -> None:
    """The kernel cuts a write short, then refuses the next (EFBIG), in a child process with
    RLIMIT_FSIZE: what a full disk does. Every intent that returned is on disk, the torn tail
    is repaired on reopen, and the run resumes from the records that made it."""
    path = tmp_path / "j.jsonl"
    script = textwrap.dedent(
        """
        import json, resource, signal, sys, anyio
        from bulkcancel._errors import JournalError
        from bulkcancel._journal import Journal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of dying
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        durable, failed = [], []

        async def main():
            async with Journal.open(sys.argv[1], {"endpoint": "x"}, window=0.001) as j:
                async def worker(w):
                    for k in range(10**4):
                        name = f"projects/p/locations/l/operations/w{w}-{k}"
                        try:
                            await j.intent(name)
                        except JournalError as exc:
                            failed.append(str(exc))
                            return
                        durable.append(name)
                        j.answer(name, True)
                async with anyio.create_task_group() as tg:
                    for w in range(8):
                        tg.start_soon(worker, w)

        try:
            anyio.run(main)
            at_exit = None
        except JournalError as exc:
            at_exit = str(exc)
        print(json.dumps({"durable": durable, "failed": failed, "at_exit": at_exit}))
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        cwd=Path(__file__).parent.parent,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode()
    assert b"Traceback" not in child.stderr
    seen = json.loads(child.stdout)
    assert len(seen["failed"]) == 8  # every worker got the typed error, none hung
    assert all("File too large" in message for message in seen["failed"])
    assert seen["at_exit"] is not None and "File too large" in seen["at_exit"]
    assert path.stat().st_size <= 4096
    assert seen["durable"], "failed before any batch: the test proves nothing"

    async def resume() -> None:
        async with Journal.open(path, {"endpoint": "x"}) as journal:
            for name in seen["durable"]:
                assert journal.state.status(name) in ("in_flight", "accepted")
            await journal.intent(op("after"))

    anyio.run(resume)
    assert read_journal(path)[1].status(op("after")) == "in_flight"
