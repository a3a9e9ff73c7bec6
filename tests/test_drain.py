"""Drain until quiet on virtual time: the library against the in-memory fake with a runaway
producer (the model's clock is the loop's, so the producer runs on virtual time too)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rich.console import Console

import bulkcancel
from bulkcancel._drain import Schedule
from bulkcancel._ui import Phase, ProgressSnapshot, render_progress
from bulkcancel.testing import MemoryOperations, OperationsModel, populate
from tests._support import now, virtual

PARENT = "projects/p/locations/l"


def world(first: int = 20) -> MemoryOperations:
    mem = MemoryOperations(clock=lambda: asyncio.get_running_loop().time())
    populate(mem.model, PARENT, first)
    return mem


async def drain(mem: MemoryOperations, **kw: Any) -> bulkcancel.Report:
    options: dict[str, Any] = {
        "parents": [PARENT],
        "endpoint": "http://mem.invalid",
        "anonymous": True,
        "transport": mem.transport,
        "rate": 1000.0,
        "poll_initial": 0.05,
        "poll_max": 0.2,
        "until_quiet": 3.0,
    }
    options.update(kw)
    return await bulkcancel.cancel_operations(**options)


@virtual
async def test_every_operation_the_producer_creates_ends_cancelled() -> None:
    mem = world()
    producer = mem.model.runaway(PARENT, rate=20, duration=8, start=now() + 0.5)
    report = await drain(mem)
    ended = now()
    mem.model.catch_up()
    created = producer.names()
    assert producer.made == len(created) == 161
    outcomes = {r.name: r.outcome.value for r in report.operations}
    assert len(outcomes) == len(report.operations)  # each once
    for name in created:
        assert mem.model.operation(name).accepted_cancels == 1
        assert outcomes[name] == "cancelled"
    assert report.totals["cancelled"] == 20 + len(created)
    selection = report.meta["selection"]
    assert selection["appeared"] == len(created)
    assert selection["passes"] >= 2
    # Ends within the quiet period plus a little after the last operation appeared.
    assert producer.ends_at + 3.0 <= ended <= producer.ends_at + 3.0 + 2.0


def test_the_schedule_backs_off_to_its_cap_and_comes_back_fast() -> None:
    schedule = Schedule(60.0, rate=50.0)
    waits = [schedule.after_pass(found_new=False, calls=1) for _ in range(8)]
    assert waits == [2.0, 4.0, 8.0, 15.0, 15.0, 15.0, 15.0, 15.0]
    assert schedule.after_pass(found_new=True, calls=1) == 1.0
    # A pass that cost 100 list calls waits at least 100 / (0.2 * 50) = 10 s.
    assert schedule.after_pass(found_new=True, calls=100) == 10.0
    # The confirming pass starts at quiet_since + until_quiet, not later.
    assert schedule.next_start(100.0, 15.0, quiet_since=50.0) == 110.0
    assert schedule.next_start(100.0, 15.0, quiet_since=95.0) == 115.0


@virtual
async def test_still_running_operations_are_read_once_more_before_the_end() -> None:
    mem = world(first=0)
    # Each takes 2 s to honour its cancel; the deadline gives up after 0.5 s.
    producer = mem.model.runaway(PARENT, rate=5, duration=2, start=now(), cancel_delay=2.0)
    report = await drain(mem, deadline=0.5, until_quiet=4.0)
    records = {r.name: r for r in report.operations}
    assert len(records) == producer.total == len(report.operations)
    for name in producer.names():
        assert records[name].outcome.value == "cancelled", records[name].details
        assert records[name].details["read_again"] is True


@virtual
async def test_a_dry_run_lists_once() -> None:
    mem = world(first=5)
    mem.model.runaway(PARENT, rate=5, duration=30, start=now())
    report = await drain(mem, dry_run=True)
    assert report.totals["not_attempted"] == len(report.operations) == 6
    assert report.meta["selection"]["passes"] == 1
    assert report.meta["selection"]["appeared"] == 0
    assert sum(op.cancel_requests for op in mem.model.operations()) == 0


def test_the_producer_creates_on_its_pace_and_stops() -> None:
    model = OperationsModel(clock=lambda: 0.0)
    producer = model.runaway(PARENT, rate=4, duration=1, start=10.0)
    model.catch_up(9.99)
    assert producer.made == 0
    model.catch_up(10.5)  # at 10.0, 10.25, 10.5
    assert producer.made == 3
    model.catch_up(100.0)
    assert producer.made == producer.total == 5
    assert [op.name for op in model.operations()] == producer.names()
    with pytest.raises(ValueError, match="positive rate"):
        model.runaway(PARENT, rate=0, duration=1)


def test_the_display_shows_the_drain_state() -> None:
    snap = ProgressSnapshot(
        phase=Phase.WATCHING,
        total=400,
        settled=340,
        totals={"cancelled": 340},
        quiet_for=12.4,
        until_quiet=60.0,
    )
    console = Console(width=100, record=True)
    console.print(render_progress(snap, 30.0, 100))
    text = console.export_text()
    assert "watching" in text
    assert "quiet for 12s of 60s, 340 cancelled so far" in text
