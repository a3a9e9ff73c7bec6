"""What people see: progress bar, summary table, prompt — the CLI's presentation half.

Everything for people goes to stderr through rich, so stdout carries only what a pipeline asked
for (``--format json|jsonl``). The progress bar appears only on a terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bulkcancel._models import SUCCESS_OUTCOMES, Outcome
from bulkcancel._report import ReportWriter, Summary, summarize, to_csv

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

_stderr = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    _stderr.print(f"[bold red]bulkcancel:[/] {message}", markup=True, soft_wrap=True)


@dataclass(frozen=True, slots=True)
class Options:
    out_format: str = "table"
    report_path: str | None = None
    yes: bool = False
    max_operations: int | None = None
    quiet: bool = False
    shard: tuple[int, int] | None = None


class Ui:
    def __init__(self, options: Options) -> None:
        self._opt = options
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, total: int) -> None:
        if self._opt.quiet or not _stderr.is_terminal:
            return
        self._progress = Progress(
            TextColumn("[bold]cancelling"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=_stderr,
            transient=False,
        )
        self._task = self._progress.add_task("", total=total or None)
        self._progress.start()

    def advance(self, line: str, totals: Mapping[str, int]) -> None:
        """One result settled: ``line`` is its JSON record, ``totals`` the counts so far."""
        if self._opt.out_format == "jsonl":
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        if self._progress is not None:
            summary = "  ".join(f"{k} {n}" for k, n in totals.items() if n)
            self._progress.update(self._task, advance=1, description=summary)

    def stopping(self, grace: float) -> None:
        _stderr.print(
            f"[bold yellow]Stopping:[/] no new cancels; finishing requests in flight and "
            f"reconciling for up to {grace:g}s. Press Ctrl-C again to stop at once.",
            markup=True,
        )

    def aborting(self) -> None:
        _stderr.print("[bold red]Stopping now[/]; writing the report.", markup=True)

    def error(self, message: str) -> None:
        error(message)

    def warn(self, message: str) -> None:
        _stderr.print(f"[yellow]bulkcancel:[/] {message}", markup=True)

    def finish(self, writer: ReportWriter, meta: Mapping[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._opt.out_format == "json":
            writer.dump(sys.stdout, meta)
            sys.stdout.flush()
        if self._opt.quiet:
            return
        if self._opt.out_format == "table":
            print_summary(_stderr, writer.totals, writer.summary)
        requests = meta.get("requests", {})
        line = f"{writer.count} target(s); {requests.get('total', 0)} requests"
        if requests.get("throttled"):
            line += f", {requests['throttled']} throttled"
        if self._opt.report_path:
            line += f"; report: {self._opt.report_path}"
        _stderr.print(line, highlight=False)


def summary_table(totals: Mapping[str, int], summary: Summary) -> Table:
    """Outcomes with counts and their most common reasons."""
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
            why = "\n".join(f"{n} x {reason}" if n > 1 else reason for reason, n in top)
            if len(reasons) > len(top):
                why += f"\n… {len(reasons) - len(top)} other reason(s)"
        table.add_row(f"[{style}]{outcome.value}[/]", str(count), escape(why))
    return table


def print_summary(console: Console, totals: Mapping[str, int], summary: Summary) -> None:
    """The table, then a few example names per outcome. Names are long, so each gets a line of
    its own, soft-wrapped by the terminal: whole, and copyable."""
    console.print(summary_table(totals, summary))
    for outcome in Outcome:
        records = summary.examples.get(outcome.value)
        if not records or not totals.get(outcome.value):
            continue
        style = _STYLE.get(outcome.value, "")
        console.print(f"[{style}]{outcome.value}[/], for example:", highlight=False)
        for record in records:
            console.print(f"  {escape(str(record['name']))}", soft_wrap=True, highlight=False)


def render_saved(data: Mapping[str, Any], out_format: str) -> None:
    operations = data["operations"]
    if out_format == "json":
        import json

        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif out_format == "csv":
        sys.stdout.write(to_csv(operations))
    else:
        print_summary(Console(highlight=False), data["totals"], summarize(operations))


async def confirm(count: int, sample: list[str], endpoint: str) -> bool | None:
    """Ask on the controlling terminal (not stdin: names may be arriving there).

    None when there is no terminal to ask on. The wait is cancellable, so Ctrl-C at the prompt
    behaves like Ctrl-C anywhere else.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None
    try:
        lines = [f"About to cancel {count} operation(s) at {endpoint}, for example:"]
        lines += [f"  {name}" for name in sample]
        if count > len(sample):
            lines.append(f"  … and {count - len(sample)} more")
        lines.append("Proceed? [y/N] ")
        os.write(fd, "\n".join(lines).encode())
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


def info(message: str) -> None:
    _stderr.print(message, highlight=False, soft_wrap=True)
