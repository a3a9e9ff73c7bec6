"""What people see: the live display at 80 and 120 columns, records on stdout only, the final
table and what the exit code means, the "what is running" view, the prompt; and a real
pseudo-terminal at 80x24 and 120x40 with stdout piped."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pexpect
import pytest
from rich.console import Console

from bulkcancel._logging import LOGGER, setup_logging
from bulkcancel._models import OperationResult, Outcome, empty_totals
from bulkcancel._report import ReportWriter, summarize
from bulkcancel._ui import (
    Options,
    Phase,
    ProgressSnapshot,
    ProgressView,
    Ui,
    print_summary,
    progress_line,
    prompt_text,
    render_progress,
    render_saved,
    summary_table,
)
from bulkcancel._views import (
    exit_lines,
    listing_fields,
    places_touched,
    running_table,
    selection_line,
    short_reason,
)
from tests._support import op

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
BUSY = ProgressSnapshot(
    phase=Phase.CANCELLING,
    total=278,
    sent=200,
    accepted=190,
    settled=120,
    rate=48.4,
    throttled=12,
    throttling=True,
    totals={
        "cancelled": 100,
        "completed_anyway": 12,
        "unsupported": 3,
        "not_found": 1,
        "permission_denied": 1,
        "still_running": 0,
        "error": 2,
        "invalid": 1,
    },
)


def console(width: int) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(width=width, file=buffer, force_terminal=True, highlight=False), buffer


def plain(text: str) -> list[str]:
    return [line.rstrip() for line in ANSI.sub("", text).splitlines()]


def whole_words_fit(lines: list[str], width: int, words: list[str]) -> None:
    for line in lines:
        assert len(line) <= width, line
        assert "…" not in line, line
    text = "\n".join(lines)
    for word in words:
        assert re.search(rf"(^|\s){re.escape(word)}(\s|$)", text, re.M), (word, text)


@pytest.mark.parametrize("width", [80, 120])
def test_progress_reads_at_80_and_120_columns(width: int) -> None:
    out, buffer = console(width)
    out.print(render_progress(BUSY, 12.0, width))
    lines = plain(buffer.getvalue())
    whole_words_fit(
        lines,
        width,
        [
            *("cancelling", "120/278 settled", "sent 200", "accepted 190", "48 req/s"),
            *("0:00:12", "12 throttled (slowing down)", "cancelled 100", "completed_anyway 12"),
            "invalid 1",
        ],
    )
    assert "DRY RUN" not in buffer.getvalue()
    assert lines[0].startswith("cancelling")


def test_progress_while_listing_and_in_a_dry_run() -> None:
    out, buffer = console(80)
    out.print(render_progress(ProgressSnapshot(phase=Phase.LISTING, listed=57), 3.0, 80))
    listing = plain(buffer.getvalue())
    whole_words_fit(listing, 80, ["listing", "57 found"])

    out, buffer = console(80)
    dry = ProgressSnapshot(phase=Phase.CANCELLING, total=100, settled=100, dry_run=True)
    out.print(render_progress(dry, 1.0, 80))
    lines = plain(buffer.getvalue())
    whole_words_fit(lines, 80, ["DRY RUN", "100/100 settled", "dry run: no cancel is sent"])
    assert "sent " not in "\n".join(lines).replace("no cancel is sent", "")


@pytest.mark.parametrize(
    ("phase", "shown"), [(Phase.RECONCILING, "done"), (Phase.STOPPING, "stopping")]
)
def test_the_last_frame_says_the_run_is_over_and_nothing_slows_down(
    phase: Phase, shown: str
) -> None:
    """The frame the display leaves on screen when the run ends: a 429 in its last seconds kept
    "(slowing down)" there, under a run that had stopped sending."""
    snap = replace(BUSY, phase=phase)
    view = ProgressView(lambda: snap, clock=lambda: 12.0)
    out, buffer = console(80)
    out.print(view)
    assert "(slowing down)" in buffer.getvalue()
    view.done = True
    out, buffer = console(80)
    out.print(view)
    lines = plain(buffer.getvalue())
    assert lines[0].startswith(shown), lines[0]
    text = "\n".join(lines)
    assert "12 throttled" in text and "slowing down" not in text, text


def results() -> list[OperationResult]:
    return [
        OperationResult(op(1), Outcome.CANCELLED),
        OperationResult(op(2), Outcome.STILL_RUNNING),
        OperationResult(
            op(3),
            Outcome.ERROR,
            {"cancel_error": {"code": 404, "message": GOOGLE_404[:110]}},
        ),
    ]


GOOGLE_404 = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <meta name=viewport>\n"
    "  <title>Error 404 (Not Found)!!1</title>\n  <style>*{margin:0;padding:0}</style>"
)


def run_ui(out_format: str, meta: dict[str, object]) -> tuple[str, list[str]]:
    err, buffer = console(80)
    stdout = io.StringIO()
    options = Options(out_format=out_format, report_path="r.json", jsonl_summary=True)
    ui = Ui(options, console=err, stdout=stdout)
    writer = ReportWriter()
    ui.start(3, lambda: BUSY)
    for result in results():
        ui.advance(writer.add(result), writer.totals)
        ui.refresh()
    ui.finish(writer, meta)
    writer.close()
    return stdout.getvalue(), plain(buffer.getvalue())


def test_stdout_gets_every_record_and_one_summary_and_nothing_else() -> None:
    meta = {"exit_code": 3, "arguments": {"journal": None}}
    out, err_lines = run_ui("jsonl", meta)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r.get("name") for r in records[:-1]] == [op(1), op(2), op(3)]
    totals = {**empty_totals(), "cancelled": 1, "still_running": 1, "error": 1}
    assert records[-1] == {"summary": {**totals, "exit_code": 3}}
    err = "\n".join(err_lines)
    assert op(1) not in err  # records are data: never on the people's channel
    assert "exit 3: the run finished; some targets ended in another outcome" in err
    assert "cancelling" in err  # the live display was drawn on the terminal


def test_final_table_explains_the_exit_code_and_how_to_resume() -> None:
    meta = {
        "exit_code": 130,
        "stopped": "interrupted",
        "arguments": {"journal": "run.journal"},
        "selection": {"given": 3, "listed": 0, "selected": 3, "skipped": {}},
        "requests": {"total": 9},
    }
    out, err_lines = run_ui("table", meta)
    assert out == ""
    whole_words_fit(err_lines, 80, ["still_running", "cancelled", "error"])
    err = " ".join(" ".join(err_lines).split())
    assert "deadline" not in err  # Ctrl-C, not the deadline, left it running
    assert "still running when the run stopped (interrupted)" in err
    assert "404: Error 404 (Not Found)!!1" in err  # the HTML body, shortened to its title
    assert "<html" not in err
    assert "exit 130: interrupted" in err
    assert "to resume: run the same command again with --journal run.journal" in err
    assert "3 given; 3 selected" in err


def test_json_report_on_stdout_and_json_logs_instead_of_tables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, _ = run_ui("json", {"exit_code": 0})
    assert json.loads(out)["totals"]["cancelled"] == 1

    log = logging.getLogger(LOGGER)
    saved = (list(log.handlers), log.level, log.propagate)
    try:
        setup_logging("json", logging.INFO)
        err, buffer = console(80)
        ui = Ui(Options(log_format="json"), console=err, stdout=io.StringIO())
        writer = ReportWriter()
        ui.start(1)
        ui.advance(writer.add(results()[0]), writer.totals)
        ui.stopping(5.0)
        ui.finish(writer, {"exit_code": 0})
        writer.close()
    finally:
        log.handlers[:], log.level, log.propagate = saved
    assert buffer.getvalue() == ""  # nothing drawn
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["message"] for e in events] == [
        "cancelling",
        "stopping: no new cancels",
        "run finished",
    ]
    assert events[-1]["exit_code"] == 0
    assert events[-1]["totals"]["cancelled"] == 1
    assert events[1]["severity"] == "WARNING"


def test_a_log_gets_progress_lines_where_no_live_display_is_drawn() -> None:
    buffer = io.StringIO()
    err = Console(width=80, file=buffer, force_terminal=False, highlight=False)
    clock = iter([100.0, 190.0, 250.0]).__next__
    ui = Ui(Options(), console=err, stdout=io.StringIO(), clock=clock)
    ui.progress()  # (nothing before the run starts)
    snaps = iter([replace(BUSY, phase=Phase.LISTING, total=None, listed=77), BUSY])
    ui.start(None, lambda: next(snaps))
    ui.progress()
    ui.pause()  # (asking a question: no line)
    ui.progress()
    ui.start(278, lambda: next(snaps))
    ui.progress()
    lines = buffer.getvalue().splitlines()
    assert lines == [
        "progress 0:01:30: listing, 77 found, sent 200, accepted 190, 48 req/s, "
        "12 throttled (slowing down), cancelled 100, completed_anyway 12, unsupported 3, "
        "not_found 1, permission_denied 1, error 2, invalid 1",
        "progress 0:02:30: cancelling, 120/278 settled, sent 200, accepted 190, 48 req/s, "
        "12 throttled (slowing down), cancelled 100, completed_anyway 12, unsupported 3, "
        "not_found 1, permission_denied 1, error 2, invalid 1",
    ]


def test_no_progress_lines_beside_a_live_display_or_when_quiet() -> None:
    for options, terminal in ((Options(), True), (Options(quiet=True), False)):
        buffer = io.StringIO()
        err = Console(width=80, file=buffer, force_terminal=terminal, highlight=False)
        ui = Ui(options, console=err, stdout=io.StringIO())
        ui.start(278, lambda: BUSY)
        before = buffer.getvalue()
        ui.progress()
        ui.pause()
        assert "progress " not in buffer.getvalue()[len(before) :]


def test_progress_line_of_a_dry_run_and_a_drain() -> None:
    dry = replace(BUSY, dry_run=True, totals={"not_attempted": 5})
    assert progress_line(dry, 5.0) == (
        "progress 0:00:05: DRY RUN cancelling, 120/278 settled, not_attempted 5"
    )
    drain = replace(BUSY, phase=Phase.WATCHING, quiet_for=42.0, until_quiet=30.0, totals={})
    assert progress_line(drain, 3725.0) == (
        "progress 1:02:05: watching, 120/278 settled, quiet for 30s of 30s, sent 200, "
        "accepted 190, 48 req/s, 12 throttled (slowing down)"
    )


def test_json_logs_get_progress_events(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger(LOGGER)
    saved = (list(log.handlers), log.level, log.propagate)
    try:
        setup_logging("json", logging.INFO)
        err, buffer = console(80)
        clock = iter([10.0, 12.5]).__next__
        ui = Ui(Options(log_format="json"), console=err, stdout=io.StringIO(), clock=clock)
        ui.start(278, lambda: BUSY)
        ui.progress()
    finally:
        log.handlers[:], log.level, log.propagate = saved
    assert buffer.getvalue() == ""  # nothing drawn
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["message"] for e in events] == ["cancelling", "progress"]
    progress = events[1]
    assert progress["severity"] == "INFO"
    assert progress["elapsed_seconds"] == 2.5
    assert (progress["phase"], progress["total"], progress["settled"]) == ("cancelling", 278, 120)
    assert (progress["sent"], progress["accepted"], progress["throttled"]) == (200, 190, 12)
    assert progress["requests_per_second"] == 48.4 and progress["throttling"] is True
    assert progress["totals"]["cancelled"] == 100 and "still_running" not in progress["totals"]


def test_short_reason_keeps_the_title_of_an_html_body() -> None:
    assert short_reason("404: " + GOOGLE_404) == "404: Error 404 (Not Found)!!1"
    assert short_reason("502: <html><body>Bad gateway</body></html>") == "502: an HTML error page"
    assert short_reason("503: <title>Service &amp; more") == "503: Service & more"
    assert short_reason("code 9: not cancellable") == "code 9: not cancellable"


def test_exit_lines() -> None:
    assert exit_lines(0) == ["exit 0: every target ended cancelled or completed_anyway"]
    assert (
        exit_lines(0, dry_run=True)[1] == "to cancel them: run the same command without --dry-run"
    )
    assert "add --journal PATH" in exit_lines(143)[1]
    assert exit_lines(5, journal="j")[1].startswith("to resume:")
    assert len(exit_lines(3, journal="j")) == 1  # a rerun would not redo finished targets
    # The 'why' column is only drawn in table format; otherwise the records carry the reasons.
    assert exit_lines(3)[0].endswith("(see 'why' above)")
    assert exit_lines(3, why_shown=False)[0].endswith("(see each record's 'reason')")


def test_selection_line_names_each_filter() -> None:
    stats = {"given": 0, "listed": 100, "selected": 0, "skipped": {"target": 100}}
    assert selection_line(stats) == "100 listed; 0 selected; skipped: 100 by --target"
    mixed = {"given": 5, "listed": 0, "selected": 2, "skipped": {"duplicate": 1, "verb": 2}}
    assert selection_line(mixed) == "5 given; 2 selected; skipped: 2 by --verb, 1 duplicates"
    invalid = {"given": 4, "listed": 0, "selected": 1, "invalid": 3, "skipped": {}}
    assert selection_line(invalid) == "4 given; 1 selected; 3 invalid"


def listed(i: int, **meta: object) -> dict[str, object]:
    base: dict[str, object] = {
        "createTime": "2026-11-21T08:00:00.123456789Z",
        "target": "projects/p/locations/us-central1/targets/prod-eu-west-checkout",
        "verb": "deploy",
    }
    base.update(meta)
    return {"name": op(i, "projects/p/locations/us-central1"), "metadata": base}


def test_listing_fields_for_the_records() -> None:
    assert listing_fields(listed(1)) == {
        "create_time": "2026-11-21T08:00:00.123456789Z",
        "target": "projects/p/locations/us-central1/targets/prod-eu-west-checkout",
        "verb": "deploy",
        "state": "running",
    }
    assert listing_fields({"name": "x", "done": True}) == {"state": "done"}
    cancelling = listing_fields(listed(2, requestedCancellation=True))
    assert cancelling["state"] == "cancel_requested"
    assert listing_fields(None) == {}


@pytest.mark.parametrize("width", [80, 120])
def test_running_view_reads_at_80_and_120_columns(width: int) -> None:
    records = [
        {"name": str(item["name"]), "outcome": "not_attempted", **listing_fields(item)}
        for item in (listed(i) for i in range(60))
    ]
    records.append({"name": "bad", "outcome": "invalid"})
    out, buffer = console(width)
    out.print(running_table(records, now=NOW, limit=50))
    text = buffer.getvalue()
    lines = plain(text)
    for line in lines:
        assert len(line) <= width
    flat = "".join(line.strip("│┃ ") for line in lines)
    for word in ["us-central1", "deploy", "3d 3h", "running", "prod-eu-west-checkout"]:
        assert word in flat or word in text, word
    assert "… and 10 more (the report has every one)" in " ".join(" ".join(lines).split())
    assert "op-00049" in flat
    assert "op-00050" not in flat


def test_report_of_a_dry_run_shows_what_is_running() -> None:
    records = [{"name": str(listed(1)["name"]), "outcome": "not_attempted"}]
    records[0].update(listing_fields(listed(1)))
    data = {
        "totals": {**empty_totals(), "not_attempted": 1},
        "arguments": {"dry_run": True},
        "selection": {"listed": 1, "selected": 1, "skipped": {}},
        "operations": records,
    }
    out, buffer = console(100)
    render_saved(data, "table", console=out)
    text = " ".join(plain(buffer.getvalue()))
    assert "what the selection holds" in text
    assert "prod-eu-west-checkout" in text
    assert "1 listed; 1 selected" in text


def test_prompt_names_count_identity_places_and_examples() -> None:
    names = [op(i) for i in range(3)] + [op(9, "projects/q/locations/eu")]
    places = places_touched(names)
    assert places == {"projects/p/locations/l": 3, "projects/q/locations/eu": 1}
    text = prompt_text(
        120, names[:2], "https://clouddeploy.googleapis.com", identity="sa@x.iam", places=places
    )
    assert text.splitlines() == [
        "About to cancel 120 operation(s) at https://clouddeploy.googleapis.com",
        "  acting as: sa@x.iam",
        "  in: projects/p/locations/l (3), projects/q/locations/eu (1)",
        "for example:",
        f"  {op(0)}",
        f"  {op(1)}",
        "  … and 118 more",
        "Proceed? [y/N] ",
    ]


def test_places_are_bounded() -> None:
    many = places_touched(f"projects/p{i}/locations/l/operations/o" for i in range(1500))
    assert len(many) == 1001
    assert many["other"] == 500


def test_summary_table_without_a_stop_keeps_the_deadline_reason() -> None:
    writer_summary = summarize([{"name": op(1), "outcome": "still_running"}])
    out, buffer = console(80)
    out.print(summary_table({"still_running": 1}, writer_summary))
    assert "reconcile deadline" in " ".join(" ".join(plain(buffer.getvalue())).split())
    print_summary(out, {"still_running": 1}, writer_summary, stopped="interrupted")


# ---- a real pseudo-terminal -------------------------------------------------------------------

_DRIVER = textwrap.dedent(
    """
    import sys
    from bulkcancel._models import OperationResult, Outcome
    from bulkcancel._report import ReportWriter
    from bulkcancel._ui import Options, Phase, ProgressSnapshot, Ui

    total = 278
    writer = ReportWriter()
    ui = Ui(Options(out_format="jsonl", jsonl_summary=True))
    state = {"settled": 0}

    def snapshot():
        settled = state["settled"]
        return ProgressSnapshot(
            phase=Phase.CANCELLING, total=total, sent=min(total, settled + 40),
            accepted=settled + 30 if settled + 30 < total else total, settled=settled,
            rate=48.0, throttled=7, throttling=True, totals=dict(writer.totals),
        )

    ui.start(total, snapshot)
    for i in range(total):
        outcome = [Outcome.CANCELLED, Outcome.COMPLETED_ANYWAY, Outcome.UNSUPPORTED][i % 3]
        name = f"projects/p/locations/us-central1/operations/op-{i:05d}"
        ui.advance(writer.add(OperationResult(name, outcome)), writer.totals)
        state["settled"] = i + 1
        ui.refresh()
    ui.finish(writer, {"exit_code": 3, "requests": {"total": 600, "throttled": 7}})
    writer.close()
    print("driver done", file=sys.stderr)
    """
)


@pytest.fixture
def driver(tmp_path: Path) -> Path:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    return script


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("rows", "cols"), [(24, 80), (40, 120)])
def test_a_real_terminal_with_stdout_piped(
    driver: Path, tmp_path: Path, rows: int, cols: int
) -> None:
    out_file = tmp_path / "records.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    env.update(TERM="xterm-256color", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    # stderr is the terminal; stdout goes down a pipe (through cat, into a file).
    shell = f"'{sys.executable}' '{driver}' | cat > '{out_file}'"
    child = pexpect.spawn("/bin/sh", ["-c", shell], env=env, dimensions=(rows, cols), timeout=30)
    child.expect("driver done")
    screen = (child.before or b"").decode()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(records) == 279
    assert records[-1]["summary"]["exit_code"] == 3
    assert "\x1b[" not in out_file.read_text()

    assert "\x1b[" in screen  # the live display was drawn
    frames = [seg for line in ANSI.sub("", screen).split("\n") for seg in line.split("\r")]
    for segment in frames:
        assert len(segment.rstrip()) <= cols, segment
        assert "…" not in segment, segment
    text = "\n".join(frames)
    for phrase in ["278/278 settled", "sent 278", "accepted 278", "7 throttled (slowing down)"]:
        assert phrase in text, phrase
    assert any(segment.startswith("done ") for segment in frames)  # the frame left on screen
    for phrase in ["cancelled 93", "completed_anyway 93", "unsupported 92"]:
        assert phrase in text, phrase
    assert "exit 3: the run finished; some targets ended in another outcome" in " ".join(
        " ".join(frames).split()
    )
    assert "operations/op-00000" not in text  # records never reached the terminal
