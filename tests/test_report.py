"""The report file: contract keys, atomic 0600 writes, merging, rendering."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from bulkcancel._models import OperationResult, Outcome, Report
from bulkcancel._report import ReportWriter, explain, load_report, merge_reports, to_csv


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
