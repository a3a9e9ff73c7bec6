"""The report: streamed to disk as results settle, written atomically, rendered for people.

Records are spooled to a temporary file as they arrive, so a million-target run keeps only
counters and a few examples in memory; the final JSON is assembled from the spool.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from bulkcancel._errors import ConfigError
from bulkcancel._models import SUCCESS_OUTCOMES, OperationResult, Outcome, empty_totals

_EXAMPLES = 3
#: distinct reasons counted per outcome; the rest are counted together as "other"
_REASONS = 20
_RESOURCE = re.compile(r"\b(?:projects|organizations|folders|operations)/[^\s'\"]+")
#: one record per line; built once (``json.dumps`` with options builds an encoder per call)
_encode_line = json.JSONEncoder(separators=(",", ":"), default=str).encode


@functools.lru_cache(maxsize=1024)
def _mask(reason: str) -> str:
    """Messages often quote the resource: count "'projects/p/.../op-1' not found" once."""
    return _RESOURCE.sub("…", reason)


class Summary:
    """Per outcome: a few example records and how often each reason occurred (bounded)."""

    def __init__(self) -> None:
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.reasons: dict[str, Counter[str]] = {}

    def add(self, record: Mapping[str, Any]) -> None:
        outcome = str(record["outcome"])
        samples = self.examples.get(outcome)
        if samples is None:
            samples = self.examples[outcome] = []
        if len(samples) < _EXAMPLES:
            samples.append(dict(record))
        why = _mask(explain(record))
        if why:
            counts = self.reasons.get(outcome)
            if counts is None:
                counts = self.reasons[outcome] = Counter()
            if why not in counts and len(counts) >= _REASONS:
                why = "other reasons"
            counts[why] += 1


class ReportWriter:
    """Collects results and writes the contract's JSON report."""

    def __init__(self) -> None:
        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.totals = empty_totals()
        self.summary = Summary()

    def add(self, result: OperationResult) -> str:
        """Record one result; returns its JSON line (for ``--format jsonl``)."""
        record = result.to_json()
        line = _encode_line(record)
        self._spool.write(line + "\n")
        self.totals[result.outcome.value] += 1
        self.summary.add(record)
        return line

    @property
    def count(self) -> int:
        return sum(self.totals.values())

    @property
    def ok(self) -> bool:
        return all(n == 0 for k, n in self.totals.items() if Outcome(k) not in SUCCESS_OUTCOMES)

    def records(self) -> Iterator[str]:
        self._spool.flush()
        self._spool.seek(0)
        for line in self._spool:
            yield line.rstrip("\n")
        self._spool.seek(0, os.SEEK_END)

    def dump(self, out: IO[str], meta: Mapping[str, Any]) -> None:
        """Write the whole report as JSON to ``out``, streaming the records."""
        write_report(out, self.totals, meta, self.records())

    def write_file(self, path: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
        write_atomically(Path(path), lambda out: self.dump(out, meta))

    def close(self) -> None:
        self._spool.close()


def write_report(
    out: IO[str], totals: Mapping[str, int], meta: Mapping[str, Any], records: Iterable[str]
) -> None:
    head: dict[str, Any] = {"schema_version": 1, "totals": dict(totals)}
    head.update({k: v for k, v in meta.items() if k not in ("schema_version", "totals")})
    text = json.dumps(head, indent=1, default=str)
    out.write(text[: text.rindex("}")].rstrip() + ',\n "operations": [')
    first = True
    for line in records:
        out.write(("\n  " if first else ",\n  ") + line)
        first = False
    out.write("\n ]\n}\n")


class UnsafeReportPathError(ConfigError):
    """The report path is not something we may write a report to (a link, a directory, a
    block device...). Before a run this is a usage error; the message is one line."""


def check_report_path(path: str | os.PathLike[str]) -> bool:
    """Whether a report path is written in place (True: a character device or a FIFO, such as
    ``/dev/stdout`` on a terminal or a pipe) or by atomic rename (False: a regular file, or
    nothing yet). Raises UnsafeReportPathError for anything else.

    Call it before a run, so a bad ``--report`` is refused before anything is sent; the write
    checks again.

    - A path that does not exist, or a regular file: written atomically, mode 0600.
    - A character device or a FIFO, named directly or through symbolic links: the user asked
      for a stream, so it is opened and written in place. Never renamed over, never chmod'ed.
    - A symbolic link to anything else (a regular file, a dangling link): refused. Renaming
      would replace the link, and writing through it would let whoever placed the link choose
      what a credentialed run overwrites; give the file's own path.
    - A directory, a block device, a socket: refused.
    """
    try:
        own = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UnsafeReportPathError(f"cannot use {os.fspath(path)!r} as a report: {exc}") from exc
    if stat.S_ISREG(own.st_mode):
        return False
    try:
        final = os.stat(path) if stat.S_ISLNK(own.st_mode) else own
    except OSError:
        final = None  # a dangling or looping link
    if final is not None and (stat.S_ISCHR(final.st_mode) or stat.S_ISFIFO(final.st_mode)):
        return True
    raise UnsafeReportPathError(
        f"refusing to write a report to {os.fspath(path)!r}: it is {_describe(own, final)}, "
        "not a regular file (or a device or pipe such as /dev/stdout)"
    )


_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _describe(own: os.stat_result, final: os.stat_result | None) -> str:
    if stat.S_ISLNK(own.st_mode):
        if final is None:
            return "a symbolic link that leads nowhere"
        return f"a symbolic link to {_describe(final, final)}"
    return next((words for test, words in _KINDS if test(own.st_mode)), "a special file")


def write_atomically(path: Path, fill: Any) -> None:
    """Write a report where ``check_report_path`` allows, the way it says.

    A file is written via a 0600 temporary file in the same directory, fsync, rename: a reader
    (or a crash) sees the old report or the new one, never half of one, and an existing report
    ends up 0600 whatever its mode was. A device or FIFO is written in place.
    """
    if check_report_path(path):
        _write_in_place(path, fill)
        return
    directory = path.parent if str(path.parent) else Path()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_in_place(path: Path, fill: Any) -> None:
    # O_NONBLOCK for the open only: a FIFO nobody reads fails at once (ENXIO) instead of
    # hanging the end of a run. No O_CREAT, no O_TRUNC: the node exists and is not ours.
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as out:
            fill(out)
    finally:
        os.close(fd)


class MalformedReportError(ValueError):
    """A file given to ``report`` or ``merge-reports`` is not a readable bulkcancel report.
    The message is one line and names the file."""


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a saved report, so whatever renders or merges it can rely on its shape:
    ``schema_version`` 1, ``totals`` counts by outcome (a missing outcome counts zero and is
    filled in), ``operations`` a list of records with a string ``name`` and a known
    ``outcome``, totals that match the records."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedReportError(f"{where}: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise MalformedReportError(f"{where}: not JSON ({exc.msg}, line {exc.lineno})") from exc
    except RecursionError as exc:
        raise MalformedReportError(f"{where}: JSON nested too deeply") from exc
    problem = _report_problem(data)
    if problem is not None:
        raise MalformedReportError(f"{where} is not a bulkcancel report: {problem}")
    return data  # type: ignore[no-any-return]  # shape checked just above


def _report_problem(data: object) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    for key in ("schema_version", "totals", "operations"):
        if key not in data:
            return f"no {key!r}"
    version = data["schema_version"]
    if not _is_count(version) or version != 1:
        return f"schema_version {_short(version)} (this version reads 1)"
    totals = data["totals"]
    if not isinstance(totals, dict):
        return "'totals' is not an object"
    known = empty_totals()
    unknown = sorted(set(totals) - set(known))
    if unknown:
        return f"'totals' has keys that are not outcomes: {', '.join(map(_short, unknown[:3]))}"
    if not all(_is_count(n) for n in totals.values()):
        return "'totals' holds something other than counts"
    # A missing outcome counts zero (hand-written reports); filled in for whatever reads it.
    totals.update({k: 0 for k in known if k not in totals})
    operations = data["operations"]
    if not isinstance(operations, list):
        return "'operations' is not a list"
    for index, record in enumerate(operations):
        if not isinstance(record, dict):
            return f"operation #{index + 1} is not an object"
        if not isinstance(record.get("name"), str):
            return f"operation #{index + 1} has no string 'name'"
        outcome = record.get("outcome")
        if not isinstance(outcome, str) or outcome not in known:
            return f"operation #{index + 1} has outcome {_short(outcome)}"
        known[outcome] += 1
    if known != totals:
        return "'totals' do not match the operations listed"
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: object) -> str:
    return json.dumps(value, default=str)[:40]


def merge_reports(reports: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[str]]:
    """Combine shard reports. Returns the merged report and the names reported more than once."""
    seen: dict[str, str] = {}
    twice: list[str] = []
    operations: list[dict[str, Any]] = []
    totals = empty_totals()
    for source, report in reports:
        for record in report["operations"]:
            name = str(record["name"])
            if name in seen:
                twice.append(name)
                continue
            seen[name] = source
            operations.append(record)
            totals[str(record["outcome"])] += 1
    merged: dict[str, Any] = {
        "schema_version": 1,
        "totals": totals,
        "merged_from": [source for source, _ in reports],
        "shards": [r.get("shard") for _, r in reports],
        "operations": operations,
    }
    return merged, twice


def summarize(operations: Iterable[Mapping[str, Any]]) -> Summary:
    summary = Summary()
    for record in operations:
        summary.add(record)
    return summary


def explain(record: Mapping[str, Any]) -> str:
    """One short phrase for a record: the error message a person would want first."""
    for key in ("cancel_error", "get_error", "list_error"):
        value = record.get(key)
        if value is not None and isinstance(value, Mapping):
            code = value.get("code") or value.get("http_status") or value.get("kind")
            message = value.get("message") or ""
            return f"{code}: {message}".strip(": ")[:120]
    if record.get("error_message"):
        return f"code {record.get('error_code')}: {record['error_message']}"[:120]
    for key in ("reason", "message"):
        if record.get(key):
            return str(record[key])[:120]
    if record.get("finished_with"):
        return f"finished with a {record['finished_with']}"
    if record.get("outcome") == "still_running":
        return "not done when the reconcile deadline passed"
    return ""


def to_csv(operations: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "outcome", "detail", "requests"])
    for record in operations:
        writer.writerow(
            [record["name"], record["outcome"], explain(record), record.get("requests", "")]
        )
    return buffer.getvalue()
