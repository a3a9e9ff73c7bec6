"""The application: resolve -> confirm -> execute -> report -> exit code, and the signals.

The CLI (``cli.py``) only turns flags into a :class:`RunConfig` and :class:`_ui.Options`; the
demo (``_demo.py``) builds its own. Both come here. The promises kept here:

* once anything was sent, the report is written, whatever fails: a report path that fails at
  the end falls back to a file next to the journal or in the temporary directory (exit 6);
* a closed stdout (``--format jsonl | head -1``) ends stdout output only: the run finishes and
  exits with its own code;
* no exception group ever reaches the user: each known failure is one line and the contract's
  exit code; "internal error" (exit 1) is for bugs only.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from bulkcancel import _ui
from bulkcancel._config import RunConfig, check_writable
from bulkcancel._errors import ConfigError, CredentialsError, RecordingError, unwrap
from bulkcancel._inputs import NameInput
from bulkcancel._live import Progress, read_names_files
from bulkcancel._logging import event
from bulkcancel._models import OperationResult, StopReason
from bulkcancel._report import ReportWriter, check_report_path
from bulkcancel._run import BulkRun

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_CREDENTIALS = 4
EXIT_STOPPED_EARLY = 5
EXIT_RECORDING = 6
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

#: Stop reasons that are the whole run's fate, not one operation's, and their exit codes.
_STOP_EXIT = {
    StopReason.UNAUTHENTICATED: EXIT_CREDENTIALS,
    StopReason.UNREACHABLE: EXIT_STOPPED_EARLY,
    StopReason.WRONG_ENDPOINT: EXIT_STOPPED_EARLY,
    StopReason.JOURNAL_FAILED: EXIT_RECORDING,
}

#: The exit codes, as the CLI's help shows them (``\b``: click keeps the lines as they are).
EXIT_HELP = """\b
Exit codes:
  0   every target cancelled or completed anyway
  1   internal error (a bug)
  2   refused before sending: bad usage or input, no confirmation
  3   finished, some targets ended otherwise
  4   no usable credentials, or the server rejected them
  5   stopped early: the API could not be reached or the endpoint is wrong
  6   progress could not be recorded (journal or report failed mid-run;
      the report went to a fallback path named on stderr)
  130 interrupted by SIGINT (Ctrl-C); 143 terminated by SIGTERM
"""


def guard(body: Callable[[], int], *, debug: bool = False) -> int:
    """Run ``body``; map known failures to exit codes and anything else to 1, without a
    traceback unless ``debug``: a bug report needs the message, a user needs no stack."""
    try:
        return int(body())
    except BaseException as raised:  # every failure gets an exit code here
        error = unwrap(raised)
        if isinstance(error, KeyboardInterrupt):
            return EXIT_SIGNAL[signal.SIGINT]
        if not isinstance(error, Exception):
            raise
        code = exit_code_for(error)
        if code == EXIT_INTERNAL and debug:
            raise error from None
        _ui.error(describe(error))
        return code


def exit_code_for(error: Exception, *, sent: bool = False) -> int:
    """The contract's exit code for an error that ended the program (``sent``: after the first
    cancel, when the only files touched are the journal and the report's spool)."""
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    if isinstance(error, CredentialsError):
        return EXIT_CREDENTIALS
    if isinstance(error, RecordingError):
        return EXIT_RECORDING
    if isinstance(error, OSError):
        # Before sending, an unreadable names file, say: usage, not a bug. Once sending, a
        # failed write: the run could not record its progress.
        return EXIT_RECORDING if sent else EXIT_USAGE
    return EXIT_INTERNAL


def describe(error: Exception) -> str:
    """One line (or the few lines a credentials how-to needs) for a person."""
    if exit_code_for(error) == EXIT_INTERNAL:
        return f"internal error: {type(error).__name__}: {error} (run with --debug for details)"
    if isinstance(error, OSError) and not isinstance(error, RecordingError):
        return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
    return str(error)


@dataclass
class _State:
    """What the run went through, for the exit code and the report's metadata."""

    signals: list[int] = field(default_factory=list)
    failure: Exception | None = None
    stdout_closed: bool = False
    #: the number of targets, once resolved and confirmed (None while listing or asking)
    count: int | None = None


async def drive(
    config: RunConfig,
    names: Iterable[str],
    options: _ui.Options,
    *,
    names_files: Sequence[str] = (),
    observe: Callable[[OperationResult], None] | None = None,
    debug: bool = False,
) -> int:
    """Resolve, confirm, execute, report. Returns the exit code.

    ``names`` are plain names (arguments); ``names_files`` files (``-``: stdin) read through
    :mod:`bulkcancel._inputs` (lines, gcloud JSON arrays, JSON Lines).

    Raises (for :func:`guard`) only before anything was sent; from the first cancel on, every
    failure ends in a report and an exit code.
    """
    # Every file the run writes is checked before the first request: a report that cannot be
    # written after 10,000 cancels is a lost proof.
    # A device or pipe the user named (/dev/stdout) is written in place; anything else that is
    # not a regular file (a link, a directory) is refused here, before anything is sent.
    if options.report_path and not check_report_path(options.report_path):
        check_writable(options.report_path, "--report")
    if config.journal:
        check_writable(config.journal, "--journal")
    ui = _ui.Ui(options)
    writer = ReportWriter()
    state = _State()
    code: int | None = None
    try:
        async with BulkRun(config) as run:
            event(
                "run started",
                endpoint=config.endpoint,
                api_version=config.api_version,
                dry_run=config.dry_run,
                parents=list(config.parents),
                journal=config.journal,
            )
            inputs = read_names_files(names_files) if names_files else None
            code = await _drive_run(run, (names, inputs), writer, ui, options, state, observe)
            if code is None:
                return EXIT_USAGE  # refused: nothing was sent, so there is nothing to report
            code = _report(run, writer, ui, options, state, code)
            if state.failure is not None and debug and code == EXIT_INTERNAL:
                traceback.print_exception(state.failure)
    except Exception as raised:
        if code is None:
            raise  # before sending: guard() maps it
        # The report is out; closing the run failed (the journal's last write, say).
        error = unwrap(raised)
        if not isinstance(error, RecordingError | OSError):
            raise
        _ui.error(f"could not close the journal {config.journal}: {describe(error)}")
        return EXIT_RECORDING
    finally:
        ui.pause()  # a failure while listing must not leave the display (and cursor) hidden
        writer.close()
    return code


def _report(
    run: BulkRun,
    writer: ReportWriter,
    ui: _ui.Ui,
    options: _ui.Options,
    state: _State,
    code: int,
) -> int:
    """Write the report (or its fallback), show the summary, explain a stop. Returns the exit
    code, which becomes 6 when the report had to go to a fallback path."""
    meta = run.meta()
    if options.shard is not None:
        meta["shard"] = {"index": options.shard[0], "count": options.shard[1]}
    if state.signals:
        meta["stopped"] = StopReason.INTERRUPTED
    if state.failure is not None:
        meta["failure"] = describe(state.failure)
    if state.stdout_closed:
        meta["stdout_closed"] = True
    meta["exit_code"] = code
    fallback = None
    if options.report_path:
        fallback = _write_report(writer, meta, options.report_path, run)
        if fallback is not None:
            code = EXIT_RECORDING
    _guard_stdout(lambda: ui.finish(writer, meta), state)
    _explain(run, state, ui, writer)
    if fallback is not None:  # last, below the summary: the line a person must not miss
        ui.error(fallback)
    return code


async def _drive_run(
    run: BulkRun,
    given: tuple[Iterable[str], AsyncIterator[NameInput] | None],
    writer: ReportWriter,
    ui: _ui.Ui,
    options: _ui.Options,
    state: _State,
    observe: Callable[[OperationResult], None] | None,
) -> int | None:
    """The run under signal handling. None when refused before sending."""
    async with anyio.create_task_group() as tg:
        # Until the engine runs (listing, the prompt), a signal simply cancels the wait.
        before_sending = anyio.CancelScope()
        await tg.start(_watch_signals, run, ui, state, before_sending)
        refused: int | None = None
        progress = Progress(run, writer, state)
        if options.progress_every > 0:
            tg.start_soon(_progress_lines, ui, options.progress_every)
        with before_sending:
            ui.start(None, progress)  # the display shows the listing too
            count = await run.resolve(*given, max_selected=options.max_operations)
            if run.stop_reason is None:
                refused = await _confirm(run, count, ui, options)
            # (Only now: with the total known the display says "cancelling", and its frame
            # stayed above the question, as if sending had begun.)
            state.count = count
        if state.signals or before_sending.cancel_called:
            # Interrupted while listing or asking: nothing was sent; report what was found.
            await _report_unsent(run, writer)
        elif refused is not None:
            ui.pause()
            tg.cancel_scope.cancel()
            return None
        else:
            await _execute(run, count, writer, ui, state, observe, progress)
        tg.cancel_scope.cancel()
    return _exit_code(run, writer, state)


async def _progress_lines(ui: _ui.Ui, every: float) -> None:
    """A progress line every ``every`` seconds where no live display is drawn (see
    :meth:`_ui.Ui.progress`), until the run's task group ends."""
    while True:
        await anyio.sleep(every)
        ui.progress()


async def _watch_signals(
    run: BulkRun,
    ui: _ui.Ui,
    state: _State,
    before_sending: anyio.CancelScope,
    *,
    task_status: TaskStatus[None],
) -> None:
    if threading.current_thread() is not threading.main_thread():
        task_status.started()
        return  # only the main thread may handle signals (e.g. drive() in a test)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            state.signals.append(signum)
            engine = run.engine
            if len(state.signals) == 1:
                ui.stopping(run.config.grace)
                before_sending.cancel()
                if engine is not None:
                    engine.stop()
            else:
                ui.aborting()
                if engine is not None:
                    engine.abort()


def _exit_code(run: BulkRun, writer: ReportWriter, state: _State) -> int:
    """The exit-code policy, most telling first: a signal, a failure, a systemic stop, then
    whether every target ended well."""
    if state.signals:
        return EXIT_SIGNAL[signal.Signals(state.signals[0])]
    if state.failure is not None:
        return exit_code_for(state.failure, sent=True)
    stop = run.stop_reason
    if stop is not None and stop in _STOP_EXIT:
        return _STOP_EXIT[stop]
    if stop is StopReason.INTERRUPTED:  # Engine.stop() without a signal: not via the CLI
        return EXIT_SIGNAL[signal.SIGINT]
    return EXIT_OK if _finished_well(writer, dry_run=run.config.dry_run) else EXIT_INCOMPLETE


#: What a person reads when the run stopped as a whole: {where} is the endpoint and API
#: version, {seen} what the client saw.
_STOP_LINES = {
    StopReason.UNAUTHENTICATED: "{where} rejected the credentials{seen}: stopped",
    StopReason.UNREACHABLE: "stopped early: {where} could not be reached{seen}",
    StopReason.WRONG_ENDPOINT: (
        "stopped early: {where} does not answer like the Operations API{seen}; "
        "check --endpoint and --api-version"
    ),
    StopReason.JOURNAL_FAILED: "stopped: the journal {journal} could not be written{seen}",
}


def _explain(run: BulkRun, state: _State, ui: _ui.Ui, writer: ReportWriter) -> None:
    """One line on stderr for a run that stopped on its own."""
    if state.signals:
        return
    if state.failure is not None:
        ui.error(describe(state.failure))
        return
    drain = run.drain
    if drain is not None and drain.status.over_limit:
        ui.error(
            f"--max-operations {run.config.max_operations} reached while draining: "
            f"{drain.status.over_limit} operation(s) that appeared were not cancelled "
            "(not_attempted, reason max_operations)"
        )
    stop = run.stop_reason
    line = _STOP_LINES.get(stop) if stop is not None else None
    if line is None:
        return
    seen = run.fatal_detail
    text = line.format(
        where=f"{run.config.endpoint.rstrip('/')}/{run.config.api_version}",
        seen=f" ({seen})" if seen else "",
        journal=run.config.journal,
    )
    ui.error(f"{text}; {writer.totals['not_attempted']} target(s) not attempted")


def _finished_well(writer: ReportWriter, *, dry_run: bool) -> bool:
    """Exit 0 or 3: every target cancelled or completed anyway; for a dry run, no target that
    would have failed before sending (an invalid name, a listing that failed)."""
    if dry_run:
        return writer.totals["invalid"] == 0 and writer.totals["error"] == 0
    return writer.ok


async def _report_unsent(run: BulkRun, writer: ReportWriter) -> None:
    """Interrupted before anything was sent: every target found so far is not attempted."""

    async def emit(result: OperationResult) -> None:
        if result.details.get("reason") == "dry_run":
            result.details["reason"] = "interrupted"
        writer.add(result)

    run.config = replace(run.config, dry_run=True)
    await run.execute(emit)


async def _confirm(run: BulkRun, count: int, ui: _ui.Ui, options: _ui.Options) -> int | None:
    """None to go ahead; otherwise the exit code of a refusal (nothing has been sent)."""
    if options.max_operations is not None and count > options.max_operations:
        ui.error(
            f"{count} operations selected, more than --max-operations {options.max_operations}: "
            "nothing sent"
        )
        return EXIT_USAGE
    if not run.config.dry_run and not options.yes and count:
        ui.pause()  # the live display would draw over the question
        answer = await _ui.confirm(
            count,
            _sample(run),
            run.config.endpoint,
            identity=run.identity_text(),
            places=run.places,
        )
        if answer is None:
            ui.error("refusing to cancel without confirmation: no terminal to ask on; pass --yes")
            return EXIT_USAGE
        if not answer:
            ui.error("not confirmed: nothing sent")
            return EXIT_USAGE
    return None


def _sample(run: BulkRun) -> list[str]:
    actionable = (t.name for t in run.spool if t.result is None)
    return list(itertools.islice(actionable, 5))


async def _execute(
    run: BulkRun,
    count: int,
    writer: ReportWriter,
    ui: _ui.Ui,
    state: _State,
    observe: Callable[[OperationResult], None] | None,
    progress: Progress,
) -> None:
    """Send and reconcile. A failure of the run is kept for the exit code, not raised: the
    targets are all reported by then (``BulkRun.execute`` sees to it)."""
    ui.start(count, progress)

    async def emit(result: OperationResult) -> None:
        line = writer.add(result)
        _guard_stdout(lambda: ui.advance(line, writer.totals), state)
        if observe is not None:
            observe(result)

    try:
        await run.execute(emit)
    except Exception as exc:  # kept for the exit code: the report comes first
        state.failure = exc


def _guard_stdout(write: Callable[[], None], state: _State) -> None:
    """Run a write that may touch stdout; a reader that went away ends stdout output only."""
    try:
        write()
    except BrokenPipeError:
        state.stdout_closed = True
        _detach_stdout()


def _detach_stdout() -> None:
    """Point stdout at /dev/null: later writes (and the interpreter's flush at exit, which would
    print "Exception ignored ... BrokenPipeError" and exit 120) go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (an in-process test runner)
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives to exit
    finally:
        os.close(devnull)


def _write_report(
    writer: ReportWriter, meta: dict[str, Any], path: str, run: BulkRun
) -> str | None:
    """Write the report where asked; if that fails now (the directory was removed, the disk
    filled), write it to a fallback. Returns None, or the line that names the fallback."""
    try:
        writer.write_file(path, meta)
    except OSError as exc:
        why = exc.strerror or str(exc)
    else:
        return None
    meta["exit_code"] = EXIT_RECORDING
    meta["report_fallback"] = {"wanted": path, "error": why}
    for directory in _fallback_dirs(run):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        fallback = directory / f"bulkcancel-report-{stamp}-{os.getpid()}.json"
        try:
            writer.write_file(fallback, meta)
        except OSError:
            continue
        return f"could not write the report to {path} ({why}); it is in {fallback}"
    return f"could not write the report to {path} ({why}), nor to a fallback; " + (
        "the journal has every outcome" if run.config.journal else "the report is lost"
    )


def _fallback_dirs(run: BulkRun) -> list[Path]:
    dirs: list[Path] = []
    if run.config.journal:
        dirs.append(Path(run.config.journal).resolve().parent)
    dirs.append(Path(tempfile.gettempdir()))
    return dirs
