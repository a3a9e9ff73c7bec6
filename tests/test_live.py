"""The live display's snapshot (``_live``): the phase it names, its counts, and the request
rate and throttling it reports."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from bulkcancel._live import Progress, RunStatus
from bulkcancel._report import ReportWriter
from bulkcancel._run import BulkRun


def run_at(clock: list[float], **parts: object) -> tuple[SimpleNamespace, Progress]:
    """A run's counters as the snapshot reads them (a run cancelling, unless ``parts`` say
    otherwise), and the snapshot reader over them."""
    run = SimpleNamespace(
        client=SimpleNamespace(stats=SimpleNamespace(total=0, throttled=0)),
        config=SimpleNamespace(dry_run=False),
        drain=None,
        resolver=SimpleNamespace(stats=SimpleNamespace(given=40, listed=60)),
        cancels=SimpleNamespace(answered=30, accepted=25, in_flight=4),
        all_taken=False,
    )
    writer = SimpleNamespace(count=20, totals={"cancelled": 18, "completed_anyway": 2})
    state = SimpleNamespace(signals=[], count=100)
    for name, value in parts.items():
        setattr(state if name in ("signals", "count") else run, name, value)
    progress = Progress(
        cast(BulkRun, run),
        cast(ReportWriter, writer),
        cast(RunStatus, state),
        clock=lambda: clock[0],
    )
    return run, progress


def test_snapshots_far_apart_measure_the_rate_since_the_one_before() -> None:
    """A log's progress lines come every 30 s: each reports the rate and throttling since the
    line before, the first since the run began (with only the last five seconds kept, each
    said 0 req/s and no throttling)."""
    clock = [0.0]
    run, progress = run_at(clock)  # (the first line's rate counts from here)
    stats = run.client.stats
    clock[0], stats.total, stats.throttled = 30.0, 600, 4
    assert progress._recent() == (20.0, True)
    clock[0], stats.total = 60.0, 900
    assert progress._recent() == (10.0, False)


def test_snapshots_close_together_measure_the_last_five_seconds() -> None:
    """The live display refreshes many times a second: the rate is over about the last five
    seconds, not since the run began (10/s for five seconds, then 50/s)."""
    clock = [0.0]
    run, progress = run_at(clock)
    stats = run.client.stats
    for tick in range(1, 101):
        clock[0] = tick / 10
        stats.total += 1 if tick <= 50 else 5
        stats.throttled += tick == 20
        rate, throttling = progress._recent()
    assert rate == 50.0
    assert not throttling  # (the throttle came 8 s ago)


def test_the_snapshot_names_where_the_run_is() -> None:
    """The phase the live display shows: stopping once a signal is heard; listing until the
    targets are counted (and all through a dry run, which sends nothing); reconciling once
    every target is taken and no cancel is in flight; watching when a drain's parent is quiet
    between listings; cancelling otherwise."""
    clock = [0.0]
    quiet = SimpleNamespace(
        status=SimpleNamespace(quiet_since=0.0, ended=None, until_quiet=60.0, appeared=5)
    )
    idle = SimpleNamespace(answered=30, accepted=25, in_flight=0)
    cases: list[tuple[dict[str, object], str]] = [
        ({}, "cancelling"),
        ({"signals": [2]}, "stopping"),
        ({"count": None}, "listing"),
        ({"config": SimpleNamespace(dry_run=True)}, "listing"),
        ({"all_taken": True}, "cancelling"),  # (cancels still in flight)
        ({"all_taken": True, "cancels": idle}, "reconciling"),
        ({"drain": quiet, "cancels": idle}, "watching"),
        ({"drain": quiet}, "cancelling"),  # (a cancel in flight: not quiet yet)
    ]
    for parts, phase in cases:
        assert run_at(clock, **parts)[1]().phase == phase, parts


def test_the_snapshot_counts_what_the_run_counted() -> None:
    """Listed is every name found (given and listed); sent and accepted are the cancels
    answered and accepted; settled and the totals are the report's; with a drain, the total
    grows by what appeared since the first count, and a quiet parent says how long it has been
    quiet on the run's clock."""
    clock = [10.0]
    drain = SimpleNamespace(
        status=SimpleNamespace(quiet_since=4.0, ended=None, until_quiet=60.0, appeared=5)
    )
    run, progress = run_at(clock, drain=drain)
    run.client.stats.total, run.client.stats.throttled = 40, 3
    clock[0] = 12.0
    snap = progress()
    assert (snap.total, snap.listed, snap.settled) == (105, 100, 20)
    assert (snap.sent, snap.accepted) == (30, 25)
    assert snap.totals == {"cancelled": 18, "completed_anyway": 2}
    assert snap.throttled == 3 and snap.throttling
    assert snap.rate == 20.0  # 40 requests in the 2 s since the reader was made
    assert snap.quiet_for == 8.0 and snap.until_quiet == 60.0
    assert not snap.dry_run
