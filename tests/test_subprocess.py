"""Real processes: SIGKILL and resume, SIGINT/SIGTERM, shards on a job runner, a real terminal.

The fake server runs in the test's event loop (so its state can be inspected); bulkcancel runs
as a separate ``python -m bulkcancel`` process, as users run it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pexpect
import pytest

from bulkcancel._journal import read_journal
from bulkcancel.testing import Behavior, FakeOperationsServer, populate
from tests._e2e import load_report, mixed_world, outcomes, write_lines

pytestmark = pytest.mark.timeout(120)
PARENT = "projects/p/locations/us-central1"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulkcancel", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUD_RUN_", "JOB_"))}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="120", **extra)
    return env


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)
    assert predicate(), what


async def finish(process: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        with anyio.fail_after(timeout):
            while process.poll() is None:
                await anyio.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode


def start(args: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
    kw.setdefault("env", child_env())
    return subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # no controlling terminal
        **kw,
    )


async def test_sigkill_then_resume_reports_everything_once_and_recancels_only_in_flight(
    tmp_path: Path,
) -> None:
    server = FakeOperationsServer()
    server.latency = 0.01
    names = populate(server, PARENT, 400, Behavior.CANCELS)
    names_file = write_lines(tmp_path / "names.txt", names)
    journal = tmp_path / "run.journal"
    base = [
        "cancel", "--names-file", str(names_file), "--anonymous", "--yes", "--journal",
        str(journal), "--rate", "150", "--concurrency", "8", "--quiet",
    ]  # fmt: skip
    async with server.serve() as url:
        first = start(command(*base, "--endpoint", url, "--report", str(tmp_path / "r1.json")))
        try:
            await wait_for(
                lambda: journal.exists() and journal.stat().st_size > 20_000, 60, "progress"
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert first.returncode == -signal.SIGKILL
        await anyio.sleep(0.2)  # let the server finish what the dead process had sent
        _, state = read_journal(journal)
        in_flight = set(state.in_flight)
        finished = set(state.outcomes)
        assert finished, "killed before anything finished: the test proves nothing"
        assert len(finished) < len(names), "finished before the kill: the test proves nothing"
        seen_before = len(server.log)

        second = start(command(*base, "--endpoint", url, "--report", str(tmp_path / "r2.json")))
        code = await finish(second, 60)
    assert code == 0, second.stderr.read().decode() if second.stderr else ""
    report = load_report(tmp_path / "r2.json")
    assert outcomes(report) == dict.fromkeys(names, "cancelled")
    twice = {op.name for op in server.operations() if op.accepted_cancels > 1}
    assert twice <= in_flight
    assert len(twice) <= 8  # at most --concurrency requests can be in flight
    touched_again = {r.name for r in server.log[seen_before:]} - {PARENT}
    assert not touched_again & finished


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_signal_stops_gracefully_with_a_complete_report(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    server = FakeOperationsServer()
    server.latency = 0.05
    names = populate(server, PARENT, 400, Behavior.CANCELS)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        process = start(
            command(
                "cancel",
                "--names-file",
                str(write_lines(tmp_path / "n.txt", names)),
                "--anonymous",
                "--endpoint",
                url,
                "--yes",
                "--rate",
                "40",
                "--report",
                str(report_path),
            ),
        )
        await wait_for(lambda: len(server.requests("cancel")) >= 10, 60, "started")
        sent_at = time.monotonic()
        process.send_signal(signum)
        assert await finish(process, 15) == code
        elapsed = time.monotonic() - sent_at
    assert elapsed < 10
    report = load_report(report_path)
    got = outcomes(report)
    assert set(got) == set(names)
    assert sum(report["totals"].values()) == len(names)
    cancelled_on_server = {r.name for r in server.requests("cancel")}
    never_tried = set(names) - cancelled_on_server
    assert never_tried, "the run finished before the signal: the test proves nothing"
    assert all(got[name] == "not_attempted" for name in never_tried)
    assert report["stopped"]


async def test_second_sigint_stops_at_once(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    server.latency = 0.3
    names = populate(server, PARENT, 200, Behavior.NEVER)
    report_path = tmp_path / "r.json"
    async with server.serve() as url:
        process = start(
            command(
                "cancel",
                *names,
                "--anonymous",
                "--endpoint",
                url,
                "--yes",
                "--rate",
                "50",
                "--report",
                str(report_path),
            ),
        )
        await wait_for(lambda: len(server.requests("cancel")) >= 5, 60, "started")
        process.send_signal(signal.SIGINT)
        await anyio.sleep(0.3)
        sent_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert await finish(process, 15) == 130
        assert time.monotonic() - sent_at < 5
    assert set(outcomes(load_report(report_path))) == set(names)


async def test_three_cloud_run_tasks_split_the_input_and_merge_to_one_report(
    tmp_path: Path,
) -> None:
    world = mixed_world(7, per_kind=8)
    names_file = write_lines(tmp_path / "names.txt", world.lines)
    async with world.server.serve() as url:
        common = ["cancel", "--names-file", str(names_file), "--anonymous", "--endpoint", url]
        common += ["--yes", "--deadline", "2", "--shard", "auto", "--quiet"]
        processes = [
            start(
                command(*common, "--report", str(tmp_path / f"shard-{i}.json")),
                env=child_env(CLOUD_RUN_TASK_INDEX=str(i), CLOUD_RUN_TASK_COUNT="3"),
            )
            for i in range(3)
        ]
        codes = [await finish(p, 60) for p in processes]
    assert codes == [3, 3, 3]
    parts = [outcomes(load_report(tmp_path / f"shard-{i}.json")) for i in range(3)]
    assert all(parts), "a shard got nothing"
    seen: set[str] = set()
    for part in parts:
        assert not seen & set(part)
        seen |= set(part)
    merged_all = {k: v for part in parts for k, v in part.items()}
    assert merged_all == world.expected

    merged_path = tmp_path / "all.json"
    merge = subprocess.run(
        command(
            "merge-reports",
            *(str(tmp_path / f"shard-{i}.json") for i in range(3)),
            "-o",
            str(merged_path),
        ),
        capture_output=True,
        env=child_env(),
        timeout=30,
        check=False,
    )
    assert merge.returncode == 3, merge.stderr  # as a run: some outcomes are not successes
    merged = load_report(merged_path)
    assert outcomes(merged) == world.expected

    single = mixed_world(7, per_kind=8)
    async with single.server.serve() as url:
        one = start(
            command(
                "cancel",
                "--names-file",
                str(names_file),
                "--anonymous",
                "--endpoint",
                url,
                "--yes",
                "--deadline",
                "2",
                "--quiet",
                "--report",
                str(tmp_path / "one.json"),
            ),
        )
        assert await finish(one, 60) == 3
    alone = load_report(tmp_path / "one.json")
    assert merged["totals"] == alone["totals"]
    assert outcomes(merged) == outcomes(alone)

    # The same target in two reports is refused.
    twice = subprocess.run(
        command(
            "merge-reports",
            str(tmp_path / "shard-0.json"),
            str(tmp_path / "shard-0.json"),
            "-o",
            str(tmp_path / "bad.json"),
        ),
        capture_output=True,
        env=child_env(),
        timeout=30,
        check=False,
    )
    assert twice.returncode == 2
    assert b"twice" in twice.stderr + twice.stdout
    assert not (tmp_path / "bad.json").exists()


async def test_kubernetes_indexed_job_shards_cover_the_input(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 60)
    names_file = write_lines(tmp_path / "names.txt", names)
    async with server.serve() as url:
        processes = [
            start(
                command(
                    "cancel",
                    "--names-file",
                    str(names_file),
                    "--anonymous",
                    "--endpoint",
                    url,
                    "--yes",
                    "--shard",
                    "auto",
                    "--shard-count",
                    "3",
                    "--quiet",
                    "--report",
                    str(tmp_path / f"k-{i}.json"),
                ),
                env=child_env(JOB_COMPLETION_INDEX=str(i)),
            )
            for i in range(3)
        ]
        assert [await finish(p, 60) for p in processes] == [0, 0, 0]
    parts = [set(outcomes(load_report(tmp_path / f"k-{i}.json"))) for i in range(3)]
    assert sum(len(p) for p in parts) == len(names)
    assert set().union(*parts) == set(names)


# ---- a real terminal --------------------------------------------------------------------------


def spawn(args: Sequence[str], **kw: Any) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "bulkcancel", *args],
        env=child_env(),
        timeout=30,
        dimensions=(40, 120),
        **kw,
    )


async def expect_in_thread(child: pexpect.spawn, pattern: Any, timeout: float = 30) -> int:
    index: int = await anyio.to_thread.run_sync(lambda: child.expect(pattern, timeout=timeout))
    return index


async def test_prompt_shows_count_and_sample_and_no_sends_nothing(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 25)
    async with server.serve() as url:
        child = spawn(["cancel", *names, "--anonymous", "--endpoint", url])
        await expect_in_thread(child, r"About to cancel 25 operation")
        # The display's frame above the question says what is true: found, nothing sent yet
        # (it said "cancelling 0/25", as if sending had begun).
        assert b"cancelling" not in child.before
        assert b"25 found" in child.before
        await expect_in_thread(child, r"operations/op-0000\d\d")
        await expect_in_thread(child, r"Proceed\? \[y/N\]")
        child.sendline("n")
        await expect_in_thread(child, pexpect.EOF)
        child.close()
        assert child.exitstatus == 2
        assert server.requests("cancel") == []

        child = spawn(["cancel", *names, "--anonymous", "--endpoint", url])
        await expect_in_thread(child, r"Proceed\? \[y/N\]")
        child.sendline("y")
        await expect_in_thread(child, pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert len(server.requests("cancel")) == 25


async def test_ctrl_c_at_the_prompt_sends_nothing_and_exits_130(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 4)
    async with server.serve() as url:
        child = spawn(["cancel", *names, "--anonymous", "--endpoint", url])
        await expect_in_thread(child, r"Proceed\? \[y/N\]")
        child.sendintr()
        await expect_in_thread(child, r"Stopping", timeout=5)
        await expect_in_thread(child, pexpect.EOF)
        child.close()
    assert child.exitstatus == 130
    assert server.requests("cancel") == []


async def test_without_a_terminal_and_without_yes_nothing_is_sent(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 3)
    async with server.serve() as url:
        process = start(command("cancel", *names, "--anonymous", "--endpoint", url))
        assert await finish(process, 30) == 2
    assert process.stderr is not None
    assert b"--yes" in process.stderr.read()
    assert server.requests("cancel") == []


async def test_progress_on_a_terminal_only_and_ctrl_c_is_heard_at_once(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    server.latency = 0.05
    names = populate(server, PARENT, 300, Behavior.CANCELS)
    names_file = str(write_lines(tmp_path / "n.txt", names))
    async with server.serve() as url:
        args = ["cancel", "--names-file", names_file, "--anonymous", "--endpoint", url]
        args += ["--yes", "--rate", "60", "--report", str(tmp_path / "r.json")]
        child = spawn(args)
        await expect_in_thread(child, r"cancelling.*\d+/300")  # the live bar, drawn with ANSI
        assert "\x1b[" in (child.before or b"").decode() + (child.after or b"").decode()
        child.sendintr()
        heard_at = time.monotonic()
        await expect_in_thread(child, r"Stopping", timeout=5)
        assert time.monotonic() - heard_at < 1.5
        await expect_in_thread(child, pexpect.EOF)
        child.close()
        assert child.exitstatus == 130 or child.signalstatus == signal.SIGINT

        # No terminal: no bar, no escape codes.
        server2 = populate(server, "projects/p/locations/other", 20)
        process = start(command("cancel", *server2, "--anonymous", "--endpoint", url, "--yes"))
        assert await finish(process, 30) == 0
    assert process.stderr is not None
    err = process.stderr.read()
    assert b"\x1b[" not in err
    assert b"cancelled" in err


def test_report_json_roundtrip_of_a_process_run(tmp_path: Path) -> None:
    """The saved report re-renders as JSON identical in content (bulkcancel report)."""
    report = tmp_path / "r.json"
    report.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "totals": dict.fromkeys(["cancelled", "invalid"], 1),
                "operations": [
                    {"name": "projects/p/locations/l/operations/a", "outcome": "cancelled"},
                    {"name": "bad", "outcome": "invalid", "reason": "shape"},
                ],
            }
        )
    )
    out = subprocess.run(
        command("report", str(report), "--format", "json"),
        capture_output=True,
        env=child_env(),
        timeout=30,
        check=True,
    )
    assert json.loads(out.stdout)["operations"][1]["reason"] == "shape"


def test_the_demo_checks_itself_and_exits_0() -> None:
    done = subprocess.run(
        command("demo", "--quiet"), capture_output=True, env=child_env(), timeout=110, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert b"demo OK" in done.stderr


def test_fake_server_command_serves_and_counts(tmp_path: Path) -> None:
    names_out, expected_out = tmp_path / "names.txt", tmp_path / "expected.json"
    server = subprocess.Popen(
        command(
            "fake-server", "--port", "0", "--operations", "30", "--mix", "3",
            "--names-out", str(names_out), "--expected-out", str(expected_out),
        ),
        stdout=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        names = names_out.read_text().split()
        expected = json.loads(expected_out.read_text())
        assert sorted(expected) == sorted(names)
        assert len(set(expected.values())) > 1  # a mix, not all one behaviour
        run = subprocess.run(
            command("cancel", *names, "--anonymous", "--endpoint", url, "--yes", "--quiet",
                    "--format", "json"),
            capture_output=True, env=child_env(), timeout=60, check=False,
        )  # fmt: skip
        got = {r["name"]: r["outcome"] for r in json.loads(run.stdout)["operations"]}
        assert got == expected
        import urllib.request

        with urllib.request.urlopen(f"{url}/_fake/stats", timeout=10) as response:
            stats = json.load(response)
        assert stats["by_kind"]["cancel"] == 30
    finally:
        server.terminate()
        server.wait(10)
