"""``--until-quiet`` through the real command line (a child process) against the loopback fake
with a runaway producer: the done-when of issue 13, Ctrl-C mid-drain, a resumed drain, and
``--max-operations`` reached mid-drain. The fake runs in the test's loop on the real clock."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from bulkcancel.testing import FakeOperationsServer, RequestRecord, RunawayProducer, populate
from tests._e2e import bulkcancel_command, load_report, process_env

PARENT = "projects/p/locations/l"


def cancel_command(url: str, *args: str) -> list[str]:
    return bulkcancel_command(
        "cancel", "--parent", PARENT, "--endpoint", url, "--anonymous", "--yes",
        "--log-format", "json", "--format", "json", *args,
    )  # fmt: skip


async def run(command: list[str]) -> tuple[int, str, float]:
    """Run to the end; returns the exit code, stderr, and when it ended (monotonic)."""
    done = await anyio.run_process(command, check=False, env=process_env())
    return done.returncode, done.stderr.decode(), time.monotonic()


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    records = report["operations"]
    named = {r["name"]: r for r in records}
    assert len(named) == len(records), "an operation was reported twice"
    return named


async def test_every_operation_created_during_the_run_ends_cancelled(tmp_path: Path) -> None:
    fake = FakeOperationsServer()
    populate(fake, PARENT, 30)
    report_path = tmp_path / "r.json"
    async with fake.serve() as url:
        producer = fake.runaway(PARENT, rate=15, duration=4)
        code, stderr, ended = await run(
            cancel_command(url, "--until-quiet", "2s", "--report", str(report_path))
        )
    assert code == 0, stderr
    fake.catch_up(producer.ends_at)
    report = load_report(report_path)
    records = by_name(report)
    created = producer.names()
    assert producer.made == len(created) == 61
    for name in [*created, *(f"{PARENT}/operations/op-{i:06d}" for i in range(30))]:
        assert fake.operation(name).accepted_cancels == 1, name
        assert fake.operation(name).done(fake.clock()), name
        assert records[name]["outcome"] == "cancelled", name
    assert report["totals"]["cancelled"] == len(records) == 30 + len(created)
    selection = report["selection"]
    # Every operation was listed and selected once; those the first listing missed appeared
    # later (the producer was still going when the run started).
    assert selection["listed"] == selection["selected"] == 30 + len(created)
    assert 0 < selection["appeared"] < len(created)
    assert selection["passes"] == selection["drain"]["passes"] + 1 >= 3
    assert selection["drain"]["ended"] == "quiet"
    assert report["arguments"]["until_quiet_seconds"] == 2.0
    # "Within DURATION plus a little" after the producer stopped: the confirming pass starts
    # at most 2 s after the last new operation was seen; the rest is one pass, the last
    # cancels' reconciliation and the process's exit, on a shared machine.
    assert ended - producer.ends_at < 2.0 + 6.0
    assert '"message":"drain ended"' in stderr


async def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)  # polling the fake's state, not letting things settle


def appeared_and_cancelled(fake: FakeOperationsServer, producer: RunawayProducer) -> int:
    """The producer's operations created after the run's first list call that were
    cancelled since: they can only have been found by re-listing."""
    lists = [r.at for r in fake.log if r.kind == "list"]
    if not lists:
        return 0
    return sum(
        fake.operation(producer.name(i)).accepted_cancels
        for i in range(producer.made)
        if producer.start + i / producer.rate > lists[0]
    )


async def test_ctrl_c_mid_drain_then_a_resumed_drain_cancels_nothing_twice(
    tmp_path: Path,
) -> None:
    fake = FakeOperationsServer()
    populate(fake, PARENT, 10)
    journal = tmp_path / "j.journal"
    first, second = tmp_path / "r1.json", tmp_path / "r2.json"
    async with fake.serve() as url:
        producer = fake.runaway(PARENT, rate=10, duration=600)  # runs past the first run
        command = cancel_command(url, "--until-quiet", "30s", "--journal", str(journal))
        process = subprocess.Popen(
            [*command, "--report", str(first)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=process_env(),
        )  # fmt: skip
        try:
            # Mid-drain: some operations that appeared after the start have been cancelled.
            await _wait_for(lambda: appeared_and_cancelled(fake, producer) >= 5)
            process.send_signal(signal.SIGINT)
            code = await anyio.to_thread.run_sync(lambda: process.wait(30))
        finally:
            if process.poll() is None:
                process.kill()
        stderr = process.stderr.read().decode() if process.stderr else ""
        assert code == 130, stderr
        assert "Traceback" not in stderr
        report = load_report(first)
        assert report["stopped"] == "interrupted"
        records = by_name(report)
        accepted = {o.name for o in fake.operations() if o.accepted_cancels}
        assert accepted <= set(records)  # every operation a cancel reached is reported
        assert report["selection"]["appeared"] >= 5
        cancelled_before = {n for n, r in records.items() if r["outcome"] == "cancelled"}
        assert len(cancelled_before) >= 10 + 5
        # The producer stops; the resumed drain finishes the job with the same journal.
        producer.duration = (producer.made + 5) / producer.rate
        code, stderr, _ = await run([*command, "--until-quiet", "1s", "--report", str(second)])
    assert code == 0, stderr
    fake.catch_up(producer.ends_at)
    records = by_name(load_report(second))
    for operation in fake.operations():
        assert operation.accepted_cancels == 1, operation.name  # nothing cancelled twice
        assert records[operation.name]["outcome"] == "cancelled", operation.name
    for name in cancelled_before:
        assert records[name].get("from_journal") is True, name


async def test_max_operations_reached_mid_drain_stops_cancelling_with_exit_3(
    tmp_path: Path,
) -> None:
    fake = FakeOperationsServer()
    populate(fake, PARENT, 10)
    report_path = tmp_path / "r.json"
    async with fake.serve() as url:
        # The producer starts when the first listing has been answered, not on the wall
        # clock: a CLI that starts slowly would otherwise see more than 25 in its first
        # listing and rightly refuse up front (exit 2) instead of reaching the limit mid-drain.
        producer = fake.runaway(PARENT, rate=20, duration=3, start=math.inf)

        def start_on_first_list(record: RequestRecord) -> None:
            if record.kind == "list" and producer.start == math.inf:
                producer.start = record.at

        fake.on_record = start_on_first_list
        code, stderr, _ = await run(
            cancel_command(
                url, "--until-quiet", "1s", "--max-operations", "25", "--report", str(report_path)
            )
        )
    assert code == 3, stderr
    assert "--max-operations 25 reached while draining" in stderr
    records = by_name(load_report(report_path))
    cancelled = [n for n, r in records.items() if r["outcome"] == "cancelled"]
    over = [n for n, r in records.items() if r["outcome"] == "not_attempted"]
    assert len(cancelled) == 25
    assert over and all(records[n]["reason"] == "max_operations" for n in over)
    assert sum(o.accepted_cancels for o in fake.operations()) == 25
    report = load_report(report_path)
    assert report["selection"]["drain"]["ended"] == "max_operations"
    assert report["selection"]["drain"]["over_limit"] == len(over)
    assert producer.made > 25 - 10
    assert json.loads(json.dumps(report["exit_code"])) == 3
