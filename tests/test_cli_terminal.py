"""The real ``bulkcancel cancel`` in a real pseudo-terminal, against the loopback fake.

stderr is the terminal (80x24 and 120x40); stdout goes down a pipe. The pipe must get every
record and the summary record, and nothing else; the terminal gets the live display (phase,
counts) and the final table explaining the exit code, and no record.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import anyio
import anyio.to_thread
import pexpect
import pytest

from bulkcancel.testing import Behavior, FakeOperationsServer, populate
from tests._e2e import bulkcancel_command, process_env

pytestmark = pytest.mark.timeout(120)
PARENT = "projects/p/locations/us-central1"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Za-z0-9]")


def in_terminal(shell: str, rows: int, cols: int, cwd: Path) -> pexpect.spawn:
    env = process_env(TERM="xterm-256color")
    return pexpect.spawn(
        "/bin/sh", ["-c", shell], env=env, dimensions=(rows, cols), cwd=str(cwd), timeout=60
    )


async def screen_of(child: pexpect.spawn) -> str:
    """Everything the terminal showed, once the command has ended."""
    await anyio.to_thread.run_sync(lambda: child.expect(pexpect.EOF, timeout=90))
    child.close()
    return (child.before or b"").decode(errors="replace")


def segments(screen: str) -> list[str]:
    """The screen's text pieces between line feeds and carriage returns, escape codes removed."""
    return [seg for line in ANSI.sub("", screen).split("\n") for seg in line.split("\r")]


def flat(screen: str) -> str:
    return " ".join(" ".join(segments(screen)).split())


@pytest.mark.parametrize(("rows", "cols"), [(24, 80), (40, 120)])
async def test_jsonl_down_a_pipe_with_the_display_on_the_terminal(
    tmp_path: Path, rows: int, cols: int
) -> None:
    server = FakeOperationsServer()
    server.latency = 0.01
    names = populate(server, PARENT, 150, Behavior.CANCELS)
    names += populate(server, PARENT, 30, Behavior.NOT_CANCELLABLE, prefix="stuck-")
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    async with server.serve() as url:
        cancel = bulkcancel_command(
            "cancel", "--names-file", "names.txt", "--anonymous", "--endpoint", url, "--yes",
            "--format", "jsonl", "--report", "r.json", "--rate", "200", "--deadline", "5",
        )  # fmt: skip
        # The exit code of bulkcancel itself, not of cat at the end of the pipe.
        shell = f"{{ {shlex.join(cancel)}; echo $? > code; }} | cat > records.jsonl"
        screen = await screen_of(in_terminal(shell, rows, cols, tmp_path))

    assert (tmp_path / "code").read_text().strip() == "3"
    out = (tmp_path / "records.jsonl").read_text()
    assert "\x1b" not in out
    *records, last = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["name"] for r in records) == sorted(names)
    assert last["summary"]["cancelled"] == 150
    assert last["summary"]["unsupported"] == 30
    assert last["summary"]["exit_code"] == 3

    assert "\x1b[" in screen  # the live display was drawn
    for segment in segments(screen):
        assert len(segment.rstrip()) <= cols, segment
    text = flat(screen)
    assert re.search(r"cancelling .* \d+/180 settled", text), text[-3000:]
    assert re.search(r"sent \d+ accepted \d+ \d+ req/s", text)
    assert "180/180 settled" in text
    assert "sent 180 accepted 150" in text  # every cancel answered; 30 refused as unsupported
    assert "exit 3: the run finished; some targets ended in another outcome" in text
    assert "180 target(s)" in text and "report: r.json" in text
    assert 'operations/op-000000"' not in text  # no JSON record reached the terminal


async def test_a_dry_run_on_a_terminal_shows_what_is_running(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    for i in range(40):
        target = "projects/p/locations/us-central1/targets/" + ("prod" if i % 4 else "staging")
        server.add_operation(f"{PARENT}/operations/op-{i:03d}", target=target, age=7200)
    async with server.serve() as url:
        cancel = bulkcancel_command(
            "cancel", "--parent", PARENT, "--anonymous", "--endpoint", url, "--dry-run",
            "--target", "staging$",
        )  # fmt: skip
        screen = await screen_of(in_terminal(shlex.join(cancel), 24, 80, tmp_path))
        # Nothing matches: the summary says what was listed and which filter skipped it.
        nothing = bulkcancel_command(
            "cancel", "--parent", PARENT, "--anonymous", "--endpoint", url, "--dry-run",
            "--target", "targets/nowhere$",
        )  # fmt: skip
        empty = await screen_of(in_terminal(shlex.join(nothing), 24, 80, tmp_path))
    assert server.requests("cancel") == []
    text = flat(screen)
    assert "DRY RUN" in text
    assert "what the selection holds" in text
    assert "op-000 │ us-central1 │ deploy │ staging │ 2h 0m │ running" in text, text
    assert "op-001" not in text  # a prod operation: not selected
    assert "40 listed; 10 selected; skipped: 30 by --target" in text
    assert "exit 0: dry run: every target is valid; nothing was sent" in text
    for segment in segments(screen):
        assert len(segment.rstrip()) <= 80, segment
    assert "40 listed; 0 selected; skipped: 40 by --target" in flat(empty)
