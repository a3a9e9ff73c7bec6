"""What people see: prompt, progress, tables — the CLI's presentation half.

Stdout carries data only (``--format json|jsonl``), whatever stderr is: everything for people
goes to stderr through rich, and the live display never redirects stdout or stderr (rich's
default would send the JSON Lines records to the terminal instead of down the pipe). The live
display appears only when stderr is a terminal.

The display *pulls*: the app layer hands :meth:`Ui.start` a callable returning a
:class:`ProgressSnapshot`, and rich calls it on every refresh; nothing pushes counters into the
UI. Every line is packed by words to the console's width, so nothing is cut mid-word at 80
columns. With ``--log-format json`` nothing is drawn: events go to the ``bulkcancel`` logger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TextIO

import anyio
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bulkcancel._logging import event
from bulkcancel._models import SUCCESS_OUTCOMES, Outcome
from bulkcancel._report import ReportWriter, Summary, summarize, to_csv
from bulkcancel._views import (
    exit_lines,
    running_table,
    selection_line,
    short_reason,
)

__all__ = [
    "SUCCESS_KEYS",
    "Options",
    "Phase",
    "ProgressSnapshot",
    "ProgressView",
    "Ui",
    "confirm",
    "error",
    "info",
    "print_summary",
    "prompt_text",
    "render_saved",
    "summary_table",
]

SUCCESS_KEYS = frozenset(o.value for o in SUCCESS_OUTCOMES)
_STYLE = {
    "cancelled": "green",
    "completed_anyway": "cyan",
    "unsupported": "yellow",
    "not_found": "yellow",
    "permission_denied": "red",
    "still_running": "magenta",
    "error": "red",
    "invalid": "red",
    "not_attempted": "dim",
}
_DEADLINE_REASON = "not done when the reconcile deadline passed"

_stderr = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    _stderr.print(f"[bold red]bulkcancel:[/] {escape(message)}", markup=True, soft_wrap=True)


def info(message: str) -> None:
    _stderr.print(message, highlight=False, soft_wrap=True, markup=False)


class Phase(StrEnum):
    """Where a run is; the live display names it."""

    LISTING = "listing"
    CANCELLING = "cancelling"
    RECONCILING = "reconciling"
    #: a drain (``--until-quiet``) between re-listings, nothing in flight
    WATCHING = "watching"
    STOPPING = "stopping"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """The run's counters at one moment, as the live display reads them.

    ``listed`` counts the names found so far (given and listed), ``sent`` the cancels sent and
    answered, ``accepted`` the cancels the server accepted, ``settled`` the targets with a final
    outcome. ``rate`` is recent requests per
    second (all calls); ``throttled`` counts 429 answers so far, and ``throttling`` says the
    pacer is slowing down right now.
    """

    phase: str = Phase.CANCELLING
    total: int | None = None
    listed: int = 0
    sent: int = 0
    accepted: int = 0
    settled: int = 0
    rate: float = 0.0
    throttled: int = 0
    throttling: bool = False
    dry_run: bool = False
    totals: Mapping[str, int] = field(default_factory=dict)
    #: a drain: seconds without anything new so far, of ``until_quiet`` (None: no drain)
    quiet_for: float | None = None
    until_quiet: float | None = None


SnapshotFn = Callable[[], ProgressSnapshot]


def _pack(items: Sequence[Text], width: int, sep: str = "  ") -> list[Text]:
    """Items side by side, as many as fit in ``width`` per line; an item is never split."""
    lines: list[Text] = []
    line = Text()
    for item in items:
        if line.cell_len and line.cell_len + len(sep) + item.cell_len > width:
            lines.append(line)
            line = Text()
        if line.cell_len:
            line.append(sep)
        line.append_text(item)
    if line.cell_len:
        lines.append(line)
    return lines


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def render_progress(snap: ProgressSnapshot, elapsed: float, width: int) -> Group:
    """The live display: phase, bar, counts; then the request figures; then outcomes so far."""
    label = Text()
    if snap.dry_run:
        label.append(" DRY RUN ", style="bold black on yellow")
        label.append(" ")
    phase_style = "bold yellow" if snap.phase == Phase.STOPPING else "bold"
    label.append(str(snap.phase), style=phase_style)
    if snap.phase == Phase.LISTING or snap.total is None:
        counts = f"{snap.listed} found"
        bar = ProgressBar(total=None, pulse=True)
    else:
        counts = f"{snap.settled}/{snap.total} settled"
        bar = ProgressBar(total=max(snap.total, 1), completed=snap.settled)
    head = Table.grid(expand=True, padding=(0, 1))
    head.add_column(no_wrap=True)
    head.add_column(ratio=1)
    head.add_column(no_wrap=True, justify="right")
    head.add_column(no_wrap=True, justify="right")
    head.add_row(label, bar, counts, Text(_clock(elapsed), style="dim"))
    if snap.dry_run:
        figures = [Text("dry run: no cancel is sent")]
    else:
        figures = [Text(text, style=style) for text, style in _figures(snap, so_far=True)]
    outcomes = [Text(text, style=style) for text, style in _outcomes(snap)]
    return Group(head, *_pack(figures, width), *_pack(outcomes, width))


def progress_line(snap: ProgressSnapshot, elapsed: float) -> str:
    """The live display's figures on one line, for a log (stderr not a terminal)."""
    counts = f"{snap.settled}/{snap.total} settled"
    if snap.phase == Phase.LISTING or snap.total is None:
        counts = f"{snap.listed} found"
    parts = [f"{'DRY RUN ' if snap.dry_run else ''}{snap.phase}", counts]
    if not snap.dry_run:
        parts += [text for text, _ in _figures(snap)]
    parts += [text for text, _ in _outcomes(snap)]
    return f"progress {_clock(elapsed)}: " + ", ".join(parts)


def _figures(snap: ProgressSnapshot, *, so_far: bool = False) -> list[tuple[str, str]]:
    """The request figures (text, style) of a run that sends: a drain's quiet time (with the
    cancels so far when ``so_far``: the live display), sent, accepted, the rate, and the
    throttling."""
    figures = [(f"sent {snap.sent}", ""), (f"accepted {snap.accepted}", "")]
    if snap.quiet_for is not None and snap.until_quiet is not None:
        quiet = f"quiet for {min(snap.quiet_for, snap.until_quiet):.0f}s of {snap.until_quiet:g}s"
        if so_far:
            quiet += f", {snap.totals.get('cancelled', 0)} cancelled so far"
        figures.insert(0, (quiet, ""))
    figures.append((f"{snap.rate:.0f} req/s", ""))
    if snap.throttled or snap.throttling:
        note = f"{snap.throttled} throttled"
        note += " (slowing down)" if snap.throttling else ""
        figures.append((note, "yellow"))
    return figures


def _outcomes(snap: ProgressSnapshot) -> list[tuple[str, str]]:
    """The outcomes so far (text, style), those with a count."""
    return [(f"{key} {count}", _STYLE.get(key, "")) for key, count in snap.totals.items() if count]


class ProgressView:
    """A rich renderable that asks ``snapshot`` for the counters each time it is drawn."""

    def __init__(self, snapshot: SnapshotFn, *, clock: Callable[[], float] = time.monotonic):
        self._snapshot = snapshot
        self._clock = clock
        self._started = clock()
        #: the run is over: the last frame says "done" (or still "stopping"), and nothing is
        #: slowing down any more (a 429 in the last seconds kept "(slowing down)" on screen)
        self.done = False

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        elapsed = self._clock() - self._started
        snap = self._snapshot()
        if self.done:
            phase = snap.phase if snap.phase == Phase.STOPPING else Phase.DONE
            snap = replace(snap, phase=phase, throttling=False)
        yield render_progress(snap, elapsed, options.max_width)


@dataclass(frozen=True, slots=True)
class Options:
    out_format: str = "table"
    report_path: str | None = None
    yes: bool = False
    max_operations: int | None = None
    quiet: bool = False
    shard: tuple[int, int] | None = None
    dry_run: bool = False
    #: "json": nothing is drawn; events go to the ``bulkcancel`` logger (see _logging).
    log_format: str = "text"
    #: ``--format jsonl`` ends with ``{"summary": {...totals, "exit_code": N}}`` (the contract).
    jsonl_summary: bool = True
    #: seconds between progress lines where no live display is drawn (stderr not a terminal,
    #: or JSON logs): a job's log shows a long run moving; 0 for none
    progress_every: float = 30.0


class Ui:
    """One run's presentation: live progress, records on stdout, the final table."""

    def __init__(
        self,
        options: Options,
        *,
        console: Console | None = None,
        stdout: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._opt = options
        self._console = console or _stderr
        self._stdout = stdout
        self._clock = clock
        self._live: Live | None = None
        #: what :meth:`progress` reports from, once :meth:`start` found no live display to draw
        self._lines: SnapshotFn | None = None
        self._started: float | None = None
        self._total: int | None = None
        self._settled = 0
        self._totals: dict[str, int] = {}

    @property
    def _out(self) -> TextIO:
        return self._stdout or sys.stdout

    @property
    def _json_logs(self) -> bool:
        return self._opt.log_format == "json"

    def _own_snapshot(self) -> ProgressSnapshot:
        """Used when the caller gives no snapshot: what this Ui has been told itself."""
        return ProgressSnapshot(
            phase=Phase.CANCELLING,
            total=self._total,
            settled=self._settled,
            dry_run=self._opt.dry_run,
            totals=dict(self._totals),
        )

    def start(self, total: int | None, snapshot: SnapshotFn | None = None) -> None:
        """Show the live display (on a terminal, unless quiet or logging JSON; elsewhere,
        unless quiet, :meth:`progress` prints lines). ``total`` is None while listing; calling
        again with the total keeps the display that is up."""
        self._total = total
        if self._started is None:
            self._started = self._clock()
        source = snapshot or self._own_snapshot
        if self._json_logs:
            if total is not None:
                event("cancelling", targets=total, dry_run=self._opt.dry_run)
            self._lines = None if self._opt.quiet else source
            return
        if self._live is not None:
            return
        if self._opt.quiet:
            return
        if not self._console.is_terminal:
            self._lines = source
            return
        if self._opt.out_format == "jsonl" and self._out.isatty():
            return  # records and the live display would fight over the same screen
        view = ProgressView(source, clock=self._clock)
        self._live = Live(
            view,
            console=self._console,
            refresh_per_second=4,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def pause(self) -> None:
        """Take the live display down (its last frame stays), and hold the progress lines,
        e.g. to ask a question; :meth:`start` brings them back."""
        self._lines = None
        if self._live is not None:
            self._live.stop()
            self._live = None

    def progress(self) -> None:
        """Where no live display is drawn: one progress line on stderr (JSON logs: a
        ``progress`` event with the figures as fields). Nothing before :meth:`start`, while
        paused, when quiet, or beside a live display."""
        if self._lines is None or self._started is None:
            return
        snap, elapsed = self._lines(), self._clock() - self._started
        if self._json_logs:
            event(
                "progress", phase=str(snap.phase), elapsed_seconds=round(elapsed, 1),
                total=snap.total, listed=snap.listed, settled=snap.settled, sent=snap.sent,
                accepted=snap.accepted, requests_per_second=round(snap.rate, 1),
                throttled=snap.throttled, throttling=snap.throttling, dry_run=snap.dry_run,
                totals={key: count for key, count in snap.totals.items() if count},
            )  # fmt: skip
            return
        self._console.print(
            progress_line(snap, elapsed), markup=False, highlight=False, soft_wrap=True
        )

    def refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def advance(self, line: str, totals: Mapping[str, int]) -> None:
        """One result settled: ``line`` is its JSON record, ``totals`` the counts so far."""
        if self._opt.out_format == "jsonl":
            self._out.write(line + "\n")
            self._out.flush()
        self._settled += 1
        self._totals = dict(totals)

    def stopping(self, grace: float) -> None:
        if self._json_logs:
            event("stopping: no new cancels", level=logging.WARNING, grace_seconds=grace)
            return
        self._console.print(
            f"[bold yellow]Stopping:[/] no new cancels; finishing requests in flight and "
            f"reconciling for up to {grace:g}s. Press Ctrl-C again to stop at once.",
            markup=True,
        )

    def aborting(self) -> None:
        if self._json_logs:
            event("stopping now", level=logging.WARNING)
            return
        self._console.print("[bold red]Stopping now[/]; writing the report.", markup=True)

    def error(self, message: str) -> None:
        if self._json_logs:
            event(message, level=logging.ERROR)
            return
        self._console.print(f"[bold red]bulkcancel:[/] {escape(message)}", soft_wrap=True)

    def warn(self, message: str) -> None:
        if self._json_logs:
            event(message, level=logging.WARNING)
            return
        self._console.print(f"[yellow]bulkcancel:[/] {escape(message)}", soft_wrap=True)

    def finish(self, writer: ReportWriter, meta: Mapping[str, Any]) -> None:
        """Stop the display; the JSON report or the JSONL summary record on stdout; the final
        table, what the exit code means and how to resume on stderr."""
        view = self._live.get_renderable() if self._live is not None else None
        if isinstance(view, ProgressView):
            view.done = True  # (the frame the display leaves on screen)
        self.pause()
        code = meta.get("exit_code")
        if self._opt.out_format == "json":
            writer.dump(self._out, meta)
            self._out.flush()
        elif self._opt.out_format == "jsonl" and self._opt.jsonl_summary:
            summary = {**writer.totals, "exit_code": code}
            self._out.write(json.dumps({"summary": summary}, separators=(",", ":")) + "\n")
            self._out.flush()
        arguments = meta.get("arguments") or {}
        stopped = meta.get("stopped")
        if self._json_logs:
            event(
                "run finished",
                exit_code=code,
                totals=dict(writer.totals),
                stopped=stopped,
                requests=meta.get("requests"),
                selection=meta.get("selection"),
                identity=meta.get("identity"),
                places=meta.get("places"),
                report=self._opt.report_path,
            )
            return
        if self._opt.quiet:
            return
        console = self._console
        if self._opt.out_format == "table":
            print_summary(console, writer.totals, writer.summary, stopped=stopped)
            if arguments.get("dry_run", self._opt.dry_run) and writer.count:
                console.print(running_table(json.loads(line) for line in writer.records()))
        requests = meta.get("requests", {})
        line = f"{writer.count} target(s); {requests.get('total', 0)} requests"
        if requests.get("throttled"):
            line += f", {requests['throttled']} throttled"
        if self._opt.report_path:
            line += f"; report: {self._opt.report_path}"
        console.print(line, highlight=False, markup=False)
        if meta.get("selection"):
            console.print(selection_line(meta["selection"]), highlight=False, markup=False)
        if isinstance(code, int):
            lines = exit_lines(
                code,
                dry_run=bool(arguments.get("dry_run", self._opt.dry_run)),
                journal=arguments.get("journal"),
                stopped=stopped,
                why_shown=self._opt.out_format == "table",
            )
            for text in lines:
                console.print(text, highlight=False, markup=False)


def summary_table(
    totals: Mapping[str, int], summary: Summary, *, stopped: str | None = None
) -> Table:
    """Outcomes with counts and their most common reasons (HTML bodies shortened to their
    title). After a stop, a target left running is not blamed on the reconcile deadline."""
    table = Table(title="bulkcancel", title_justify="left")
    table.add_column("outcome", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("why (most common first)", overflow="fold")
    for outcome in Outcome:
        count = totals.get(outcome.value, 0)
        if not count:
            continue
        style = _STYLE.get(outcome.value, "")
        reasons = summary.reasons.get(outcome.value)
        why = ""
        if reasons:
            top = reasons.most_common(3)
            shown = []
            for reason, n in top:
                text = short_reason(reason)
                if stopped and text == _DEADLINE_REASON:
                    text = f"still running when the run stopped ({stopped})"
                shown.append(f"{n} x {text}" if n > 1 else text)
            why = "\n".join(shown)
            if len(reasons) > len(top):
                why += f"\n… {len(reasons) - len(top)} other reason(s)"
        table.add_row(f"[{style}]{outcome.value}[/]", str(count), escape(why))
    return table


def print_summary(
    console: Console, totals: Mapping[str, int], summary: Summary, *, stopped: str | None = None
) -> None:
    """The table, then a few example names per outcome. Names are long, so each gets a line of
    its own, soft-wrapped by the terminal: whole, and copyable."""
    console.print(summary_table(totals, summary, stopped=stopped))
    for outcome in Outcome:
        records = summary.examples.get(outcome.value)
        if not records or not totals.get(outcome.value):
            continue
        style = _STYLE.get(outcome.value, "")
        console.print(f"[{style}]{outcome.value}[/], for example:", highlight=False)
        for record in records:
            console.print(f"  {escape(str(record['name']))}", soft_wrap=True, highlight=False)


def render_saved(
    data: Mapping[str, Any], out_format: str, *, console: Console | None = None
) -> None:
    """``bulkcancel report``: a saved report as JSON, CSV, or tables (with the "what is
    running" view when it was a dry run)."""
    operations = data["operations"]
    if out_format == "json":
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif out_format == "csv":
        sys.stdout.write(to_csv(operations))
    else:
        console = console or Console(highlight=False)
        stopped = data.get("stopped")
        print_summary(console, data["totals"], summarize(operations), stopped=stopped)
        if (data.get("arguments") or {}).get("dry_run"):
            console.print(running_table(operations))
        if data.get("selection"):
            console.print(selection_line(data["selection"]), highlight=False, markup=False)


def prompt_text(
    count: int,
    sample: Sequence[str],
    endpoint: str,
    *,
    identity: str | None = None,
    places: Mapping[str, int] | None = None,
) -> str:
    """The confirmation question: how many, where, as whom, a few examples."""
    lines = [f"About to cancel {count} operation(s) at {endpoint}"]
    if identity:
        lines.append(f"  acting as: {identity}")
    if places:
        shown = sorted(places.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("  in: " + ", ".join(f"{p} ({n})" for p, n in shown[:5]))
        if len(shown) > 5:
            lines[-1] += f", and {len(shown) - 5} more place(s)"
    lines.append("for example:")
    lines += [f"  {name}" for name in sample]
    if count > len(sample):
        lines.append(f"  … and {count - len(sample)} more")
    lines.append("Proceed? [y/N] ")
    return "\n".join(lines)


async def confirm(
    count: int,
    sample: list[str],
    endpoint: str,
    *,
    identity: str | None = None,
    places: Mapping[str, int] | None = None,
) -> bool | None:
    """Ask on the controlling terminal (not stdin: names may be arriving there).

    None when there is no terminal to ask on. The wait is cancellable, so Ctrl-C at the prompt
    behaves like Ctrl-C anywhere else.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None
    try:
        text = prompt_text(count, sample, endpoint, identity=identity, places=places)
        os.write(fd, text.encode())
        buffer = b""
        while not buffer.endswith(b"\n"):
            await anyio.wait_readable(fd)
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            buffer += chunk
        return buffer.decode(errors="replace").strip().lower() in ("y", "yes")
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
