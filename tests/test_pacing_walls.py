"""Quota walls the first pacer missed, on virtual time: one quota shared by several regions
(told by ErrorInfo or not), bare 429s from a small-burst token bucket and from one with no burst
at all (alone, as two regions' separate quotas and as one quota two regions share), a
background share of 429s on a short run, and windows walled short of their last budget (draws
of the sweeps). Each family runs at several quota sizes and region counts, so what passes is the
behaviour, not one configuration. The models and the harness are test_pacing_sim's.
"""

from __future__ import annotations

import math
import random

import pytest

from benchmarks import sweep
from bulkcancel._limits import RateGovernor
from tests._pacing import (
    PROJECT,
    Bucket,
    Open,
    Server,
    Window,
    all_ok,
    bucket_floor,
    name,
    per_minute_limit,
    simulate,
)


def regions(requests: int, count: int) -> list[str]:
    """``requests`` names spread round-robin over ``count`` locations of one project."""
    locations = [f"r{i}" for i in range(count)]
    return [name(i, locations[i % count]) for i in range(requests)]


@pytest.mark.parametrize(
    ("quota", "count"), [(50.0, 2), (50.0, 3), (30.0, 2), (100.0, 2), (20.0, 4)]
)
def test_one_quota_shared_by_several_regions_told_by_errorinfo(quota: float, count: int) -> None:
    requests = 300 * count
    burst = max(1.0, quota / 10)
    server = Server({"*": Bucket(quota, burst)}, metadata=per_minute_limit(quota, "global"))
    result = simulate(server, regions(requests, count), rate=200)
    floor = bucket_floor(requests, 200, quota, burst)
    assert all_ok(result)
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.05, result.share_429


@pytest.mark.parametrize(
    ("quota", "count", "bound"),
    [
        (50.0, 2, 1.2),
        (50.0, 3, 1.2),
        (30.0, 2, 1.2),
        (40.0, 2, 1.2),
        (50.0, 4, 1.2),
        (20.0, 2, 1.2),
        (100.0, 2, 1.2),
        # A known miss of the targets: near the run's ceiling the walls coincide for
        # the second time only late; until the merge the two pacers split the quota unevenly
        # and one drains last (110/s: 1.28x the floor, 16.4% of 429s at session 46's code).
        # The figure moves with any change to the pacing's timing (100/s was 1.27x, 1.74x and
        # now 1.02x): see the README's known misses.
        pytest.param(
            110.0, 2, 1.2, marks=pytest.mark.xfail(reason="known miss: late merge", strict=True)
        ),
    ],
)
def test_one_quota_shared_by_several_regions_learned(
    quota: float, count: int, bound: float
) -> None:
    """Bare 429s: the keys must find out that their walls are one. Before keys were merged on
    coinciding walls these took up to 4.8x the floor (one region starved at ~3 req/s)."""
    requests = 300 * count
    burst = max(1.0, quota / 10)
    server = Server({"*": Bucket(quota, burst)})
    result = simulate(server, regions(requests, count), rate=200)
    floor = bucket_floor(requests, 200, quota, burst)
    assert all_ok(result)
    assert result.seconds <= bound * floor, (result.seconds, floor)
    assert result.share_429 <= 0.12, result.share_429  # the 10%: see the notes


@pytest.mark.parametrize(
    ("first", "second"), [(30.0, 30.0), (50.0, 50.0), (20.0, 20.0), (30.0, 20.0), (50.0, 40.0)]
)
def test_separate_quotas_keep_their_own_pacers(first: float, second: float) -> None:
    """Regions with quotas of their own, equal ones growing in lockstep included, meet walls
    at the same moments too: a merge on that evidence must be undone, not slow them down."""
    server = Server({"r0": Bucket(first, first / 10), "r1": Bucket(second, second / 10)})
    result = simulate(server, regions(800, 2), rate=200)
    floor = max(bucket_floor(400, 200, q, q / 10) for q in (first, second))
    assert all_ok(result)
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize(("requests", "rate"), [(300, 200.0), (1000, 50.0)])
def test_background_429s_cost_only_their_retries(requests: int, rate: float) -> None:
    server = Server({"*": Open()}, noise=0.10)
    result = simulate(server, [name(i) for i in range(requests)], rate=rate, workers=32)
    assert all_ok(result)
    # Against requests / rate, as the benchmark measures it: the retries of 10% refused
    # requests alone take 1.11x of that.
    assert result.seconds <= 1.2 * requests / rate, (result.seconds, requests / rate)


@pytest.mark.parametrize("noise", [0.10, 0.15])
@pytest.mark.parametrize(("requests", "rate"), [(300, 200.0), (1000, 50.0)])
def test_background_429s_drawn_afresh_cost_only_their_retries_in_every_run(
    noise: float, requests: int, rate: float
) -> None:
    """The background drawn from six random patterns, not one: a chance cluster of 429s once
    passed for a wall in some of them (a share tested at every answer, a cut judged against
    the high share that made it), at up to 1.34x (10%) and 1.69x (15%) of the floor."""
    floor = requests / (1 - noise) / rate
    for seed in range(6):
        server = Server({"*": Open()}, noise=noise, rng=random.Random(seed))
        result = simulate(server, [name(i) for i in range(requests)], rate=rate)
        assert all_ok(result)
        assert result.seconds <= 1.2 * floor, (seed, result.seconds, floor)


@pytest.mark.parametrize(
    ("quota", "requests", "share"),
    [
        (3.0, 180, 0.13),
        (5.0, 150, 0.13),
        (10.0, 120, 0.13),
        (10.0, 300, 0.10),
        (20.0, 600, 0.10),
        (30.0, 900, 0.10),
    ],
)
def test_bare_429s_from_a_bucket_with_no_burst(quota: float, requests: int, share: float) -> None:
    """Sent to a little over its quota, a bucket that saves no burst accepts every other
    request: a cut to what it accepted landed at half the quota, and growing back over it
    halved it again (1.5-1.6x the floor at every quota, 7-19% 429s). The first wall's ~10
    429s weigh on the short runs; after it, the key holds just under the quota."""
    server = Server({"*": Bucket(quota, 1.0)})
    result = simulate(server, [name(i) for i in range(requests)], rate=200)
    floor = bucket_floor(requests, 200, quota, 1.0)
    assert all_ok(result)
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= share, result.share_429


@pytest.mark.parametrize(("first", "second"), [(10.0, 10.0), (10.0, 5.0)])
def test_separate_quotas_with_no_burst_are_not_merged_on_their_probes(
    first: float, second: float
) -> None:
    """Two regions, each with a burst-1 quota of its own, probe their spacing in lockstep: the
    walls of those probes must not read as one quota's (merged, they took 1.5-1.7x the floor)."""
    server = Server({"r0": Bucket(first, 1.0), "r1": Bucket(second, 1.0)})
    result = simulate(server, regions(800, 2), rate=200)
    floor = max(bucket_floor(400, 200, q, 1.0) for q in (first, second))
    assert all_ok(result)
    assert result.seconds <= 1.25 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize(("quota", "count"), [(50.0, 3), (40.0, 4), (30.0, 5)])
def test_regions_held_under_their_pace_by_the_runs_rate_still_find_their_walls(
    quota: float, count: int
) -> None:
    """Regions with quotas of their own, each over its quota on its share of ``--rate`` and
    under it on the whole: every pacer's rate climbs past what it can send (the run's ceiling
    holds it), so doubling to tell a wall from background never sends faster. The share of
    429s stayed put and read as untested for the whole run (bare 429s, 3 regions of 50/s told
    200/s: 24% of requests refused, real and simulated); an untested share is a wall."""
    server = Server({f"r{i}": Bucket(quota, quota / 10) for i in range(count)})
    result = simulate(server, regions(300 * count, count), rate=200)
    floor = bucket_floor(300, 200 / count, quota, quota / 10)
    assert all_ok(result)
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize("seed", [29, 36, 70, 118, 159])
def test_regions_with_quotas_of_their_own_stay_apart_once_a_trial_splits_them(seed: int) -> None:
    """Draws of ``benchmarks.sweep apart-bare`` (two or three regions with quotas of their
    own, bare 429s, with 5-10% of background 429s, every shape): walls in step merged them,
    the trial split them, and each split key rejoined the project's pacer at its next wall,
    for good and without a trial (1.63-2.25x the floor, 6.5-11.5% of 429s). A split now holds.
    (The bound is the rejoin's, not the issue's 1.2x: that is judged over the sweep sets. Each
    of these draws' own class, run at twelve other phases and seeds, spans 1.0-1.65x.)"""
    drawn = next(p for p in sweep.personalities("apart-bare") if p.seed == seed)
    run = sweep.run(drawn)
    assert run["exact"]
    assert run["x"] <= 1.5, run


@pytest.mark.parametrize(
    ("quota", "latency"), [(40.0, 1.0), (60.0, 0.8), (84.0, 0.8), (100.0, 0.5)]
)
def test_answers_that_come_back_together_do_not_send_a_keys_turns_together(
    quota: float, latency: float
) -> None:
    """Every answer as slow as the next and 32 in flight: the in-flight slots, not the pacer,
    hold the key under its quota (ErrorInfo states it). The 32 sent in the first burst came
    back together, freed their slots together, and the turns granted meanwhile went out
    together, a burst the bucket (a tenth of a second of its quota) refused round after round
    however low the key's rate: 6-10% of requests refused, 1.13-1.43x the floor. A key's turns
    now go out one at a time, each spaced from the send before."""
    drawn = sweep.Personality(
        quota, "bucket-small", 6.0, False, 1, True, 0.0, 0.37, 3 * quota, 600, latency, 0
    )
    run = sweep.run(drawn)
    assert run["exact"]
    assert run["x"] <= 1.1, run
    assert run["share"] <= 0.03, run


def test_two_regions_merged_on_one_bucket_resume_at_what_it_lets_through() -> None:
    """Two regions on one bucket of 50/s (a burst of 5), bare 429s, 300 names each, answers a
    few milliseconds apart in any order (sigma 0.3: this seed is the one that drew 16% of
    429s). The keys measured their shares of the quota at different times, one while the other
    was starved; merged, the pacer went back to the sum (71/s), learned the refusals as a
    background, and grew through the wall all run. Now 9.8%."""
    server = Server({"*": Bucket(50.0, 5.0)})
    result = simulate(server, regions(600, 2), rate=200.0, latency=0.002, jitter=0.3, jitter_seed=3)
    assert all_ok(result)
    assert result.seconds <= 1.1 * bucket_floor(600, 200.0, 50.0, 5.0)
    assert result.share_429 <= 0.10, result.share_429


def test_a_merge_on_one_minute_bucket_is_not_undone_for_its_start_up_burst() -> None:
    """Two regions on one bucket of 15/s that saves 2 s of burst, bare 429s, told 110/s: the
    trial compared the merged pacer's 15/s with what the keys were let through apart since
    their first sends, the burst included (23/s), and undid the merge; the keys, apart on one
    quota again, drew 27.5% of 429s. Counted from each key's first wall, the merge holds
    (18.3%: the first walls of a minute's bucket shared by keys that cannot know it cost
    the rest; see the README's known misses)."""
    governors: list[RateGovernor] = []
    server = Server({"*": Bucket(15.0, 30.0)})
    result = simulate(
        server,
        regions(420, 2),
        rate=110.0,
        latency=0.02,
        at=(0.0, lambda governor, _: governors.append(governor)),
    )
    assert all_ok(result)
    assert result.seconds <= 1.1 * bucket_floor(420, 110.0, 15.0, 30.0)
    governor = governors[0]
    assert governor.pacer(f"{PROJECT}/locations/r0") is governor.pacer(f"{PROJECT}/locations/r1")
    assert result.share_429 <= 0.2, result.share_429


@pytest.mark.parametrize(("jitter_seed", "look"), [(0, False), (1, False), (0, True), (1, True)])
def test_two_regions_on_one_bucket_of_one_token_are_merged_and_probe_it_cheaply(
    jitter_seed: int, look: bool
) -> None:
    """Two regions on one bucket of one token at 10/s, bare 429s, told 50/s, answers a few
    milliseconds apart in any order: their requests collide, so one key is refused at any
    rate (cut to 1.5/s, then 0.5/s, deciding once in many seconds) while the other sends at
    4-9/s, and their walls coincided twice only late, or never (real: the slow key waited for
    the fast one to finish, 1.3-2.2x the floor). Merged, the project's pacer probed 5% past
    the quota every few seconds and was refused every other request, eight times a probe. The
    slow key is now merged when starved beside the other, and a probe is taken back on 8
    answers. This personality is chaotic: a look at the governor 12 s in (a timer on the loop,
    which changes the order events run in from the start) sends the run elsewhere. Without it
    1.49x the floor and 23% of 429s in session 26, 1.15x and 20% in session 27; with it 1.50x
    and 22%, then 1.46x and 18% (the walls coincide and merge the keys at 8.6 s, and the merged
    pacer climbs from the faster key's 3.7/s). Since session 28 a key parked beside the other
    merges them too: without the look 1.25x and 1.32x (seeds 1 and 0), 15-16% refused; with
    it 1.46x and 18% as before. Still a sixth of the requests refused: see the README's known
    misses."""
    merged: list[bool] = []

    def looked(governor: RateGovernor, _: float) -> None:
        keys = [f"{PROJECT}/locations/r{i}" for i in range(2)]
        merged.append(governor.pacer(keys[0]) is governor.pacer(keys[1]))

    server = Server({"*": Bucket(10.0, 1.0)})
    result = simulate(
        server,
        regions(200, 2),
        rate=50.0,
        latency=0.002,
        jitter=0.3,
        jitter_seed=jitter_seed,
        at=(12.0, looked) if look else None,
    )
    assert all_ok(result)
    assert merged == ([True] if look else [])
    assert result.seconds <= 1.47 * bucket_floor(200, 50.0, 10.0, 1.0)
    assert result.share_429 <= 0.2, result.share_429


@pytest.mark.parametrize(
    ("limit", "period", "per_region", "rate"), [(20, 1.0, 360, 100.0), (30, 1.0, 300, 200.0)]
)
def test_regions_merged_on_one_fixed_window_park_on_its_budget(
    limit: int, period: float, per_region: int, rate: float
) -> None:
    """Two regions on one fixed window, bare 429s: merged on their walls, the project's pacer
    learns the period as a key alone does, but ran to the wall every window (two or three
    refusals of a budget of 20, and more in flight: 15% of requests refused). A merged pacer
    paces the whole quota, so it parks on the last window's budget as a key alone does, three
    windows in four: 10-11%."""
    server = Server({"*": Window(limit, period)})
    requests = 2 * per_region
    result = simulate(server, regions(requests, 2), rate=rate)
    windows = math.ceil(requests / limit)
    floor = (windows - 1) * period + (requests - (windows - 1) * limit) / rate
    assert all_ok(result)
    assert result.seconds <= 1.1 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.12, result.share_429


@pytest.mark.parametrize(
    ("drawn", "index"),
    [
        ("random", 222),
        ("random", 89),
        ("random", 223),
        ("far", 179),
        ("sliding", 287),
        ("sliding", 238),
    ],
)
def test_windows_walled_short_of_their_budget_are_probed_before_the_next_turn(
    drawn: str, index: int
) -> None:
    """Six draws of the sweeps (fixed windows with and without background 429s, answers of
    0.02-0.15 s; sliding windows, stated and bare) whose keys, their period known, met a wall
    before the last window's budget came through again, and aimed every probe at the next
    turn: a background 429 or a sliding window's sends not yet aged out, not a spent window
    (1.18-1.65x the floor). One probe goes first now (1.03-1.15x)."""
    personality = sweep.personalities(drawn)[index]
    assert personality.seed == index and "window" in personality.shape
    result = sweep.run(personality)
    assert result["exact"]
    assert result["x"] <= 1.2, result


@pytest.mark.parametrize(
    ("shape", "seed"),
    [("fixed-window", 1), ("fixed-window", 9), ("sliding-window", 5), ("sliding-window", 8)],
)
def test_a_stated_minute_window_with_background_429s_is_spent_at_each_turn(
    shape: str, seed: int
) -> None:
    """A window of 60 a minute whose limit ErrorInfo states (1/s), 10% of answers refused at
    random without ErrorInfo, told 5/s, 240 names, answers of 0.1 s. Whether a stated limit is
    a spacing or a window's average is read from the burst the server let through when the
    wall began. A throttle with under 4 accepts in the second before it (a wall's later
    refusal, its start hidden by a background 429 a moment before; a refusal just after a
    resume; a background 429 at 4/s that drew three) set that burst to 0, and the key crept
    at the limit through windows that give their budget back at each turn: 1.25-1.55x the
    floor. Such a throttle now leaves the burst as it was, and a key that resumed at its burst
    measures it over what it was let through since. (Twelve seeds of each shape: fixed, 10
    over 1.2x before, 3 after; sliding, all 12 before, 7 after: a resume into a sliding window,
    or a background 429 just before a wall, still reads as a bucket refilling at the stated
    rate; see Known misses.)"""
    drawn = sweep.Personality(
        1.0, shape, 60.0, False, 1, True, 0.1, seed * 7.3, 5.0, 240, 0.1, seed
    )
    run = sweep.run(drawn)
    assert run["exact"]
    assert run["x"] <= 1.2, run
