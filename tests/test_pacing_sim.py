"""The pacer against quota personalities, on virtual time: the real RateGovernor and
OperationsClient against in-test quota models (``tests/_pacing.py``), every sleep, pacer wait
and hint costing no real time, each run deterministic, so the issue's figures (drain time over
the quota floor, share of 429s) are asserted exactly. These are not wall-clock timings.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Mapping, Sequence

import pytest

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._limits import RateGovernor
from bulkcancel._transport import CallableTransport, RawResponse
from tests._pacing import (
    OK,
    PROJECT,
    Bucket,
    Closed,
    Open,
    PhasedWindow,
    Server,
    Window,
    all_ok,
    bucket_floor,
    name,
    per_minute_limit,
    run_simulation,
    simulate,
    throttle,
)
from tests._support import make_client

# -- quota personalities ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quota", "burst", "requests"),
    [
        (40.0, 4.0, 800),  # token bucket, small burst
        (40.0, 40.0 * 60, 4000),  # token bucket with a minute's burst
        (15.0, 2.0, 400),  # a low quota far under --rate
        # bare 429s from small-burst buckets of three sizes, 12 s of quota each: a cut measured
        # during the start-up ramp must not be mistaken for background (was 7.6-15.2% 429s)
        (20.0, 2.0, 240),
        (50.0, 5.0, 600),
        (100.0, 10.0, 1200),
    ],
)
def test_token_buckets(quota: float, burst: float, requests: int) -> None:
    server = Server({"*": Bucket(quota, burst)})
    result = simulate(server, [name(i) for i in range(requests)], rate=200)
    floor = bucket_floor(requests, 200, quota, burst)
    assert all_ok(result)
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize("seed", range(6))
def test_a_bucket_behind_answers_out_of_order(seed: int) -> None:
    """A 50/s bucket (burst 5) behind 0.2 s answers with jitter (sigma 0.5): requests reach it,
    and answers come back, out of send order. A cut counted the send rate from the answers
    alone (the first eight to arrive, a scatter of what went out, said 70/s where 200/s was
    sent) and landed at a third of the quota (1.14-1.48x over these seeds; now 1.06-1.10x).
    Its 429s are not asserted: 8-31% over these seeds (9-24% before session 25 acted on slow
    start's late answers, which jitter scatters; a wall's cut judged where jitter still has a
    few refused reads as background, and is undone: a known miss, see the README)."""
    server = Server({"*": Bucket(50.0, 5.0)})
    names = [name(i) for i in range(500)]
    result = simulate(server, names, rate=200, latency=0.2, jitter=0.5, jitter_seed=seed)
    floor = max(bucket_floor(500, 200, 50.0, 5.0), 500 * 0.2 / 32)
    assert all_ok(result)
    assert result.seconds <= 1.15 * floor, (result.seconds, floor)


@pytest.mark.parametrize(("latency", "refused"), [(0.2, 0.11), (0.3, 0.10), (0.5, 0.10)])
def test_a_distant_bucket_s_first_wall_is_met_on_answers_to_slow_start_s_old_rate(
    latency: float, refused: float
) -> None:
    """A 50/s bucket (burst 5), bare 429s, behind answers of 0.2-0.5 s. Four clean answers (the
    burst) double slow start to 200/s; the refusals of what went out at 100/s meanwhile come
    back after that doubling. Taken for news already acted on, they were ignored, and the wall
    waited for answers to the doubled rate, a round trip more: 12.5%, 13.3% and 16.7% of the
    requests refused. A wall they show is over the doubled rate too, and is cut on them: 10.4%,
    9.1% and 9.1% (at 0.2 s the round trip's sends before the eighth answer after the first
    refusal cost 28 refusals of 335)."""
    server = Server({"*": Bucket(50.0, 5.0)})
    names = [name(i) for i in range(300)]
    result = simulate(server, names, rate=200, latency=latency)
    floor = max(bucket_floor(300, 200, 50.0, 5.0), 300 * latency / 32)
    assert all_ok(result)
    assert result.share_429 <= refused, result.share_429
    assert result.seconds <= 1.15 * floor, (result.seconds, floor)


def test_fixed_per_minute_window_scaled_down() -> None:
    limit, period, requests, rate = 120, 6.0, 1200, 100.0
    server = Server({"*": Window(limit, period)})
    result = simulate(server, [name(i) for i in range(requests)], rate=rate)
    windows = math.ceil(requests / limit)
    floor = (windows - 1) * period + (requests - (windows - 1) * limit) / rate
    assert all_ok(result)
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.15, result.share_429


def window_ratios(
    limit: int,
    period: float,
    offsets: Sequence[float],
    requests: int,
    rate: float,
    metadata: dict[str, str] | None = None,
) -> list[float]:
    """Drain over the oracle's floor for one window shape at each phase, sorted; every run
    exact, none over the fixed window's 15% of 429s."""
    ratios = []
    for offset in offsets:
        window = PhasedWindow(limit, period, offset)
        server = Server({"*": window}, metadata=metadata)
        result = simulate(server, [name(i) for i in range(requests)], rate=rate)
        assert all_ok(result)
        assert result.share_429 <= 0.15, (offset, result.share_429)
        ratios.append(result.seconds / window.quota.oracle_seconds(rate))
    return sorted(ratios)


@pytest.mark.parametrize("stated", [False, True], ids=["bare", "per-minute-limit-stated"])
@pytest.mark.parametrize(
    ("limit", "period", "requests", "rate"),
    [(300, 6.0, 700, 200.0), (200, 10.0, 311, 100.0)],
    ids=["50/s-6s-window", "20/s-10s-window"],
)
def test_fixed_windows_at_any_phase(
    stated: bool, limit: int, period: float, requests: int, rate: float
) -> None:
    """Each window's budget is spent at the pace that worked, whether or not ErrorInfo states
    the per-minute average (a stated limit used to hold the rate at it: 1.31x the floor, and
    2.3x where the window turned within the first probe), and the turn is found within a
    probe gap (waiters of the parked key used to sleep on for up to a second after it)."""
    metadata = per_minute_limit(limit / period) if stated else None
    # Six phases, and the hard one: the window turns just after the budget is spent, before
    # the key has seen enough refusals to park (it must not stay at the stated average).
    hard = period - limit / rate - 0.1
    offsets = [*(period * k / 6 for k in range(6)), hard]
    ratios = window_ratios(limit, period, offsets, requests, rate, metadata)
    # A run that fits the windows exactly loses a whole window to a late request at some
    # phases, so the median over phases is what holds; no phase is far off.
    assert ratios[3] <= 1.1, ratios
    assert ratios[-1] <= 1.3, ratios


def test_short_windows_with_a_stated_limit_are_spent_at_the_pace_that_worked() -> None:
    """2 s windows of 50/s, told 200/s, 300 requests (three windows), the per-minute limit
    stated. A window spent at the end of a decision (refusals only after its first) was taken
    for a bucket refilling at the stated rate, and the key held to the average for the rest of
    the run; and the turns were found by probes 0.4 s apart, each up to a fifth of a window
    late (median over seven phases 1.50x the floor). The window's length is its budget over the
    stated rate, known after one window. (The phase where the window turns just as the budget
    is spent is still 1.5x: the first wall's park misses a turn.) Aimed probes that stay close
    only around the predicted turn find an early prediction's turn a little later: over 24
    phases the median went from 1.091x to 1.097x (these seven: 1.099x to 1.108x), while at
    20/s in 2 s windows, told 200/s, the 429s fell from 14.7% to 11.9%."""
    offsets = [*(2.0 * k / 6 for k in range(6)), 2.0 - 0.5 - 0.1]
    ratios = window_ratios(100, 2.0, offsets, 300, 200.0, per_minute_limit(50.0))
    assert ratios[3] <= 1.12, ratios


def test_a_slow_key_parks_on_its_spent_window() -> None:
    """6/s in 10 s windows, told 10/s: a wall after a second of 10 accepts is a spent window
    (the run of refusals in it parks the key) although a second holds fewer than 16 accepts;
    the wall's 7 of 8 refused, a hair under the park share, were cut to 1.2/s instead, and the
    cut was judged 32 answers (27 s) later (1.29-2.33x the floor over these phases)."""
    ratios = window_ratios(60, 10.0, [0.0, 1.0, 2.5, 4.0, 5.5, 7.0, 8.5], 240, 10.0)
    assert ratios[3] <= 1.1, ratios
    assert ratios[-1] <= 1.2, ratios


@pytest.mark.parametrize(
    ("quota", "window", "requests"), [(5.0, 10.0, 300), (50.0, 6.0, 900)], ids=["5/s", "50/s"]
)
def test_a_minute_bucket_with_a_stated_limit_settles_at_it(
    quota: float, window: float, requests: int
) -> None:
    """A bucket with a window's burst lets the key through far over its stated rate at first,
    like a fixed window; at the first wall that still accepts some, or after one resume at
    that pace finds next to no budget, the stated limit caps the key again (the cap was left
    off for good: 4/s for the rest of the run)."""
    metadata = per_minute_limit(quota)
    server = Server({"*": Bucket(quota, quota * window)}, metadata=metadata)
    result = simulate(server, [name(i) for i in range(requests)], rate=200)
    assert all_ok(result)
    floor = bucket_floor(requests, 200, quota, quota * window)
    assert result.seconds <= 1.1 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize(
    ("quota", "window", "told"), [(10.0, 2.0, 60.0), (10.0, 6.0, 60.0), (5.0, 10.0, 30.0)]
)
def test_a_slow_minute_bucket_with_a_stated_limit_is_capped_at_its_first_wall(
    quota: float, window: float, told: float
) -> None:
    """150 requests, a window's burst, the per-minute limit stated: the wall where the burst
    runs out still accepts the refill (a spent window would refuse everything and park the
    key), so it is a bucket refilling at the stated rate, and the key lands on the limit.
    It used to be cut on what a few answers after the burst accepted, twice (10.2%, 13.3%
    and 17.6% of requests refused; the issue allows 10%)."""
    metadata = per_minute_limit(quota)
    server = Server({"*": Bucket(quota, quota * window)}, metadata=metadata)
    result = simulate(server, [name(i) for i in range(150)], rate=told)
    assert all_ok(result)
    floor = bucket_floor(150, told, quota, quota * window)
    assert result.seconds <= 1.1 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.08, result.share_429


@pytest.mark.parametrize("stated", [False, True], ids=["bare", "per-minute-limit-stated"])
def test_a_spent_minute_bucket_at_a_low_quota_costs_one_wall(stated: bool) -> None:
    """10/s with a 10 s burst, 150 requests (two thirds of them the burst): the wall where the
    burst runs out is a run of refusals after many accepts. It parks the key at once, not
    after a cut to a third of the burst's pace (ten more refusals); and a resume at the
    burst's pace that finds no budget came back parks it again to resume at what the server
    accepted since the first park (the refill), not at the burst again (18.9% / 15.3% of
    requests refused before; the issue allows 10%, and this short run pays its one wall)."""
    quota, burst, requests = 10.0, 100.0, 150
    metadata = per_minute_limit(quota)
    server = Server({"*": Bucket(quota, burst)}, metadata=metadata if stated else None)
    result = simulate(server, [name(i) for i in range(requests)], rate=200)
    assert all_ok(result)
    floor = bucket_floor(requests, 200, quota, burst)
    assert result.seconds <= 1.1 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.13, result.share_429


@pytest.mark.parametrize("window", [2.0, 6.0])
def test_a_short_run_on_a_small_minute_bucket_with_bare_429s(window: float) -> None:
    """100 names at 10/s, told 50/s (the default), a bucket holding ``window`` seconds of quota,
    bare 429s: its burst is spent within the decision that meets the wall, and what the server
    accepted over that decision is twice the quota. Cut there, the key was half refused for the
    next 32 answers: 27.5% and 15.3% of requests (8.3% each now)."""
    quota = 10.0
    server = Server({"*": Bucket(quota, quota * window)})
    result = simulate(server, [name(i) for i in range(100)], rate=50.0, latency=0.002)
    assert all_ok(result)
    floor = bucket_floor(100, 50.0, quota, quota * window)
    assert result.seconds <= 1.1 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize(
    ("quota", "burst", "requests", "told", "latency"),
    [(10.0, 1.0, 100, 50.0, 0.02), (10.64, 1.064, 252, 64.96, 0.05)],
    ids=["one-token-10/s", "a-token-and-a-bit-10.6/s"],
)
def test_a_short_run_on_a_bucket_of_about_one_token_with_bare_429s(
    quota: float, burst: float, requests: int, told: float, latency: float
) -> None:
    """A bucket of one token (the fake's ``bucket-small`` under 20/s), bare 429s: the key alone
    in its project bounds the quota within 10% at its first close spacing wall and holds there,
    where it climbed into a second one (four refusals more: 12.3% of the requests refused). A
    bucket of a token and a bit hides a hair of overshoot at the held rate; the wall that finds
    it out is cut as any wall, not to the accepts' spacing, half the quota (1.34x the floor when
    the key held after one wall but still cut so; 13.4% of 429s before either)."""
    server = Server({"*": Bucket(quota, burst)})
    result = simulate(server, [name(i) for i in range(requests)], rate=told, latency=latency)
    assert all_ok(result)
    floor = bucket_floor(requests, told, quota, burst)
    assert result.seconds <= 1.15 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.10, result.share_429


def test_waiters_of_a_parked_key_go_as_soon_as_it_resumes() -> None:
    """A probe accepted: the requests queued behind it are granted at once, not after the
    probe gap they were told to wait."""

    async def main() -> tuple[float, list[float], float]:
        loop = asyncio.get_running_loop()
        governor = RateGovernor(100.0)
        key = f"{PROJECT}/locations/a"
        pacer = governor.pacer(key)
        for _ in range(8):
            grant = await governor.acquire(key)
            assert grant is not None
            governor.report(grant, throttled=True, key=key)
        assert pacer.state.value == "parked"
        pacer.probe_gap = 1.0  # a park that has gone on a while
        probe_grant = await governor.acquire(key)
        assert probe_grant is not None and probe_grant.probe
        granted: list[float] = []

        async def waiter() -> None:
            assert await governor.acquire(key) is not None
            granted.append(loop.time())

        waiters = [asyncio.ensure_future(waiter()) for _ in range(3)]
        await asyncio.sleep(0.05)  # virtual: the waiters are asleep on the probe gap
        resumed = loop.time()
        governor.report(probe_grant, throttled=False, key=key)
        await asyncio.gather(*waiters)
        return resumed, granted, pacer.rate

    resumed, granted, resumed_rate = run_simulation(main)
    assert len(granted) == 3
    assert granted[0] == pytest.approx(resumed)  # not a probe gap (1 s) later
    assert max(granted) - resumed == pytest.approx(2 / resumed_rate)  # then at the resumed pace


def test_a_per_minute_limit_value_gives_the_rate_at_once() -> None:
    metadata = per_minute_limit(30.0)
    server = Server({"*": Bucket(30.0, 3.0)}, metadata=metadata)
    result = simulate(server, [name(i) for i in range(600)], rate=200)
    assert all_ok(result)
    assert result.seconds <= 1.2 * bucket_floor(600, 200, 30, 3)
    assert result.share_429 <= 0.05, result.share_429


@pytest.mark.parametrize(
    "overstated",
    [
        pytest.param(
            2.0,
            marks=pytest.mark.xfail(
                strict=True,
                reason="known miss: slow start (100/s) is capped at the stated 80/s, and the "
                "first wall there is read as a budget spent at the limit: parked, resumed "
                "at it, cut only at the second (13% of 429s)",
            ),
        ),
        4.0,
    ],
)
def test_a_limit_stated_over_what_is_enforced_costs_no_more_than_a_bare_wall(
    overstated: float,
) -> None:
    """A server that states more than it enforces (another limit, or a burst it refuses): the
    first wall, met well under the stated limit, is cut as any wall. Parked to resume at the
    stated limit, over the rate just refused, a 40/s bucket stated at 160/s drew 12.5% of 429s
    on an independent server (the first second: 30 refusals; 11.5% here)."""
    server = Server({"*": Bucket(40.0, 4.0)}, metadata=per_minute_limit(40.0 * overstated))
    result = simulate(server, [name(i) for i in range(300)], rate=200, latency=0.004)
    assert all_ok(result)
    assert result.seconds <= 1.2 * bucket_floor(300, 200, 40, 4)
    assert result.share_429 <= 0.10, result.share_429


def test_background_429s_never_lower_the_rate() -> None:
    requests, rate, noise = 1000, 50.0, 0.10
    server = Server({"*": Open()}, noise=noise)
    result = simulate(server, [name(i) for i in range(requests)], rate=rate)
    assert all_ok(result)
    # The floor counts the retries no client can avoid: 1 / (1 - noise) tries per operation.
    floor = requests / (1 - noise) / rate
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)


def test_two_regions_with_background_429s_each_keep_their_pace() -> None:
    """The fault mix's shape: two regions of one project, 8% of each one's answers refused at
    random, no quota. Beside another key, a chance cluster of 429s was cut at once and often
    confirmed as a wall, and the key crept back from a third of its pace (worst of 16 seeds:
    1.23x the floor; of 40, 1.83x). Every one of 16 seeds now drains within 1.2x."""
    requests, rate, noise = 600, 200.0, 0.08
    floor = 2 * requests / (1 - noise) / rate
    worst = 0.0
    for seed in range(16):
        server = Server({"*": Open()}, noise=noise, rng=random.Random(700 + seed))
        names = [name(i, "a") for i in range(requests)] + [name(i, "b") for i in range(requests)]
        result = simulate(server, names, rate=rate, latency=0.005)
        assert all_ok(result)
        worst = max(worst, result.seconds / floor)
    assert worst <= 1.2, worst


@pytest.mark.parametrize("noise", [0.2, 0.3])
def test_a_high_background_share_does_not_spiral(noise: float) -> None:
    """20-30% of answers refused at random, whatever the rate: more than the 15% a check
    learns as background outright, so every chance 40% of 16 answers was a confirmed wall
    and each cut fed the next (30%: 12-50x the floor, 0.5 requests/s at the end). A high
    share that holds over 32 answers after a cut now sends the key back up as a test, and a
    share that holds there is background (the key is alone in its project)."""
    requests, rate = 1000, 50.0
    server = Server({"*": Open()}, noise=noise)
    result = simulate(server, [name(i) for i in range(requests)], rate=rate)
    assert all_ok(result)
    floor = requests / (1 - noise) / rate
    assert result.seconds <= 1.5 * floor, (result.seconds, floor)


def test_a_cut_while_requests_queue_at_the_run_ceiling_leaves_no_hole() -> None:
    """Two free keys, each paced at the run's ``--rate``: their requests queue for the run's
    ceiling, holding their grants. A cut of both (chance clusters of background 429s at once)
    sends their queued requests back to their own queues, at the new rates; the units of
    ``--rate`` they took on the way go to the next in line. (Spent unsent, they left a hole of
    up to ``concurrency / --rate`` seconds in which nothing went out: 0.16-0.3 s at 200/s, in
    the fault mix's short runs, where it cost up to a fifth of the run.)"""
    rate, requests = 200.0, 800

    def cut(governor: RateGovernor, now: float) -> None:
        for location in ("a", "b"):
            governor.pacer(f"{PROJECT}/locations/{location}")._cut(now, 0.2)

    server = Server({"*": Open()})
    result = simulate(server, two_regions(requests), rate=rate, at=(1.0, cut))
    assert all_ok(result)
    sent = sorted(t for t, _, _ in server.log)
    gaps = [b - a for a, b in itertools.pairwise(sent) if a >= 0.9]
    assert max(gaps) < 4 / rate, max(gaps)  # never more than a few turns without a request


# -- shared and separate quotas --------------------------------------------------------------


def two_regions(requests: int) -> list[str]:
    return [name(i, "a" if i % 2 else "b") for i in range(requests)]


@pytest.mark.parametrize("told", [False, True], ids=["learned", "errorinfo-global"])
def test_one_quota_shared_by_two_regions(told: bool) -> None:
    metadata = (
        {"quota_limit": "ApiRequestsPerMinutePerProject", "quota_location": "global"}
        if told
        else None
    )
    shared = Bucket(40.0, 4.0)
    server = Server({"*": shared}, metadata=metadata)
    result = simulate(server, two_regions(800), rate=200)
    assert all_ok(result)
    # The 1.2x / 10%: told (ErrorInfo global, no limit value) ~1.01x, 3%; learned from
    # coinciding walls ~1.14x, 6.7% here (other quota sizes: tests/test_pacing_walls.py).
    assert result.seconds <= 1.2 * bucket_floor(800, 200, 40, 4), result.seconds
    assert result.share_429 <= 0.10, result.share_429


def test_one_quota_per_region() -> None:
    server = Server({"a": Bucket(30.0, 3.0), "b": Bucket(30.0, 3.0)})
    result = simulate(server, two_regions(800), rate=200)
    assert all_ok(result)
    assert result.seconds <= 1.2 * bucket_floor(400, 200, 30, 3), result.seconds
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize(("quota", "regions", "told"), [(9.0, 3, 26.0), (6.0, 3, 20.0)])
def test_regions_sharing_a_slow_quota_with_bare_429s(
    quota: float, regions: int, told: float
) -> None:
    """One bucket of one token at 6-9/s for three regions, bare 429s (nothing says the quota
    is shared): each key at 1-3/s needs seconds of answers per decision, and a key cut to
    0.5/s waited 32 answers (a minute) to have the cut judged: 2.56x and 2.87x the floor;
    1.39x and 1.47x once such a cut was judged after four seconds; 1.36x and 1.31x once the
    walls of slow keys coincided over the answers that showed them. A known miss of the
    issue's 1.2x and 10% (14% and 18% refused): until the keys merge each pays its own walls
    on the one quota, and requests of keys paced apart collide in a bucket of one token
    (README, Performance, "Known misses")."""
    server = Server({"*": Bucket(quota, 1.0)})
    names = [name(i, location) for i in range(120) for location in "abc"[:regions]]
    result = simulate(server, names, rate=told)
    assert all_ok(result)
    floor = bucket_floor(len(names), told, quota, 1.0)
    assert result.seconds <= 1.6 * floor, (result.seconds, floor)


def test_a_region_starved_on_a_shared_bucket_takes_over_when_the_other_finishes() -> None:
    """Two regions on one bucket of one token at 10/s, bare 429s, 100 names each: one key takes
    every token at the quota while the other's requests are all refused at under 1/s, and the
    two are never merged (the first key's walls are its spacing bisection's own, which the
    governor does not see). When the first finishes, the starved key takes its rate at once; it
    used to hear of it only at its next own wall and creep back by slow start, four answers per
    doubling (1.98x the floor). Still over 1.2x: a known miss (README)."""
    bucket = Bucket(10.0, 1.0)
    server = Server({"a": bucket, "b": bucket})
    names = [name(i, location) for i in range(100) for location in "ab"]
    result = simulate(server, names, rate=50.0, latency=0.02)
    assert all_ok(result)
    floor = bucket_floor(200, 50.0, 10.0, 1.0)
    assert result.seconds <= 1.35 * floor, (result.seconds, floor)


def test_regions_whose_errorinfo_says_regional_are_never_merged() -> None:
    """Synchronized windows (Compute's per-minute windows turn for every region at once) make
    separate regional quotas meet their walls together, window after window: taken for one
    shared quota, three regions of 60/s each were merged into one pacer held at one region's
    stated limit (3.6x the floor; the merge's trial never split them, as nothing was refused
    at a third of the pace). ErrorInfo naming a regional limit settles it: never merged."""
    metadata = {
        "quota_metric": "compute.googleapis.com/read_requests",
        "quota_limit": "ReadRequestsPerMinutePerProjectPerRegion",
        "quota_limit_value": "3600",
    }
    windows = {location: PhasedWindow(180, 3.0, 0.5) for location in "abc"}
    server = Server(dict(windows), metadata=metadata)
    names = [name(i, location) for i in range(900) for location in "abc"]
    result = simulate(server, names, rate=500)
    assert all_ok(result)
    floor = max(window.quota.oracle_seconds(500 / 3) for window in windows.values())
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.15, result.share_429


@pytest.mark.parametrize("offset", [0.1, 0.7, 1.3])
def test_aimed_probes_stay_close_only_around_the_predicted_turn(offset: float) -> None:
    """Two regions of 20/s in 2 s windows (a stated regional limit), told 200/s. A turn that a
    park's first probe found was remembered at the middle of the park, up to half a window
    early, and the next park's aimed probes went 1% of a window apart for a whole period:
    35 refusals in one park, 18-20% of all requests refused."""
    metadata = {
        "quota_metric": "clouddeploy.googleapis.com/api_requests",
        "quota_limit": "ApiRequestsPerMinutePerProjectPerRegion",
        "quota_limit_value": "1200",
    }
    windows = {location: PhasedWindow(40, 2.0, offset) for location in "ab"}
    server = Server(dict(windows), metadata=metadata)
    names = [name(i, location) for i in range(300) for location in "ab"]
    result = simulate(server, names, rate=200, latency=0.003)
    assert all_ok(result)
    floor = max(window.quota.oracle_seconds(100) for window in windows.values())
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.15, result.share_429


def test_two_regions_over_small_bursts_are_not_taken_for_background() -> None:
    """Two regions of 70/s each with a burst of 7, told 195/s: each key's spotless slow-start
    decision was the burst's, and the wall right after it was read as a burst-1 bucket's
    jitter and landed on that spotless rate, which did not clear it; the share that held
    there passed for background, and 28% of requests were refused for the rest of the run."""
    server = Server({"a": Bucket(70.0, 7.0), "b": Bucket(70.0, 7.0)})
    names = [name(i, location) for i in range(700) for location in "ab"]
    result = simulate(server, names, rate=195, latency=0.005)
    assert all_ok(result)
    assert result.seconds <= 1.2 * bucket_floor(700, 97.5, 70, 7), result.seconds
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize(
    "apart",
    [
        pytest.param(
            True,
            id="apart",
            marks=pytest.mark.xfail(
                strict=True, reason="known miss: reads metered apart with bare 429s"
            ),
        ),
        pytest.param(False, id="one quota"),
    ],
)
def test_reads_metered_apart_with_bare_429s_leave_the_cancels_their_quota(apart: bool) -> None:
    """Cloud Batch's shape with bare 429s (nothing names the quotas): cancels on a bucket of
    50/s, each operation read back by GET two seconds later on a bucket of 125/s of its own.
    The one pacer meets its wall on cancels alone, the reads come after and are never refused,
    and its cancels are refused too rarely to tell the two quotas apart
    (Metering.answered): paced as one, the cancels get what the reads leave, 1.40x the cancels'
    floor (a known miss: see the README; trying the reads apart, as sessions 42 and 43 did,
    took it to 1.06x but cost one quota 429s). On one bucket of 50/s for both kinds, the run
    holds."""
    names = [name(i) for i in range(300)]
    server = Server({"*": Bucket(50.0, 2.0)}, reads=Bucket(125.0, 2.0) if apart else None)
    result = simulate(server, names, rate=250.0, read_after=2.0)
    assert all_ok(result)
    assert server.requests >= 600
    if apart:
        cancels = max(result.done_at.values())
        assert cancels <= 1.1 * bucket_floor(300, 250.0, 50.0, 2.0), cancels
    else:
        assert result.seconds <= 1.1 * bucket_floor(600, 250.0, 50.0, 2.0), result.seconds
    assert result.share_429 <= 0.06, result.share_429


def test_a_throttled_region_does_not_slow_a_free_one() -> None:
    free = [name(i, "free") for i in range(600)]
    alone = simulate(Server({"free": Open()}), free, rate=100)
    slow = [name(i, "slow") for i in range(600)]
    names = [op for pair in zip(free, slow, strict=True) for op in pair]
    mixed = simulate(
        Server({"free": Open(), "slow": Bucket(2.0, 1.0)}),
        names,
        rate=100,
        throttle_budget=30.0,
    )
    assert all(a.ok for a, op in zip(mixed.answers, names, strict=True) if "/free/" in op)
    assert mixed.finished("free") <= 1.2 * alone.seconds, (mixed.finished("free"), alone.seconds)


# -- hints, budgets and stops ----------------------------------------------------------------


def test_an_hour_long_hint_does_not_stall_the_run() -> None:
    names = [name(i) for i in range(500)]
    normal = simulate(Server({"*": Open()}), names, rate=50)
    server = Server({"*": Open()}, hinted={names[10]: 3600.0})
    result = simulate(server, names, rate=50)
    assert all_ok(result)
    assert result.answers[10].throttled == 1  # it was refused once, then retried
    assert result.seconds <= 1.2 * normal.seconds, (result.seconds, normal.seconds)


def test_a_server_answering_only_429_ends_every_call_within_the_budget() -> None:
    budget = 30.0
    server = Server({"*": Closed()})
    result = simulate(server, [name(i) for i in range(10)], rate=50, throttle_budget=budget)
    assert [a.kind for a in result.answers] == [AnswerKind.THROTTLED] * 10
    assert all((a.message or "").startswith("throttled:") for a in result.answers)
    assert result.seconds <= budget + 5.0, result.seconds
    assert server.requests <= 60, server.requests  # parked: sparse probes, not a crawl


def test_a_slow_key_that_keeps_accepting_ends_no_call_on_its_throttle_budget() -> None:
    """The throttle budget (120 s) is for a key that refuses everything: a call refused at a
    wall, then queued behind the key's backlog for longer than that (a window of 30 a minute,
    64 calls waiting), is retried when its turn comes, since the key answered others meanwhile
    (16 of 150 ended as throttled before)."""
    server = Server({"*": Window(30, 60.0)})
    result = simulate(server, [name(i) for i in range(150)], rate=5)
    assert all_ok(result), [a.message for a in result.answers if not a.ok][:3]
    assert max(a.throttled for a in result.answers) >= 1  # (some were refused, then waited)
    assert result.seconds <= 1.1 * 4 * 60.0, result.seconds  # (five windows hold 150)


def test_a_call_waiting_its_turn_behind_a_long_backlog_is_not_out_of_time() -> None:
    """The 300 s a call may take is its own time (tries, backoff, hints), not its turns at its
    key: 400 calls at once at a quota of 1/s wait up to 400 s for theirs (110 of them ended
    as throttled at 300 s before, 100 never sent)."""
    server = Server({"*": Bucket(1.0, 1.0)})
    result = simulate(server, [name(i) for i in range(400)], rate=5, workers=400)
    assert all_ok(result), [a.message for a in result.answers if not a.ok][:3]
    assert result.seconds <= 1.1 * 400, result.seconds


@pytest.mark.parametrize("count", [300, 2000])
def test_an_operation_refused_alone_ends_when_its_key_answers_no_other(count: int) -> None:
    """While its key answers the others the throttle budget does not run out (nor does the
    300 s a call may take: 2,000 names take 400 s at 5/s, and waiting for turns is the key's
    backlog, not the call's own time); 120 s after the key's last answer to another call, it
    ends as throttled. The rest of the run goes on at the key's pace meanwhile."""
    names = [name(i) for i in range(count)]
    server = Server({"*": Bucket(5.0, 1.0)}, refused=frozenset(names[:1]))
    result = simulate(server, names, rate=50)
    assert result.answers[0].kind is AnswerKind.THROTTLED
    assert (result.answers[0].message or "").startswith("throttled: ")
    assert all(a.ok for a in result.answers[1:])
    others = max(result.done_at[op] for op in names[1:])
    assert others <= 1.2 * count / 5.0, others
    ended = result.done_at[names[0]]
    assert others + 120.0 <= ended <= others + 125.0, (ended, others)


def test_cancels_refused_all_along_end_on_budget_while_the_key_answers_reads() -> None:
    """A key whose writes are refused (a daily quota spent) while its reads pass: the reads'
    answers do not keep the cancels' throttle budget open (counted from any call's end, the
    cancels ran until the reads stopped, 340 s)."""

    async def main() -> tuple[list[Answer], float, int]:
        loop = asyncio.get_running_loop()

        async def handler(
            method: str, url: str, headers: Mapping[str, str], body: bytes | None
        ) -> RawResponse:
            await asyncio.sleep(0.01)
            return OK if method == "GET" else throttle(None)

        client = make_client(
            transport=CallableTransport(handler), concurrency=32, rate=50.0, throttle_budget=30.0
        )
        reads = 0

        async def read_all_along() -> None:
            nonlocal reads
            while loop.time() < 300.0:
                assert (await client.get(name(0))).ok
                reads += 1
                await asyncio.sleep(1.0)

        reader = asyncio.ensure_future(read_all_along())
        answers = await asyncio.gather(*(client.cancel(name(i)) for i in range(10)))
        ended = loop.time()
        reader.cancel()
        return list(answers), ended, reads

    answers, ended, reads = run_simulation(main)
    assert [a.kind for a in answers] == [AnswerKind.THROTTLED] * 10
    assert ended <= 30.0 + 5.0, ended
    assert reads >= 1  # (reads were answered meanwhile)


def test_stop_wakes_calls_waiting_out_a_long_pause() -> None:
    server = Server({"*": Closed()}, retry_after=3600.0)
    result = simulate(server, [name(i) for i in range(50)], rate=50, stop_at=5.0)
    assert {a.kind for a in result.answers} == {AnswerKind.STOPPED}
    assert max(result.done_at.values()) <= 5.0 + 0.05  # at once, not after the pause


def test_stop_cancels_wakes_waiting_cancels_and_keeps_reads() -> None:
    """A graceful stop's first step: cancels waiting out a long pause end at once, while a
    GET (the grace's read-back) still goes out."""
    server = Server({"*": Closed()}, retry_after=3600.0)
    result = simulate(
        server, [name(i) for i in range(50)], rate=50, stop_at=5.0, stop_cancels_only=True
    )
    assert {a.kind for a in result.answers} == {AnswerKind.STOPPED}
    assert max(result.done_at.values()) <= 5.0 + 0.05  # at once, not after the pause
