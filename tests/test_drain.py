"""Drain until quiet on virtual time: the library against the in-memory fake with a runaway
producer (the model's clock is the loop's, so the producer runs on virtual time too)."""

from __future__ import annotations

import asyncio
from typing import Any

import bulkcancel
from bulkcancel._drain import Schedule
from bulkcancel.testing import MemoryOperations, populate
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
