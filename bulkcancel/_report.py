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
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from bulkcancel._models import SUCCESS_OUTCOMES, OperationResult, Outcome, empty_totals

_EXAMPLES = 3
#: distinct reasons counted per outcome; the rest are counted together as "other"
_REASONS = 20
_RESOURCE = re.compile(r"\b(?:projects|organizations|folders|operations)/[^\s'\"]+")


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
        samples = self.examples.setdefault(outcome, [])
        if len(samples) < _EXAMPLES:
            samples.append(dict(record))
        why = _mask(explain(record))
        if why:
            counts = self.reasons.setdefault(outcome, Counter())
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
        line = json.dumps(record, separators=(",", ":"), default=str)
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


def write_atomically(path: Path, fill: Any) -> None:
    """Write via a 0600 temporary file in the same directory, fsync, rename: a reader (or a
    crash) sees the old report or the new one, never half of one."""
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


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or "operations" not in data or "totals" not in data:
        raise ValueError(f"{path} is not a bulkcancel report")
    return data


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
        if isinstance(value, Mapping):
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
