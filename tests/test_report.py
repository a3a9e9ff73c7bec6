"""The report file: contract keys, atomic 0600 writes, merging, rendering."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bulkcancel._models import OperationResult, Outcome, Report
from bulkcancel._report import (
    MalformedReportError,
    ReportWriter,
    UnsafeReportPathError,
    check_report_path,
    explain,
    load_report,
    merge_reports,
    to_csv,
    write_atomically,
)


def sample() -> list[OperationResult]:
    return [
        OperationResult(
            "projects/p/locations/l/operations/a", Outcome.CANCELLED, {"error_code": 1}
        ),
        OperationResult(
            "projects/p/locations/l/operations/b",
            Outcome.PERMISSION_DENIED,
            {"cancel_error": {"kind": "api_error", "code": "PERMISSION_DENIED", "message": "no"}},
        ),
        OperationResult("bad name", Outcome.INVALID, {"reason": "contains whitespace"}),
    ]


def test_written_report_has_every_contract_key(tmp_path: Path) -> None:
    writer = ReportWriter()
    for result in sample():
        writer.add(result)
    path = tmp_path / "report.json"
    writer.write_file(path, {"endpoint": "https://x", "exit_code": 3})
    writer.close()
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1
    assert set(data["totals"]) == {o.value for o in Outcome}
    assert data["totals"]["cancelled"] == 1
    assert data["totals"]["still_running"] == 0
    assert [r["name"] for r in data["operations"]] == [r.name for r in sample()]
    assert data["operations"][2] == {
        "name": "bad name",
        "outcome": "invalid",
        "reason": "contains whitespace",
    }
    assert data["endpoint"] == "https://x"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind


def test_report_replaced_atomically_and_empty_report_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("old")
    writer = ReportWriter()
    writer.write_file(path, {})
    data = json.loads(path.read_text())
    assert data["operations"] == []
    assert writer.ok


def test_library_report_matches_writer_shape() -> None:
    report = Report.from_results(sample(), {"endpoint": "https://x"})
    out = io.StringIO()
    writer = ReportWriter()
    for result in sample():
        writer.add(result)
    writer.dump(out, {"endpoint": "https://x"})
    assert json.loads(out.getvalue()) == report.to_json()
    assert not report.ok


def test_merge_refuses_duplicates_and_sums_totals(tmp_path: Path) -> None:
    a = Report.from_results(sample()[:2]).to_json()
    b = Report.from_results(sample()[2:]).to_json()
    merged, twice = merge_reports([("a", a), ("b", b)])
    assert twice == []
    assert merged["totals"]["invalid"] == 1
    assert len(merged["operations"]) == 3
    _, twice = merge_reports([("a", a), ("a2", a)])
    assert twice == [r.name for r in sample()[:2]]


def test_load_report_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a bulkcancel report"):
        load_report(path)


def test_explain_and_csv() -> None:
    records = [r.to_json() for r in sample()]
    assert explain(records[1]) == "PERMISSION_DENIED: no"
    assert explain(records[2]) == "contains whitespace"
    text = to_csv(records)
    assert text.splitlines()[0] == "name,outcome,detail,requests"
    assert "bad name,invalid,contains whitespace" in text


# ---- where a report may be written -----------------------------------------------------------


def fill(out: io.TextIOBase) -> None:
    out.write('{"report": true}\n')


def test_an_existing_report_is_forced_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("old")
    path.chmod(0o644)
    write_atomically(path, fill)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == '{"report": true}\n'


@pytest.mark.parametrize("leads_to", ["file", "nowhere", "directory"])
def test_a_symbolic_link_is_refused_and_left_alone(tmp_path: Path, leads_to: str) -> None:
    target = tmp_path / "real.json"
    if leads_to == "file":
        target.write_text("keep me")
    elif leads_to == "directory":
        target.mkdir()
    link = tmp_path / "report.json"
    link.symlink_to(target)
    with pytest.raises(UnsafeReportPathError, match="a symbolic link") as caught:
        write_atomically(link, fill)
    assert "\n" not in str(caught.value)
    assert link.is_symlink()
    assert os.readlink(link) == str(target)
    if leads_to == "file":
        assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["report.json"] + ([] if leads_to == "nowhere" else ["real.json"])
    )


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeReportPathError, match="a directory"):
        check_report_path(tmp_path)


def test_a_fifo_is_written_in_place_when_someone_reads_it(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, there before the write
    try:
        write_atomically(fifo, fill)
        received = os.read(reader, 65536)
    finally:
        os.close(reader)
    assert received == b'{"report": true}\n'
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_fifo_nobody_reads_fails_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match=os.strerror(errno.ENXIO)) as caught:
        write_atomically(fifo, fill)
    assert caught.value.errno == errno.ENXIO
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_link_to_a_character_device_is_written_through_not_replaced(tmp_path: Path) -> None:
    # /dev/null stands for /dev/stdout: a device the user asked for, reached through a link.
    link = tmp_path / "stdout"
    link.symlink_to("/dev/null")
    before = os.stat("/dev/null")
    write_atomically(link, fill)
    after = os.stat("/dev/null")
    assert link.is_symlink()
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_mode, after.st_uid) == (
        before.st_ino,
        before.st_mode,
        before.st_uid,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["stdout"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_device_is_an_error_and_stays_a_device() -> None:
    before = os.stat("/dev/full")
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)) as caught:
        write_atomically(Path("/dev/full"), lambda out: out.write("x" * 100_000))
    assert caught.value.errno == errno.ENOSPC
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


# ---- what a saved report must look like to be read back ----------------------------------------


def valid() -> dict[str, Any]:
    return Report.from_results(sample()).to_json()


def broken(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = valid()
    change(data)
    return data


MALFORMED_REPORTS: list[tuple[str, object, str]] = [
    ("array", [], "not a JSON object"),
    ("no operations", broken(lambda d: d.pop("operations")), "no 'operations'"),
    ("no totals", broken(lambda d: d.pop("totals")), "no 'totals'"),
    ("version as text", broken(lambda d: d.update(schema_version="1")), "schema_version"),
    ("version true", broken(lambda d: d.update(schema_version=True)), "schema_version"),
    ("future version", broken(lambda d: d.update(schema_version=2)), "reads 1"),
    ("totals a list", broken(lambda d: d.update(totals=[])), "'totals' is not an object"),
    ("totals missing a count", broken(lambda d: d["totals"].pop("invalid")), "do not match"),
    ("unknown outcome total", broken(lambda d: d["totals"].update(won=0)), '"won"'),
    ("totals as text", broken(lambda d: d["totals"].update(error="0")), "other than counts"),
    ("operations an object", broken(lambda d: d.update(operations={})), "not a list"),
    ("record a string", broken(lambda d: d["operations"].append("x")), "#4 is not an object"),
    ("record nameless", broken(lambda d: d["operations"][0].pop("name")), "#1 has no string"),
    ("name a number", broken(lambda d: d["operations"][1].update(name=7)), "#2 has no string"),
    ("unknown outcome", broken(lambda d: d["operations"][0].update(outcome="won")), "outcome"),
    ("totals disagree", broken(lambda d: d["totals"].update(error=5)), "do not match"),
]


@pytest.mark.parametrize(
    ("data", "why"),
    [(d, w) for _, d, w in MALFORMED_REPORTS],
    ids=[i for i, _, _ in MALFORMED_REPORTS],
)
def test_load_report_refuses_malformed_shapes_in_one_line(
    tmp_path: Path, data: object, why: str
) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    with pytest.raises(MalformedReportError) as caught:
        load_report(path)
    message = str(caught.value)
    assert why in message
    assert message.startswith(str(path))
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b'{"a": "\xff\xfe"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=["syntax", "empty", "bytes", "deep"],
)
def test_load_report_refuses_unreadable_files_in_one_line(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(MalformedReportError, match=why) as caught:
        load_report(path)
    assert "\n" not in str(caught.value)


def test_missing_zero_totals_are_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(broken(lambda d: d["totals"].pop("still_running"))))
    assert load_report(path)["totals"] == valid()["totals"]


def test_a_validated_report_merges_and_renders(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    writer = ReportWriter()
    for result in sample():
        writer.add(result)
    writer.write_file(path, {"endpoint": "https://x"})
    loaded = load_report(path)
    merged, twice = merge_reports([("r", loaded)])
    assert twice == []
    assert merged["totals"] == loaded["totals"]
    assert to_csv(merged["operations"]).count("\n") == 1 + len(sample())
