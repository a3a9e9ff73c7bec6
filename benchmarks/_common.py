"""Shared plumbing: the fake server in its own process, whole-process timing, tables, JSON.

Every figure is the wall time of a whole process (interpreter start, imports, the run), so
bulkcancel and its peers are compared as a user would meet them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PARENT = "projects/bench/locations/us-central1"


@dataclass
class Fake:
    url: str
    names_file: Path
    expected_file: Path | None
    process: subprocess.Popen[str]

    def stats(self, clear: bool = False, ceiling: float | None = None) -> dict[str, Any]:
        query = f"?ceiling={ceiling:g}" if ceiling else ""
        request = urllib.request.Request(
            f"{self.url}/_fake/stats{query}", method="DELETE" if clear else "GET"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def expected(self) -> dict[str, str]:
        assert self.expected_file is not None
        data: dict[str, str] = json.loads(self.expected_file.read_text())
        return data


@contextmanager
def fake_server(
    workdir: Path,
    operations: int,
    *,
    quota: float | None = None,
    mix: int | None = None,
    parent: str = PARENT,
    parents: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> Iterator[Fake]:
    """``bulkcancel fake-server`` in its own process, on a free loopback port: ``operations``
    per parent (``parents``, else ``parent``), ``extra`` flags (personalities and the like)."""
    names = workdir / "names.txt"
    expected = workdir / "expected.json" if mix is not None else None
    args = [sys.executable, "-m", "bulkcancel", "fake-server", "--port", "0"]
    args += ["--operations", str(operations), "--names-out", str(names), *extra]
    for one in parents or [parent]:
        args += ["--parent", one]
    if quota is not None:
        args += ["--quota", str(quota)]
    if mix is not None and expected is not None:
        args += ["--mix", str(mix), "--expected-out", str(expected)]
    with serving(args) as (url, process):
        yield Fake(url, names, expected, process)


@contextmanager
def serving(args: Sequence[str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A fake server process whose first stdout line is its URL; stopped on leaving."""
    process = subprocess.Popen(
        list(args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env()
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the fake server did not start: {url!r}")
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_timed(args: Sequence[str], *, check_codes: Sequence[int] = (0,)) -> float:
    """Wall time of a whole process, seconds."""
    started = time.perf_counter()
    done = subprocess.run(list(args), capture_output=True, text=True, env=env(), check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in check_codes:
        raise RuntimeError(
            f"{' '.join(args[:6])}... exited {done.returncode}:\n{done.stderr[-2000:]}"
        )
    return elapsed


def share_target(shape: str | None) -> float:
    """Issue 8's most requests answered 429, as a share, for a quota of this shape: 15% on a
    window (a spent fixed window refuses what is in flight; a sliding window's budget runs out
    the same way), 10% otherwise."""
    return 0.15 if shape in ("fixed-window", "sliding-window") else 0.10


def bulkcancel(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulkcancel", *args]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    return str(value)


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "python": sys.version.split()[0], "cpus": os.cpu_count(), **data}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def outcome_of(
    cancel_status: int, cancel_html: bool, get_status: int, body: dict[str, Any] | None
) -> str:
    """What a peer's cancel + GET amount to, in the contract's words (a fair, simple reading:
    the benchmark checks whether a peer's answers would let its user tell the outcome)."""
    if get_status == 404:
        return "not_found"
    if get_status in (401, 403) or cancel_status in (401, 403):
        return "permission_denied"
    if get_status != 200 or body is None:
        return "error"
    if body.get("done"):
        return "cancelled" if body.get("error", {}).get("code") == 1 else "completed_anyway"
    if cancel_status in (400, 501) or (cancel_status == 404 and cancel_html):
        return "unsupported"
    return "still_running" if cancel_status == 200 else "error"
