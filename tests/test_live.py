"""The live display's snapshot: the request rate and throttling it reports (``_live``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from bulkcancel._live import Progress, RunStatus
from bulkcancel._report import ReportWriter
from bulkcancel._run import BulkRun


def progress_on(stats: SimpleNamespace, clock: list[float]) -> Progress:
    """A snapshot reader over ``stats`` (the client's counters) on a clock the test moves:
    the rate and throttling read those counters only."""
    run = SimpleNamespace(client=SimpleNamespace(stats=stats))
    return Progress(
        cast(BulkRun, run), cast(ReportWriter, None), cast(RunStatus, None), clock=lambda: clock[0]
    )


def test_snapshots_far_apart_measure_the_rate_since_the_one_before() -> None:
    """A log's progress lines come every 30 s: each reports the rate and throttling since the
    line before, the first since the run began (with only the last five seconds kept, each
    said 0 req/s and no throttling)."""
    stats, clock = SimpleNamespace(total=0, throttled=0), [0.0]
    progress = progress_on(stats, clock)  # (the first line's rate counts from here)
    clock[0], stats.total, stats.throttled = 30.0, 600, 4
    assert progress._recent() == (20.0, True)
    clock[0], stats.total = 60.0, 900
    assert progress._recent() == (10.0, False)


def test_snapshots_close_together_measure_the_last_five_seconds() -> None:
    """The live display refreshes many times a second: the rate is over about the last five
    seconds, not since the run began (10/s for five seconds, then 50/s)."""
    stats, clock = SimpleNamespace(total=0, throttled=0), [0.0]
    progress = progress_on(stats, clock)
    for tick in range(1, 101):
        clock[0] = tick / 10
        stats.total += 1 if tick <= 50 else 5
        stats.throttled += tick == 20
        rate, throttling = progress._recent()
    assert rate == 50.0
    assert not throttling  # (the throttle came 8 s ago)
