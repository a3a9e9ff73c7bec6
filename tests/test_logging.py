"""``--log-format json``: one JSON object per line on stderr, with Cloud Logging's fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from bulkcancel._logging import LOGGER, event, setup_logging


@pytest.fixture(autouse=True)
def restore_logger() -> Iterator[None]:
    log = logging.getLogger(LOGGER)
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:] = saved[0]
    log.setLevel(saved[1])
    log.propagate = saved[2]


def lines(captured: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in captured.splitlines()]


def test_json_lines_carry_severity_time_message_and_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("json", logging.INFO)
    before = datetime.now().astimezone()
    event("run started", targets=120, endpoint="https://clouddeploy.googleapis.com")
    event("throttled", level=logging.WARNING, name="x", message="clash", rate=12.5)
    logging.getLogger("bulkcancel.engine").debug("not shown at INFO")
    logging.getLogger("bulkcancel.client").error("gave up on %s", "op-1", extra={"status": 503})
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is for data
    got = lines(captured.err)
    assert [(g["severity"], g["message"]) for g in got] == [
        ("INFO", "run started"),
        ("WARNING", "throttled"),
        ("ERROR", "gave up on op-1"),
    ]
    assert got[0]["targets"] == 120
    assert got[0]["endpoint"] == "https://clouddeploy.googleapis.com"
    assert got[0]["logger"] == "bulkcancel"
    # A field named like a reserved one is kept, renamed, and does not break the record.
    assert got[1]["name"] == "x"
    assert got[1]["field_message"] == "clash"
    assert got[2]["status"] == 503
    assert got[2]["logger"] == "bulkcancel.client"
    for entry in got:
        stamp = str(entry["time"])
        assert stamp.endswith("Z")
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs(when - before) < timedelta(minutes=5)


def test_tokens_never_reach_a_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json", logging.DEBUG)
    log = logging.getLogger(LOGGER)
    log.warning("sent Authorization: Bearer %s", "ya29.a0AfH6SMB-secret_value")
    event("token in a field", header="Bearer abc.def")
    err = capsys.readouterr().err
    assert "secret_value" not in err
    assert "abc.def" not in err
    got = lines(err)
    assert got[0]["message"] == "sent Authorization: Bearer [redacted]"
    assert got[1]["header"] == "Bearer [redacted]"


def test_exceptions_become_fields_not_loose_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json", logging.INFO)
    error = ValueError("bad body")
    try:
        raise error
    except ValueError:
        logging.getLogger(LOGGER).exception("listing failed")
    got = lines(capsys.readouterr().err)
    assert len(got) == 1
    assert got[0]["error"] == "ValueError: bad body"
    assert "Traceback" in str(got[0]["stack_trace"])


def test_text_format_and_setup_is_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json")
    setup_logging("text", "INFO")  # replaces, never adds a second handler
    event("stopping", reason="interrupted")
    err = capsys.readouterr().err
    assert err == "bulkcancel: info: stopping (reason=interrupted)\n"
    assert not logging.getLogger(LOGGER).propagate
