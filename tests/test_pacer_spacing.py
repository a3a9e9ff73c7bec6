"""A burst-1 bucket's spacing, read by the pacer alone: a plain number as the clock, a token
bucket (test_pacing_sim's) as the server, no event loop. Exact and instant."""

from __future__ import annotations

import heapq
import math
import random

import pytest

from bulkcancel._key_record import PacerState
from bulkcancel._pacer import KeyPacer
from bulkcancel._spacing import spacing_bounds
from tests._pacing import Bucket, feed_marks


class Run:
    """One key sending whenever its pacer grants a turn (a backlog that never runs dry), each
    answer ``latency`` later; ``log`` holds (sent at, accepted) per request. ``jitter``: each
    request reaches the bucket up to that much after it was sent (seeded, uniform), as timing
    on a real network and a busy event loop does."""

    def __init__(
        self, pacer: KeyPacer, bucket: Bucket, latency: float = 0.02, jitter: float = 0.0
    ) -> None:
        self.pacer, self.bucket, self.latency, self.jitter = pacer, bucket, latency, jitter
        self.rng = random.Random(1)
        self.arrived = 0.0
        self.now = 0.0
        self.log: list[tuple[float, bool]] = []
        self.answers: list[tuple[float, float, bool, bool]] = []  # (due, sent, throttled, probe)

    def until(self, end: float) -> list[tuple[float, bool]]:
        pacer, answers = self.pacer, self.answers
        while self.now < end:
            while answers and answers[0][0] <= self.now:
                _, sent_at, throttled, probe = heapq.heappop(answers)
                pacer.on_answer(self.now, throttled=throttled, sent_at=sent_at, probe=probe)
            wait, probe = pacer.reserve(self.now)
            if wait <= 0:
                pacer.sent(self.now)
                arrival = self.now + self.jitter * self.rng.random()
                self.arrived = max(self.arrived, arrival)  # (a bucket's clock only runs forward)
                accepted = self.bucket.admit(self.arrived)
                self.log.append((self.now, accepted))
                due = self.now + self.latency
                heapq.heappush(answers, (due, self.now, not accepted, probe))
                continue
            self.now = min(self.now + wait, answers[0][0]) if answers else self.now + wait
        return self.log


def accepted_between(log: list[tuple[float, bool]], start: float, end: float) -> int:
    return sum(ok for at, ok in log if start <= at < end)


def refused_between(log: list[tuple[float, bool]], start: float, end: float) -> int:
    return sum(not ok for at, ok in log if start <= at < end)


@pytest.mark.parametrize("quota", [3.0, 7.0, 10.0, 25.0, 40.0])
def test_a_bucket_with_no_burst_is_drained_just_under_its_quota(quota: float) -> None:
    """Main's pacer cut to half the quota at each wall (what such a bucket accepts when sent
    to a little over it) and sawed between half and just over it: ~60% of the quota."""
    pacer = KeyPacer(200.0)
    log = Run(pacer, Bucket(quota, 1.0)).until(40.0)
    # The second half of the run: at least 90% of the quota accepted, almost nothing refused.
    assert accepted_between(log, 20.0, 40.0) >= 0.9 * quota * 20.0
    assert refused_between(log, 20.0, 40.0) <= 0.02 * quota * 20.0
    assert pacer.rate <= quota


@pytest.mark.parametrize("quota", [10.0, 20.0])
def test_a_bucket_with_no_burst_behind_timing_jitter_is_drained_near_its_quota(
    quota: float,
) -> None:
    """Requests reach a burst-1 bucket up to 4 ms late (at random): near its quota some gaps
    shrink under its spacing, so it refuses irregularly (no spacing signature) and accepts
    about 60% of what was sent. A cut to 95% of that landed at ~55% of the quota, and growing
    back by 5% steps took about as long as the next wall came (71% of the quota accepted at
    10/s, 72% at 20/s); a wall one step above a rate that was spotless lands just under that
    rate instead (84%, 81%). (No client can take all of it without refusals: sent evenly,
    such a bucket is spotless only up to 1 / (1/quota + 4 ms), 96% at 10/s, 93% at 20/s.)"""
    pacer = KeyPacer(200.0)
    log = Run(pacer, Bucket(quota, 1.0), jitter=0.004).until(40.0)
    assert accepted_between(log, 10.0, 40.0) >= 0.78 * quota * 30.0
    assert refused_between(log, 10.0, 40.0) <= 0.1 * quota * 30.0


def test_the_spacing_bounds_the_quota_from_both_sides() -> None:
    """Sent to at 12/s, a 10/s bucket accepts every other request: the accepts, 1/6 s apart,
    say the quota is at least 6/s; the refusals, 1/12 s after an accept, that it is under 12.
    With no spotless rate known the key lands at 95% of the low bound; the climb meets the
    spacing again over the quota, and the key holds on its last spotless rate, within 10%."""
    pacer = KeyPacer(200.0, rate=12.0)
    pacer.cut_at = 0.0  # past the wall that ends slow start
    run = Run(pacer, Bucket(10.0, 1.0))
    run.until(1.0)
    assert pacer.spacing is not None
    assert pacer.spacing.low == pytest.approx(6.0)
    assert pacer.spacing.high == pytest.approx(12.0)
    assert pacer.rate == pytest.approx(6.0 * 0.95)
    run.until(10.0)
    assert pacer.spacing is not None
    assert 9.0 <= pacer.spacing.low <= 10.0 < pacer.spacing.high <= 1.1 * pacer.spacing.low
    assert pacer.rate == pytest.approx(pacer.spacing.low)


@pytest.mark.parametrize(
    ("marks", "bounds"),
    [
        # (sent at, refused): accepts 0.2 s apart, a refusal 0.1 s after each
        ([(0.0, False), (0.1, True), (0.2, False), (0.3, True), (0.4, False)], (5.0, 10.0)),
        # the same answers as they came back, out of order: read in send order
        ([(0.4, False), (0.3, True), (0.0, False), (0.2, False), (0.1, True)], (5.0, 10.0)),
        # two accepts in a row: a bigger bucket
        ([(0.0, False), (0.1, True), (0.2, False), (0.25, False), (0.3, True), (0.4, False)], None),
        ([(0.0, False), (0.1, True), (0.2, False), (0.3, True)], None),  # two accepts only
        # one refusal after the first accept, two after the second: no one spacing
        ([(0.0, False), (0.1, True), (0.2, False), (0.25, True), (0.3, True), (0.4, False)], None),
        # a refusal later after an accept than the shortest gap between accepts
        ([(0.0, False), (0.1, True), (0.15, False), (0.35, True), (0.4, False)], None),
    ],
)
def test_a_decisions_answers_bound_a_burst_1_buckets_quota(
    marks: list[tuple[float, bool]], bounds: tuple[float, float] | None
) -> None:
    """The signature read from the answers alone (send order, whatever order they came in):
    never two accepts in a row, one number of refusals after each, three accepts or more; the
    accepts' gaps bound the quota from below, the refusals' from above, and a refusal further
    from its accept than two accepts are from each other is no spacing."""
    got = spacing_bounds(marks)
    if bounds is None:
        assert got is None
    else:
        assert got == pytest.approx(bounds)


def test_only_the_first_spacing_wall_is_a_wall_for_the_governor() -> None:
    """``cut_at`` moves for the wall that found the spacing, not for the bisection's own
    probes: keys with burst-1 quotas of their own probe in lockstep, and the governor merges
    keys whose walls coincide."""
    pacer = KeyPacer(200.0, rate=12.0)
    pacer.cut_at = 0.0
    run = Run(pacer, Bucket(10.0, 1.0))
    run.until(1.0)
    first = pacer.cut_at
    assert 0.0 < first < 1.0
    run.until(10.0)
    assert pacer.spaced >= 2  # the bisection met the spacing again...
    assert pacer.cut_at == first  # ... without a wall the governor sees


def test_the_wall_that_ends_slow_start_is_cut_as_any_wall() -> None:
    """Keys of one quota interleave their requests as regularly as a spacing, and all keys
    meet that wall together: it is no spacing. (Reading it so for a key alone in its project
    was tried: better in simulation, worse against the fake over loopback, where timing blurs
    a bucket of one token's spacing: 11.6% -> 15.7% of a 100-name run's requests at 10/s.)"""
    pacer = KeyPacer(200.0, rate=40.0)
    feed_marks(pacer, 0.0, 40.0, "AR" * 8)
    assert pacer.spacing is None
    assert pacer.checking is not None  # a cut, to be judged
    assert pacer.rate == pytest.approx(20.0 * 0.95)


def test_a_merged_pacers_interleaved_refusals_are_no_spacing() -> None:
    """A project's pacer that took over its regions' keys sends their requests in turn: one
    region's spent window refuses every third request while the others accept, as regular as
    a spacing (a key alone sent to at 40/s, accepted one in three, has a bucket of one token
    at 13-20/s). Read as one, three regions with fixed windows of 15.5/s each were held to
    5.5/s together until the run's end (2.5x the floor). A project's pacer that one key
    joined paces that key's requests only: it reads a spacing as the key's own pacer would."""
    alone, one, merged = (KeyPacer(200.0, rate=40.0) for _ in range(3))
    one.absorb(KeyPacer(200.0, rate=20.0), 0.5, first=True)
    for region in range(3):
        merged.absorb(KeyPacer(200.0, rate=20.0), 0.5, first=region == 0)
    for pacer in (alone, one, merged):
        pacer.cut_at = 0.0  # past the wall that ends slow start
        pacer.rate = 40.0
        feed_marks(pacer, 1.0, 40.0, "ARR" * 6)
    assert alone.spacing is not None and one.spacing is not None
    assert merged.spacing is None


@pytest.mark.parametrize(
    "pattern",
    [
        "AARARARAR",  # two accepts in a row: a bucket that saves more than one token
        "ARARRARAR",  # refusal runs of different lengths: another key's requests between
        "ARRRRRRRA",  # one gap only
    ],
)
def test_an_irregular_pattern_is_no_spacing(pattern: str) -> None:
    pacer = KeyPacer(200.0, rate=40.0)
    pacer.cut_at = 0.0
    feed_marks(pacer, 1.0, 40.0, pattern)
    assert pacer.spacing is None


def test_a_key_held_at_its_stated_limit_reads_no_spacing() -> None:
    """At 98% of a stated limit a bucket of one token of that limit refuses nothing: refusals
    there that alternate with accepts are a background's chance run (or a budget spent), not
    a spacing, whose landing halved the key (a stated 25/s with 10% of 429s at random,
    simulated: 1.32x the floor, 1.17x read as a wall at the limit, which parks the key to
    resume at the limit)."""
    pacer = KeyPacer(200.0, rate=24.5)
    pacer.limit = 25.0
    pacer.cut_at = 0.0  # past the wall that ends slow start
    feed_marks(pacer, 1.0, 24.5, "AR" * 8)
    assert pacer.spacing is None
    assert pacer.state is PacerState.PARKED  # the first sure wall at the limit: a park
    resumed = KeyPacer(200.0, rate=24.5)
    resumed.limit = 25.0
    resumed.cut_at = 0.0
    resumed.limit_parked = True  # (parked once already: a wall there is cut, not parked)
    feed_marks(resumed, 1.0, 24.5, "AR" * 8)
    assert resumed.spacing is None
    assert resumed.checking is not None  # a cut, to be judged as any other
    unstated = KeyPacer(200.0, rate=24.5)
    unstated.cut_at = 0.0
    feed_marks(unstated, 1.0, 24.5, "AR" * 8)
    assert unstated.spacing is not None  # (the same answers with no limit stated)


def test_a_bigger_bucket_at_twice_its_quota_is_found_out_by_a_small_step() -> None:
    """At exactly twice its quota a bucket with a burst refuses every other request too, its
    quota at the spacing's low end. The climb above it starts small, and the refusals it
    meets that are no spacing end the bisection at the last spotless rate: the key drains
    the bucket as main's pacer would, without a sawtooth. (Powers of two: exact spacing.)"""
    pacer = KeyPacer(200.0, rate=64.0)
    pacer.cut_at = 0.0
    bucket = Bucket(32.0, 4.0)
    bucket.tokens = 0.0
    log = Run(pacer, bucket, latency=1 / 64).until(20.0)
    assert pacer.spaced == 1  # read as a spacing once, then found out
    assert pacer.spacing is None
    assert pacer.rate <= 32.0 * 1.1
    assert accepted_between(log, 10.0, 20.0) >= 0.9 * 32.0 * 10.0
    assert refused_between(log, 0.0, 20.0) <= 0.05 * len(log)


def test_a_spacing_is_forgotten_after_its_accepts_and_probed_again() -> None:
    """Holding under a bound forever would never find a quota that grew."""
    pacer = KeyPacer(200.0, rate=12.0)
    pacer.cut_at = 0.0
    bucket = Bucket(10.0, 1.0)
    run = Run(pacer, bucket)
    run.until(10.0)
    assert pacer.spacing is not None
    bucket.rate = 20.0  # the quota grew
    log = run.until(80.0)
    assert pacer.rate > 15.0
    assert accepted_between(log, 60.0, 80.0) >= 0.8 * 20.0 * 20.0
    assert not math.isinf(pacer.estimate)


@pytest.mark.parametrize("alone", [True, False])
def test_one_close_spacing_wall_holds_a_key_alone_in_its_project(alone: bool) -> None:
    """A key past its first wall climbs by 5% steps from a spotless rate and meets a bucket of
    one token's spacing within 10% of it: the quota is bounded. Alone in its project the key
    holds there at once; beside other keys it tests the spacing once more (it may have been
    another key's requests interleaved on one quota), at four refusals: 3.5% of a 100-name run
    at 10/s, which the key alone used to pay too (12.3% -> 9.1% of requests refused)."""
    pacer = KeyPacer(200.0, rate=9.5, alone=alone)
    pacer.cut_at, pacer.walls, pacer.estimate = 0.0, 1, 10.0  # past a wall at about 10/s
    log = Run(pacer, Bucket(10.0, 1.0)).until(25.0)  # (before 256 accepts: then it probes)
    assert pacer.spacing is not None
    assert pacer.spacing.low <= 10.0 < pacer.spacing.high <= 1.1 * pacer.spacing.low
    assert pacer.spaced == (1 if alone else 2)
    assert refused_between(log, 0.0, 25.0) == 4 * pacer.spaced
    assert accepted_between(log, 5.0, 25.0) >= 0.95 * 10.0 * 20.0


@pytest.mark.parametrize("quota", [10.0, 40.0])
def test_a_probe_past_a_confirmed_quota_refused_at_once_goes_back_on_eight_answers(
    quota: float,
) -> None:
    """A pacer that took over other keys (it reads no spacing: their requests interleave),
    past a wall at its quota, on a bucket of one token: every probe 5% past the quota is
    refused every other request. Judged on 16 answers, each cost eight refusals (two regions
    on one bucket of 10/s, merged: 14% of all requests; 15% here at 10/s, 11% at 40/s); the
    step is taken back on 8 (9% and 6.5%)."""
    pacer = KeyPacer(200.0, rate=0.95 * quota)
    pacer.absorb(KeyPacer(200.0, rate=quota / 2), 0.0, first=False)
    pacer.cut_at, pacer.walls, pacer.estimate = 0.0, 1, quota  # past a wall at the quota
    pacer.rate = 0.95 * quota
    log = Run(pacer, Bucket(quota, 1.0)).until(40.0)
    refused = refused_between(log, 0.0, 40.0)
    assert refused <= 0.1 * len(log), (refused, len(log))
    assert accepted_between(log, 0.0, 40.0) >= 0.85 * quota * 40.0


def test_a_probe_refused_at_once_lands_no_lower_than_the_rate_it_stepped_from() -> None:
    """Eight answers are a rough measure of what the server accepts: the cut lands at what
    they say, or at 95% of the rate the step left if that is more (a merged pacer of six
    regions of their own, stepped from 178/s to 196/s, 4 of 8 refused: cut to 124/s where
    16 answers said 140/s). With a background known the step is judged on 16 as before."""
    for noise in (0.0, 0.05):
        pacer = KeyPacer(400.0, rate=178.0)
        pacer.cut_at, pacer.walls, pacer.estimate = 0.0, 1, 170.0
        now = 1.0
        while pacer.rate == 178.0:  # clean answers until a step up
            now = feed_marks(pacer, now, 178.0, "A")
        assert pacer.stepped_from == 178.0
        pacer.noise = noise
        # (the first sent before the step's decision: not its news)
        feed_marks(pacer, now, pacer.rate, "AAARRAARR")
        if noise:
            assert pacer.checking is None  # not yet: 16 answers
            continue
        assert pacer.checking is not None  # cut on 8 answers
        assert pacer.rate == pytest.approx(0.95 * 178.0)


def test_a_doubling_walled_at_about_its_spotless_rate_climbs_back_by_bigger_steps() -> None:
    """Slow start doubled from a rate it sent at without a refusal, and the doubled rate met
    a wall that accepted about the old one: the quota lies between the two (a bucket of one
    token accepts every other request at up to twice its quota, so what it accepted says
    little). Cut there as any wall, the climb back starts at 15%, not at the 5% that creeps
    near a measured quota: past 1.3x the old rate in three clean decisions, not six. (Two
    regions on one bucket of one token at 10/s, merged: the merged pacer doubled from 5.7/s,
    was cut to 5.4/s, and took nine seconds at 5-8/s to climb back.) A wall met without such
    a step climbs by 5%, as before."""
    climbs = []
    for doubled in (True, False):
        pacer = KeyPacer(200.0, rate=10.0 if doubled else 20.0)
        now = 0.0
        while pacer.rate == 10.0:  # spotless at 10/s, then slow start doubles
            now = feed_marks(pacer, now, 10.0, "A")
        assert pacer.rate == 20.0
        now = feed_marks(pacer, now, 20.0, "AR" * 8)  # half accepted: 10/s
        assert pacer.checking is not None
        assert pacer.rate == pytest.approx(9.5)
        rates = [pacer.rate]
        while len(rates) < 4:  # the cut judged, then three clean decisions
            now = feed_marks(pacer, now, pacer.rate, "A")
            if pacer.rate > rates[-1] * 1.001:
                rates.append(pacer.rate)
        assert pacer.walls == 1 and pacer.estimate == pytest.approx(10.0)
        climbs.append(rates[-1] / 10.0)
    assert climbs[0] > 1.4  # 10.9, 12.6, 14.4
    assert climbs[1] < 1.15  # 10.0, 10.5, 11.0
