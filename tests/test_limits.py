"""The adaptive pacer's decisions, driven by a plain number as the clock: exact and instant."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from bulkcancel._answers import QuotaInfo
from bulkcancel._key_record import PacerState
from bulkcancel._limits import Grant, RateGovernor
from bulkcancel._metering import READS
from bulkcancel._pacer import KeyPacer
from bulkcancel._spacing import Spacing
from tests._pacing import feed_marks, run_simulation

KEY = "projects/p/locations/l"


def feed_every(pacer: KeyPacer, start: float, rate: float, count: int, every: int) -> float:
    """``count`` answers sent ``1/rate`` apart, one in ``every`` throttled (the first of them)."""
    now = start
    for i in range(count):
        pacer.sent(now)
        pacer.on_answer(now + 0.01, throttled=i % every == 0, sent_at=now)
        now += 1.0 / rate
    return now


def feed(
    pacer: KeyPacer, start: float, rate: float, count: int, share: float, seed: int = 1
) -> float:
    """``count`` answers sent ``1/rate`` apart, a ``share`` of them throttled at random."""
    rng = random.Random(seed)
    now = start
    for _ in range(count):
        pacer.sent(now)
        pacer.on_answer(now + 0.01, throttled=rng.random() < share, sent_at=now)
        now += 1.0 / rate
    return now


def test_background_share_is_learned_and_does_not_lower_the_rate() -> None:
    pacer = KeyPacer(50.0, rate=50.0)
    end = feed(pacer, 0.0, 50.0, 3000, 0.10)
    assert 0.05 <= pacer.noise <= 0.15
    assert pacer.rate == 50.0  # after a minute of 10% 429s, still at the ceiling
    assert end == pytest.approx(60.0)


def test_a_wall_cuts_to_what_the_server_accepted() -> None:
    pacer = KeyPacer(100.0, rate=100.0)
    feed(pacer, 0.0, 100.0, 16, 0.5, seed=3)
    accepted = pacer.checking[2] if pacer.checking else 0.0
    assert pacer.rate == pytest.approx(accepted * 0.95)
    assert 30.0 <= pacer.rate <= 70.0


def test_a_cut_counts_every_request_sent_while_its_answers_were_sent() -> None:
    """Answers come back out of order (a network's jitter): the first eight to arrive are every
    other request's of sixteen sent at 100/s, six of them refused. They were sent over 0.14 s,
    at 100/s, not at the 50/s their own count over that span says: the server accepted a
    quarter of 100/s, and the cut lands under that (it landed at half of it)."""
    pacer = KeyPacer(200.0, rate=100.0)
    sends = [i / 100.0 for i in range(16)]
    for at in sends:
        pacer.sent(at)
    refused = [False, True, True, True, False, True, True, True]
    for at, throttled in zip(sends[::2], refused, strict=True):
        pacer.on_answer(at + 0.2, throttled=throttled, sent_at=at)
    assert pacer.checking is not None
    share, rate_before, accepted = pacer.checking
    assert (share, rate_before) == (0.75, 100.0)
    assert accepted == pytest.approx(25.0)
    assert pacer.rate == pytest.approx(25.0 * 0.95)


def take_turn(pacer: KeyPacer, now: float) -> float:
    """Ask for a turn at ``now``, sleep until it comes (waking exactly), send: when it went."""
    wait, _ = pacer.reserve(now)
    while wait > 0:
        now += wait
        wait, _ = pacer.reserve(now, woken=True)
    pacer.sent(now)
    return now


def test_a_cut_leaves_out_the_time_the_key_had_nothing_to_send() -> None:
    """A listing's pages go one at a time, each a round trip (0.15 s) after the one before, on
    the key whose cancels then go at slow start's 150/s (told 300/s) into a bucket of 30/s:
    the decision that meets the wall holds two pages' answers and six cancels'. Over the span
    of their sends the key sent 8 requests in a third of a second, 21/s, and the cut landed at
    7/s (the run crept back for eight seconds: 1.8x the floor); but between the pages nothing
    waited for a turn. Left out, the span is the cancels' own, sent at 150/s, of which the
    server accepted a fifth after its burst: the cut lands at 30/s. Turns taken as they come
    due (the cancels) leave no idle stretch."""
    pacer = KeyPacer(300.0)
    now = 0.0
    for _ in range(6):  # the listing
        sent = take_turn(pacer, now)
        now = sent + 0.15
        pacer.on_answer(now, throttled=False, sent_at=sent)
    assert len(pacer.idle) == 5  # (the first page's turn ended no idle stretch)
    sends = []
    for _ in range(20):  # the cancels, all sent before the first is answered
        now = take_turn(pacer, now)
        sends.append(now)
    assert len(pacer.idle) == 6  # (the last page's round trip; no cancel's turn)
    assert sends[-1] - sends[0] == pytest.approx(19 / 150)
    refused = [False] * 3 + [i % 5 != 0 for i in range(17)]  # the burst, then a fifth
    for at, throttled in zip(sends, refused, strict=True):
        pacer.on_answer(at + 0.15, throttled=throttled, sent_at=at)
        if pacer.checking is not None:
            break
    assert pacer.checking is not None
    assert pacer.checking[2] == pytest.approx(30.0)
    assert pacer.rate == pytest.approx(30.0 * 0.95)


def distant(
    pacer: KeyPacer,
    sends: list[tuple[float, bool]],
    latency: float,
    until: float,
    after: float = -math.inf,
) -> None:
    """Requests sent at the given times, each answered (throttled or not) ``latency`` later:
    sends and answers reach the pacer in time order, as over a distant server, those after
    ``after`` up to ``until``."""
    events = [(at, 0, False, at) for at, _ in sends]
    events += [(at + latency, 1, throttled, at) for at, throttled in sends]
    for now, kind, throttled, sent_at in sorted(events):
        if now <= after or now > until:
            continue
        if kind == 0:
            pacer.sent(now)
        else:
            pacer.on_answer(now, throttled=throttled, sent_at=sent_at)


def slow_start_behind(accepted: int) -> list[tuple[float, bool]]:
    """Slow start's sends at 100/s for 0.23 s, the first ``accepted`` accepted (a burst) and
    every other one after that (a bucket refilling at 50/s); then at 200/s, all refused."""
    first = [(i / 100, i >= accepted and (i - accepted) % 2 == 0) for i in range(23)]
    return first + [(0.23 + i / 200, True) for i in range(60)]


def test_refusals_of_what_slow_start_sent_before_its_doubling_cut_at_once() -> None:
    """Behind 0.2 s answers the first four (the burst's) double slow start at 0.23 s; the
    refusals of what went out at 100/s meanwhile arrive after it. A wall they show (eight
    answers from the first refusal on, half refused) is cut at once, on the answers after the
    first refusal (a bucket accepting 50/s of 100/s), not a round trip later at 200/s."""
    pacer = KeyPacer(200.0, rate=100.0)
    sends = slow_start_behind(accepted=9)
    distant(pacer, sends, 0.2, until=0.365)
    # (eight answers from the first refusal on, the last accepted: judged at a refusal)
    assert pacer.rate == 200.0 and pacer.checking is None
    distant(pacer, sends, 0.2, until=0.375, after=0.365)
    assert pacer.checking == (0.5, 200.0, pytest.approx(50.0))
    assert pacer.rate == pytest.approx(50.0 * 0.95)
    assert pacer.cut_at == 0.37 and pacer.decided_at == 0.37


def test_late_refusals_that_show_no_wall_wait_for_the_next_decision() -> None:
    """Late answers are judged as a wall only by a sure share (40% of eight from the first
    refusal on), only in slow start, and only with no background known: a background's
    scattered refusals among them wait for the doubled rate's own decision."""
    sends = [(i / 100, i in (12, 19)) for i in range(23)]  # two of nineteen: 10%
    pacer = KeyPacer(200.0, rate=100.0)
    distant(pacer, sends, 0.2, until=1.0)
    assert pacer.rate == 200.0 and pacer.checking is None
    known = KeyPacer(200.0, rate=100.0, noise=0.1)
    distant(known, slow_start_behind(accepted=9)[:23], 0.2, until=1.0)
    assert known.rate == 200.0 and known.checking is None  # (a background known: not judged)


def test_a_burst_spent_before_slow_start_s_doubling_parks_the_key() -> None:
    """Twenty accepts (a minute's burst), then every late answer refused, five in a row: the
    burst is spent, and the key parks at once (its doubled rate would meet the same wall)."""
    pacer = KeyPacer(200.0, rate=100.0)
    sends = [(i / 100, i >= 18) for i in range(23)]
    distant(pacer, sends, 0.2, until=0.415)
    assert pacer.state is PacerState.ACTIVE and pacer.rate == 200.0  # (four in a row)
    distant(pacer, sends, 0.2, until=0.425, after=0.415)
    assert pacer.state.value == "parked"  # (.value: mypy holds the state narrowed above)


def test_a_per_minute_limit_value_sets_the_rate_at_once() -> None:
    pacer = KeyPacer(200.0, rate=200.0)
    quota = QuotaInfo(limit="ApiRequestsPerMinutePerProjectPerRegion", limit_value=1800.0)
    pacer.on_answer(0.1, throttled=True, sent_at=0.0, quota=quota)
    assert pacer.rate == pytest.approx(30.0 * 0.98)


def test_quota_metadata_scope() -> None:
    assert QuotaInfo(location="global").project_wide
    assert not QuotaInfo(location="us-central1").project_wide
    assert QuotaInfo(limit="ApiRequestsPerMinutePerProject").project_wide
    assert not QuotaInfo(limit="ApiRequestsPerMinutePerProjectPerRegion").project_wide
    # Regional, stated: walls that coincide with another region's are still its own.
    assert QuotaInfo(location="us-central1").regional
    assert QuotaInfo(limit="ApiRequestsPerMinutePerProjectPerRegion").regional
    assert not QuotaInfo(location="global", limit="PerMinutePerProjectPerRegion").regional
    assert not QuotaInfo(limit="ApiRequestsPerMinutePerProject").regional
    assert not QuotaInfo().regional and not QuotaInfo().project_wide  # unsaid: learned
    assert QuotaInfo(limit="X", limit_value=0.0).per_second is None  # "0": no quota at all


def test_nearly_everything_refused_parks_the_key_and_probes_sparsely() -> None:
    pacer = KeyPacer(100.0, rate=100.0)
    now = feed(pacer, 0.0, 100.0, 66, 0.0)  # what worked: ~66 accepted in the last second
    refused = 0
    while pacer.state is PacerState.ACTIVE and refused < 40:
        now = feed(pacer, now, 100.0, 1, 1.0)
        refused += 1
    assert refused <= 24  # a wall of refusals is recognised within a few dozen answers
    assert pacer.state.value == "parked"
    assert pacer.reserve(now)[1] is False  # nothing until the first probe
    wait, _ = pacer.reserve(now)
    now += wait
    assert pacer.reserve(now) == (0.0, True)  # one probe...
    assert pacer.reserve(now)[0] > 0  # ...at a time
    pacer.on_answer(now + 0.01, throttled=True, sent_at=now, probe=True)
    gap = pacer.probe_gap
    assert gap == pytest.approx(0.5)  # doubling
    now += 0.01 + gap
    assert pacer.reserve(now) == (0.0, True)
    pacer.on_answer(now + 0.01, throttled=False, sent_at=now, probe=True)
    assert pacer.state is PacerState.ACTIVE
    assert 30.0 <= pacer.rate <= 100.0  # resumed near what was accepted before the wall


def test_a_key_refusing_everything_is_exhausted_after_its_budget() -> None:
    pacer = KeyPacer(10.0, rate=10.0, throttle_budget=30.0)
    feed(pacer, 0.0, 10.0, 8, 1.0)
    assert pacer.state is PacerState.PARKED
    assert not pacer.exhausted(pacer.parked_at + 29.0)
    assert pacer.exhausted(pacer.parked_at + 30.0)


def test_a_hint_sets_the_first_probe_of_a_park_capped() -> None:
    pacer = KeyPacer(10.0, rate=10.0, hint_cap=60.0)
    for i in range(8):
        pacer.on_answer(0.1 * i, throttled=True, sent_at=0.1 * i, hint=3600.0)
    assert pacer.state is PacerState.PARKED
    assert pacer.probe_at == pytest.approx(0.7 + 60.0)


def test_slow_start_doubles_until_the_first_wall() -> None:
    pacer = KeyPacer(200.0)
    assert pacer.rate == 100.0
    feed(pacer, 0.0, 100.0, 64, 0.0)
    assert pacer.rate == pytest.approx(200.0)


def test_project_wide_quota_routes_keys_to_one_pacer() -> None:
    async def main() -> None:
        governor = RateGovernor(100.0, clock=lambda: 1.0)
        region = "projects/p/locations/a"
        grant = await governor.acquire_key(region)
        assert grant is not None
        governor.report(grant, throttled=True, quota=QuotaInfo(location="global"), key=region)
        assert governor.pacer(region) is governor.pacer("projects/p/locations/b") or (
            governor.pacer(region) is governor.pacer("projects/p")
        )

    asyncio.run(main())


def test_reads_metered_apart_from_cancels_get_a_pacer_of_their_own() -> None:
    """Throttles of a key's cancels and of its reads that name two quotas (Cloud Batch meters
    writes and reads apart), or one throttle whose quota is named for its own kind: the reads
    are paced apart from then on, each pacer capped at the value its own throttles stated;
    throttles naming one quota for both, or none, keep one pacer."""
    per_region = "PerMinutePerProjectPerRegion"
    key = "projects/p/locations/a"
    clock = [0.0]

    def refused(governor: RateGovernor, quota: QuotaInfo, *, is_read: bool) -> None:
        clock[0] += 1.0  # (a turn is free a second on, whatever the rate)
        grant = governor.try_acquire_key(governor.key_for(key, read=is_read))
        assert grant is not None
        governor.sent(grant)
        governor.report(grant, throttled=True, quota=quota, key=key, read=is_read)

    # Two names: told apart at the second.
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    refused(governor, QuotaInfo("x/mutations", f"Mutations{per_region}", 1200.0), is_read=False)
    assert governor.key_for(key, read=True) == key  # one name seen: nothing to tell apart
    one = governor.pacer(key)
    assert one.limit == pytest.approx(20.0)
    refused(governor, QuotaInfo("x/lookups", f"Lookups{per_region}", 3600.0), is_read=True)
    reads = governor.key_for(key, read=True)
    assert reads == key + READS and governor.key_for(key, read=False) == key
    assert governor.pacer(reads) is not one
    assert governor.pacer(reads).limit == pytest.approx(60.0)  # the read's value is its own
    assert one.limit == pytest.approx(20.0)  # ...not the cancels' pacer's
    assert set(governor.rates()) == {key, reads}

    # A quota named for writes, refusing a cancel: the reads are another meter's, at once.
    for metric, limit in (
        ("x/write_requests", f"Mutations{per_region}"),
        (None, f"WriteRequests{per_region}"),
    ):
        named = RateGovernor(200.0, clock=lambda: clock[0])
        refused(named, QuotaInfo(metric, limit, 1200.0), is_read=False)
        assert named.key_for(key, read=True) == key + READS
        assert named.pacer(key).limit == pytest.approx(20.0)
        assert named.pacer(key + READS).limit == math.inf  # (its own, when it is stated)

    # One name for both (Cloud Deploy's api_requests), or bare 429s: one pacer.
    same = RateGovernor(200.0, clock=lambda: clock[0])
    both = QuotaInfo("x/api_requests", f"ApiRequests{per_region}")
    for is_read in (False, True, False):
        refused(same, both, is_read=is_read)
        refused(same, QuotaInfo(), is_read=not is_read)
    assert same.key_for(key, read=True) == key and set(same.rates()) == {key}
    # A read's quota named for writes is not its own kind: nothing is told by it.
    odd = RateGovernor(200.0, clock=lambda: clock[0])
    refused(odd, QuotaInfo("x/write_requests", None), is_read=True)
    assert odd.key_for(key, read=True) == key


def test_reads_waiting_at_the_key_s_pacer_move_to_their_own_once_paced_apart() -> None:
    """A read waiting for its key's turn when the key's reads are paced apart leaves the key's
    queue for the reads' pacer at once (before, it kept its place behind the key's cancels,
    and reads asked seconds before the split took every other turn of the key's after it); a
    cancel queued behind it keeps its place at the key's, and a read behind that goes to the
    reads' pacer when its turn to ask comes."""
    key = "projects/p/locations/a"

    async def main() -> dict[str, tuple[float, bool]]:
        loop = asyncio.get_running_loop()
        governor = RateGovernor(200.0)
        pacer = governor.pacer(key)
        pacer.rate = 1.0  # (turns a second apart)
        first = governor.try_acquire_key(key)
        assert first is not None
        governor.sent(first)
        granted: dict[str, tuple[float, bool]] = {}

        async def ask(label: str, *, read: bool) -> None:
            grant = await governor.acquire_key(key, read=read)
            assert grant is not None
            granted[label] = (loop.time(), grant.pacer is pacer)
            governor.sent(grant)

        tasks = [asyncio.ensure_future(ask("read", read=True))]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.ensure_future(ask("cancel", read=False)))
        tasks.append(asyncio.ensure_future(ask("later read", read=True)))
        await asyncio.sleep(0.1)
        assert not granted
        # A read refused, its ErrorInfo naming a quota of reads: paced apart from now on.
        governor.report(
            first, throttled=True, quota=QuotaInfo("x/read_requests"), key=key, read=True
        )
        assert governor.key_for(key, read=True) == key + READS
        await asyncio.gather(*tasks)
        return granted

    granted = run_simulation(main)
    assert granted["read"][0] < 0.2 and not granted["read"][1]  # at once, by its own pacer
    assert granted["cancel"][1]  # the key's turn, in its place
    assert not granted["later read"][1]


@pytest.mark.parametrize("reads_refused", [0, 1])
def test_with_bare_429s_cancels_refused_beside_reads_that_pass_meter_reads_apart(
    reads_refused: int,
) -> None:
    """Nothing names the quotas, but who is refused tells: the key's last 32 cancels a quarter
    refused while none of its last 32 reads was, within a second of each other. The reads get
    a pacer of their own then (not before: 31 reads are too few); one read refused among them
    says one quota refuses both, and the key keeps one pacer."""
    key = "projects/p/locations/a"
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])

    def answer(*, is_read: bool, throttled: bool) -> None:
        clock[0] += 0.01
        pacer = governor.pacer(governor.key_for(key, read=is_read))
        grant = Grant(pacer, clock[0])  # (the turn itself is not what is tested)
        governor.report(grant, throttled=throttled, key=key, read=is_read)

    for i in range(32):  # cancels and reads interleaved: one in four cancels refused
        answer(is_read=False, throttled=i % 4 == 0)
        if i < 31:
            answer(is_read=True, throttled=reads_refused > 0 and i == 7)
    assert governor.key_for(key, read=True) == key  # 31 reads: too few to tell
    answer(is_read=True, throttled=False)
    answer(is_read=False, throttled=False)
    assert governor.key_for(key, read=True) == key  # told only at a refused cancel
    answer(is_read=False, throttled=True)
    if reads_refused:
        assert governor.key_for(key, read=True) == key and set(governor.rates()) == {key}
    else:
        assert governor.key_for(key, read=True) == key + READS
        assert set(governor.rates()) == {key, key + READS}
        assert governor.pacer(key + READS).rate == governor.pacer(key).rate


def test_a_key_is_alone_until_another_key_of_its_project_is_paced() -> None:
    """Only a key alone in its project may take a high share that holds for background: beside
    another key on one quota a share holds when the other key's rate falls. A key's reads paced
    apart are the peers of its project's other reads, never of its cancels."""
    governor = RateGovernor(100.0, clock=lambda: 1.0)
    first = governor.pacer("projects/p/locations/a")
    other_project = governor.pacer("projects/q/locations/a")
    assert first.alone and other_project.alone
    second = governor.pacer("projects/p/locations/b")
    assert not first.alone and not second.alone
    assert other_project.alone
    # A key's reads paced apart are on a quota of their own: not its cancels' peer, but
    # another region's reads are theirs.
    reads = governor.pacer("projects/q/locations/a" + READS)
    assert other_project.alone and reads.alone
    other_reads = governor.pacer("projects/q/locations/b" + READS)
    assert not reads.alone and not other_reads.alone
    assert other_project.alone


def test_a_project_wide_quota_s_pacer_is_alone_once_every_key_that_sent_joined_it() -> None:
    """ErrorInfo says the quota is the project's: its pacer paces all of that quota's traffic
    once every key of the project with a pacer joined it, and is alone then (a share that holds
    when its rate moves is background); a key still paced on its own beside it shares the
    quota, and the project's pacer is not alone until that key joins too."""
    governor = RateGovernor(100.0, clock=lambda: 1.0)
    told = QuotaInfo(location="global")
    a, b = "projects/p/locations/a", "projects/p/locations/b"
    grant = governor.try_acquire_key(a)
    assert grant is not None
    governor.report(grant, throttled=True, quota=told, key=a)
    shared = governor.pacer(a)
    assert shared is governor.pacer("projects/p") and shared.absorbed == 1
    assert shared.alone  # one region: its one key joined
    own = governor.pacer(b)  # another region starts, paced on its own for now
    assert own is not shared and not shared.alone and not own.alone
    grant = governor.try_acquire_key(b)
    assert grant is not None
    governor.report(grant, throttled=True, quota=told, key=b)
    assert governor.pacer(b) is shared and shared.absorbed == 2
    assert shared.alone  # both joined


def test_a_project_pacer_over_one_key_parks_on_a_spent_burst_as_the_key_would() -> None:
    """The pacer a key joined (its quota is the project's) paces that key's requests only:
    a burst spent within a decision (8 accepts, then refusals) parks it at the fifth refusal,
    as it parks the key's own pacer. Over two keys or more, their requests interleave and one
    key's lull among the others' accepts would read so: the rule waits for a share."""
    parked = []
    for keys in (0, 1, 2):
        pacer = KeyPacer(200.0, rate=50.0)
        for _ in range(keys):
            pacer.absorb(KeyPacer(200.0, rate=50.0), 0.0, first=not pacer.absorbed)
        # Past its first wall (a window's budget spent at 50/s), deciding afresh at 1.0 s.
        pacer.burst, pacer.walls, pacer.estimate, pacer.decided_at = 50.0, 1, 60.0, 1.0
        assert pacer.interleaved == (keys >= 2)
        feed_marks(pacer, 1.0, 50.0, "A" * 8 + "R" * 5)  # 5 of 13: under a wall's 40%
        parked.append(pacer.state is PacerState.PARKED)
    assert parked == [True, True, False]


def test_a_high_share_that_holds_after_a_cut_is_tested_by_going_back_up() -> None:
    """Half the answers refused at random (no burst-1 spacing: accepts come two in a row):
    cut on 16; the share holds over the 32 answers after the cut, so the key goes back to its
    rate before the cut to test it, and the same share there is background, learned above the
    15% a check learns outright."""
    pattern = "ARARRAARRARAARRA"  # 8 of 16 refused, irregularly, never 60% of the first 8+

    pacer = KeyPacer(100.0, rate=50.0)
    pacer.walls, pacer.estimate, pacer.cut_at = 1, 60.0, 0.0  # past slow start
    now = feed_marks(pacer, 1.0, 50.0, pattern)  # 50% of 16: a cut
    assert pacer.checking is not None and pacer.rate < 30.0
    now = feed_marks(pacer, now, pacer.rate, pattern * 2)  # still 50% over 32: held
    assert pacer.checking is None and pacer.testing is not None
    assert pacer.rate == pytest.approx(50.0)
    feed_marks(pacer, now, 50.0, pattern)  # the same share at the higher rate: background
    assert pacer.noise == pytest.approx(0.5)
    assert pacer.rate >= 50.0


def test_a_burst_spent_within_a_decision_is_judged_a_wall_on_the_answers_after_the_cut() -> None:
    """A minute's burst runs out within a decision: 8 accepts, then 7 of the next 8 refused
    (7 of 16). Cut to 95% of what the whole decision accepted (56/s), the key met a bucket
    refilling at a fifth of its rate, 11 of 16 refused: within the binomial margin of 7 in
    16, so this once read as a high background share that held (32 answers, then back to the
    rate before the cut to test it); later, as a share nearer a wall's than background's
    (counted from the wall's onset) judged on 16 answers. Eight accepts in a row are what a
    background of 44% shows one time in a hundred: the burst is set aside, the cut lands on
    what the server accepted from the first refusal on (1 of 8: 12.5/s), under the refill, and
    the next decision confirms it. The key never goes back up."""

    pacer = KeyPacer(100.0, rate=100.0)
    now = feed_marks(pacer, 1.0, 100.0, "A" * 16)  # (slow start at its ceiling: no doubling)
    while pacer.fresh:  # to the start of a decision
        now = feed_marks(pacer, now, 100.0, "A")
    now = feed_marks(pacer, now, 100.0, "AAAAAAAARRRARRRR")
    assert pacer.checking is not None
    cut = pacer.rate
    assert cut == pytest.approx(100.0 / 8 * 0.95)
    now = feed_marks(pacer, now, cut, "A" * 32)  # under the refill: nothing refused
    assert pacer.walls == 1 and pacer.checking is None  # confirmed
    assert pacer.testing is None
    assert pacer.rate < 0.2 * 100.0  # never back up to the rate before the cut to test it


def steady_with_background(noise: float) -> tuple[KeyPacer, float]:
    """A key past slow start at its ceiling of 200/s, ``noise`` learned, one clean decision
    of 64 answers held at that rate (one in ten refused): the start of a decision."""
    pacer = KeyPacer(200.0, rate=200.0, noise=noise)
    pacer.walls, pacer.estimate = 1, 400.0
    now = to_decision(pacer, feed_every(pacer, 0.0, 200.0, 80, 10), 200.0)
    assert pacer.rate == 200.0 and pacer.checking is None and pacer.decided_at > 0.1
    return pacer, now


def to_decision(pacer: KeyPacer, now: float, rate: float) -> float:
    """Clean answers until the next decision; then the time its first answer is sent (one
    sent before the decision counts for none)."""
    while pacer.fresh:
        now = feed_marks(pacer, now, rate, "A")
    return max(now, pacer.decided_at)


@pytest.mark.parametrize("alone", [True, False])
@pytest.mark.parametrize(("second", "cut"), [("R..R..R..R..R..R", True), ("R" + "." * 15, False)])
def test_a_wall_at_a_steady_rate_with_a_background_known_takes_two_decisions(
    second: str, cut: bool, alone: bool
) -> None:
    """6 of 16 refused is a 10% background's chance about once in a hundred decisions (a few
    times in a long run), and a cut on it was judged against that high share: it falls back
    after any cut, so the cut was confirmed as a wall (simulated at 10-20% background, 300
    names: up to 1.3-3x the floor). At a rate held for a decision, the first such decision
    only suspects a wall; a second one cuts, a clean one clears it. Beside another key of its
    project too (two regions with 8% of 429s each: a key held at a third of its pace)."""
    pacer, now = steady_with_background(0.1)
    pacer.alone = alone
    first = "R..R..R..R..R..R".replace(".", "A")  # 6 of 16, never 60% of the first 8
    now = feed_marks(pacer, now, 200.0, first)
    assert pacer.rate == 200.0 and pacer.checking is None  # suspected, nothing cut
    assert pacer.suspected_at == pacer.decided_at
    now = feed_marks(pacer, max(now, pacer.decided_at), 200.0, second.replace(".", "A"))
    assert (pacer.checking is not None and pacer.rate < 200.0) is cut
    if not cut:  # cleared by the next decision (a clean one is made on 64, or half a second)
        to_decision(pacer, now, 200.0)
        assert pacer.suspected_at != pacer.decided_at and pacer.rate == 200.0


@pytest.mark.parametrize("alone", [True, False])
@pytest.mark.parametrize(("second", "cut"), [("R......R........", True), ("A" * 16, False)])
def test_a_wall_at_the_ceiling_before_any_wall_takes_two_decisions(
    second: str, cut: bool, alone: bool
) -> None:
    """At the run's ceiling with no wall met and no background learned, 2 of 16 refused
    crosses the margin (a 5% background's chance one decision in five); a cut on it, followed
    by 0 of 32 (a 5% background's chance one time in five), was confirmed as a wall, and the
    key crept back up by 5% steps. The first such decision only suspects a wall, on a key
    alone or beside others of its project (two regions at 5% of 429s each, 300 operations
    each, 60 ms answers: 6 runs in 40 over 1.2x the floor with it for keys alone only, 2 now)."""
    pacer = KeyPacer(200.0, rate=200.0, alone=alone)  # slow start, at its ceiling: no doubling
    now = to_decision(pacer, feed_marks(pacer, 0.0, 200.0, "A" * 16), 200.0)
    now = feed_marks(pacer, now, 200.0, "R......R........".replace(".", "A"))
    assert pacer.rate == 200.0 and pacer.checking is None  # suspected, nothing cut
    assert pacer.suspected_at == pacer.decided_at
    feed_marks(pacer, max(now, pacer.decided_at), 200.0, second.replace(".", "A"))
    assert (pacer.checking is not None and pacer.rate < 200.0) is cut
    assert pacer.suspected_at != pacer.decided_at  # decided either way (slow start: on 16)


def test_a_wall_the_keys_own_step_met_is_cut_at_once() -> None:
    pacer, now = steady_with_background(0.1)
    pacer.rate = 150.0
    now = to_decision(pacer, feed_every(pacer, now, 150.0, 64, 10), 150.0)  # clean: a step
    assert pacer.rate > 150.0 and pacer.stepped_at == pacer.decided_at
    feed_marks(pacer, now, pacer.rate, "R..R..R..R..R..R".replace(".", "A"))
    assert pacer.checking is not None  # the step's own wall: no second decision


def test_with_a_background_known_a_share_is_judged_on_whole_decisions() -> None:
    """Over the margin at the 20th answer (7 of 20), under it at the 32nd (7 of 32): tested
    at every answer between 16 and 64, a background crosses its margin about twice as often."""
    pacer, now = steady_with_background(0.1)
    now = feed_marks(pacer, now, 200.0, "R" + "A" * 7 + "RA" + "A" * 6)  # 2 of 16: clean
    now = feed_marks(pacer, now, 200.0, "RRRRR")  # 7 of 21: over its margin, not a checkpoint
    assert pacer.checking is None and pacer.suspected_at != pacer.decided_at
    feed_marks(pacer, now, 200.0, "A" * 11)  # 7 of 32: under it
    assert pacer.checking is None and pacer.rate == 200.0
    assert pacer.suspected_at != pacer.decided_at


def test_eight_answers_are_no_wall_on_a_key_alone_with_a_background_known() -> None:
    """6 of 8 refused is a 20% background's chance once in 800 tests, and 8 answers are a
    rough measure of what the server accepts: on a key alone with a background known, the
    8-answer rule is off. Beside another key of its project (one quota may be shared), most of
    8 refused may be that key's growth: cut at once (keeping the rule off there too let two
    regions on a learned shared quota of 30/s take 14% 429s)."""
    pacer, now = steady_with_background(0.15)
    now = feed_marks(pacer, now, 200.0, "RRARRARR")
    assert pacer.checking is None and pacer.rate == 200.0
    pacer, now = steady_with_background(0.15)
    pacer.alone = False
    feed_marks(pacer, now, 200.0, "RRARRARR")
    assert pacer.checking is not None and pacer.rate < 200.0


@pytest.mark.parametrize("seed", range(1, 6))
def test_a_background_learned_low_is_measured_again_on_every_clean_decision(seed: int) -> None:
    """A background learned at 5% on one test's answers, 15% in truth: its margin is crossed
    every few decisions. Measured again over the decisions held clean, it comes near 15%."""
    pacer, now = steady_with_background(0.05)
    feed(pacer, now, 200.0, 1280, 0.15, seed=seed)
    assert 0.11 <= pacer.noise <= 0.15


@pytest.mark.parametrize(
    ("clean", "learned"),
    [(0, (0.125, 0.125)), (300, (0.005, 0.03))],
    ids=["no-run-before", "a-burst-clean-before"],
)
def test_a_background_learned_is_no_higher_than_the_longest_run_of_accepts_allows(
    clean: int, learned: tuple[float, float]
) -> None:
    """A wall (6 of 16 refused), and after the cut 4 of 32 refused: a share that neither fell
    far nor rose, taken for a background of 12.5%. After 300 accepts in a row (a minute's
    burst let through clean) a background of 12.5% is out of the question (such a run comes
    at that share about once in 10^18 answers): what is learned is no more than a run of 300
    allows, and the key does not take an eighth of its answers refused for clean from then on."""
    pacer = KeyPacer(200.0, rate=40.0)
    pacer.walls, pacer.estimate = 1, 40.0  # (a quota measured before)
    now = feed(pacer, 0.0, 40.0, clean, 0.0)
    now = feed_pattern(pacer, now, 40.0, [i % 3 == 0 for i in range(16)])
    assert pacer.checking is not None  # cut, to be judged
    feed_pattern(pacer, now, pacer.rate, [i % 8 == 3 for i in range(32)])
    assert pacer.checking is None
    assert learned[0] <= pacer.noise <= learned[1]


def test_rejects_nonsense_rates() -> None:
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive"):
            RateGovernor(bad)


async def test_stop_wakes_every_nap() -> None:
    governor = RateGovernor(10.0)
    naps = [asyncio.ensure_future(governor.nap(3600.0)) for _ in range(5)]
    await asyncio.sleep(0)
    governor.stop()
    await asyncio.gather(*naps)  # returns: the pytest timeout would catch a nap left asleep
    assert governor.stopped
    assert await governor.acquire("k") is None


def test_a_park_resumes_at_a_known_per_minute_limit() -> None:
    pacer = KeyPacer(200.0, rate=100.0)
    quota = QuotaInfo(limit="ApiRequestsPerMinutePerProject", limit_value=3000.0)
    for i in range(16):  # a young pacer: it has seen no accepts at all
        pacer.sent(0.01 * i)
        pacer.on_answer(0.01 * i + 0.02, throttled=True, sent_at=0.01 * i, quota=quota)
        if pacer.state is PacerState.PARKED:
            break
    # (parked on 8 answers to requests sent at the limit: the two sent before it was stated,
    # at twice the limit, are news acted on)
    assert pacer.state is PacerState.PARKED and i == 9
    now = pacer.probe_at
    assert pacer.reserve(now) == (0.0, True)
    pacer.on_answer(now + 0.02, throttled=False, sent_at=now, probe=True)
    assert pacer.rate == pytest.approx(50.0 * 0.98)  # not the ~0 it accepted lately


def test_a_park_without_a_limit_resumes_at_a_quarter_of_the_rate_at_least() -> None:
    pacer = KeyPacer(200.0, rate=80.0)
    feed(pacer, 0.0, 80.0, 8, 1.0)
    assert pacer.state is PacerState.PARKED
    assert pacer.resume_rate >= 20.0


def test_a_slow_key_grows_on_a_few_clean_answers() -> None:
    pacer = KeyPacer(200.0, rate=2.0)
    feed(pacer, 0.0, 2.0, 4, 0.0)  # 4 answers, 1.5 s: 16 would take 8 s at this rate
    assert pacer.rate > 2.0


def test_background_in_slow_start_is_tested_by_doubling_not_by_a_cut() -> None:
    pacer = KeyPacer(200.0)  # slow start at 100
    now = feed_every(pacer, 0.0, 100.0, 16, 5)  # 4 of 16 refused: a wall, or background?
    assert pacer.testing is not None
    assert pacer.rate > 100.0  # doubled to test, never cut
    feed_every(pacer, now, pacer.rate, 16, 5)  # the same share at the faster rate
    assert pacer.testing is None
    assert pacer.noise > 0.0  # learned as background
    assert pacer.cut_at == -math.inf


def test_a_share_that_rises_after_a_cut_is_a_wall_not_background() -> None:
    pacer = KeyPacer(200.0, rate=200.0)
    now = feed_every(pacer, 0.0, 200.0, 16, 5)  # at the ceiling: no doubling, a cut
    assert pacer.checking is not None
    feed_every(pacer, now + 0.02, pacer.rate, 16, 2)  # half refused after the cut: more
    assert pacer.noise == 0.0
    assert pacer.walls >= 1


def feed_pattern(pacer: KeyPacer, start: float, rate: float, refused: list[bool]) -> float:
    """One answer per entry, sent ``1/rate`` apart, refused where the entry is True."""
    now = start
    for throttled in refused:
        pacer.sent(now)
        pacer.on_answer(now + 0.01, throttled=throttled, sent_at=now)
        now += 1.0 / rate
    return now


@pytest.mark.parametrize(
    ("after", "walls", "wall"),
    [(1, 0, False), (0, 0, True), (1, 1, True)],
    ids=["chance-before-any-wall", "fell-to-none", "after-a-wall"],
)
def test_a_first_cut_is_confirmed_only_when_the_share_fell_beyond_chance(
    after: int, walls: int, wall: bool
) -> None:
    """3 of 16 refused at the ceiling, then 1 of 32 after the cut: an 8% background that
    clustered before the cut does that a quarter of the time, and confirmed as a wall it held
    the key at the cut rate for the rest of a short run (two keys, 8% at random: 1.26x the
    floor in simulation, now 1.02x). So before any wall it is background. None of 32 after
    the cut may be a background's lull too (after 2 of 16 at 8%, one time in fifteen; then
    confirmed, a key sat at half its pace for seconds): judged on 32 more, none of 64 is a wall.
    A key that has met a wall judges as before."""
    pacer = KeyPacer(200.0, rate=200.0, walls=walls)
    now = feed_pattern(pacer, 0.0, 200.0, [i in (3, 9, 14) for i in range(16)])
    assert pacer.checking is not None and pacer.rate < 200.0  # a cut: no doubling at the ceiling
    now = feed_pattern(pacer, now + 0.02, pacer.rate, [i < after for i in range(32)])
    if after == 0 and walls == 0:
        assert pacer.checking is not None  # a lull or a wall: 32 more answers tell
        feed_pattern(pacer, now, pacer.rate, [False] * 32)
    assert pacer.checking is None
    if wall:
        assert pacer.walls == walls + 1 and pacer.noise == 0.0 and pacer.rate < 200.0
    else:
        assert pacer.walls == 0 and pacer.noise > 0.0 and pacer.rate == 200.0


def test_a_lull_after_a_first_cut_is_not_taken_for_a_wall() -> None:
    """None of 32 refused after a first cut, then 3 of the next 32: the background's lull
    ended, and the cut is undone (judged on 32, it was confirmed as a wall)."""
    pacer = KeyPacer(200.0, rate=200.0)
    now = feed_pattern(pacer, 0.0, 200.0, [i in (3, 9, 14) for i in range(16)])
    now = feed_pattern(pacer, now + 0.02, pacer.rate, [False] * 32)
    feed_pattern(pacer, now, pacer.rate, [i in (5, 17, 29) for i in range(32)])
    assert pacer.checking is None
    assert pacer.walls == 0 and pacer.noise > 0.0 and pacer.rate == 200.0


def test_a_grant_made_before_a_cut_asks_again() -> None:
    pacer = KeyPacer(200.0, rate=200.0)
    grant = Grant(pacer, 0.0)
    assert not grant.stale
    feed(pacer, 0.001, 200.0, 8, 1.0)  # a wall: cut or park
    assert grant.stale


def test_a_keys_next_turn_waits_for_the_one_before_to_be_sent_and_is_spaced_from_it() -> None:
    """Turns granted while the one before waits for an in-flight slot pile up: slots freed
    together (answers that all took as long) then sent them together, a burst a small bucket
    refuses however low the key's rate. The next turn is granted once the one before is on
    the wire, ``1/rate`` after that send; a turn given back unsent frees the next at once."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        governor = RateGovernor(1000.0)
        pacer = governor.pacer(KEY)
        pacer.rate = 10.0  # a turn every 100 ms
        start = loop.time()
        first = governor.try_acquire_key(KEY)
        assert first is not None
        await asyncio.sleep(0.5)  # it waits for a slot, past the next turn's time
        assert governor.try_acquire_key(KEY) is None
        waiting = loop.create_task(governor.acquire_key(KEY))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # held, however long, while the first is not sent
        governor.sent(first)  # at 0.8 s: the next turn is 100 ms after this send
        second = await asyncio.wait_for(waiting, 1.0)
        assert second is not None
        assert loop.time() - start == pytest.approx(0.9)
        third = loop.create_task(governor.acquire_key(KEY))
        await asyncio.sleep(0.5)
        assert not third.done()
        governor.release(second)  # given back unsent: its turn's time stands, and is past
        assert await asyncio.wait_for(third, 1.0) is not None
        assert loop.time() - start == pytest.approx(1.4)

    run_simulation(main)


def test_absorbed_pacer_hands_over_history_limit_and_waiters() -> None:
    project, region = KeyPacer(200.0), KeyPacer(200.0, rate=30.0)
    region.limit = 40.0
    for i in range(10):
        region.sent(0.1 * i)
        region.on_answer(0.1 * i + 0.02, throttled=False, sent_at=0.1 * i)
    project.absorb(region, 1.0, first=True)
    assert region.merged_into is project and region.current() is project
    assert project.rate == pytest.approx(30.0)
    assert project.limit == 40.0
    assert len(project.accepts) >= 9
    assert Grant(region, 0.5).stale  # waiting grants of the old pacer queue again


def test_a_merged_pacers_estimate_is_the_sum_of_what_its_keys_measured() -> None:
    """Three regions on one quota of 29.5/s, bare 429s: the first key absorbed had its walls
    undone (judged background), its estimate unknown; the sum of the others' stayed unknown
    with it, and the merged pacer, walled but knowing no quota, probed straight to the ceiling
    (15% of requests refused where its keys had measured about 20/s between them)."""
    project = KeyPacer(200.0)
    undone = KeyPacer(200.0, rate=34.0)  # walls undone: nothing measured
    east = KeyPacer(200.0, rate=10.0, walls=2, estimate=10.8)
    west = KeyPacer(200.0, rate=9.0, walls=1, estimate=9.5)
    project.absorb(undone, 9.0, first=True)
    assert project.estimate == math.inf
    project.absorb(east, 9.0, first=False)
    assert project.estimate == pytest.approx(10.8)
    project.absorb(west, 9.0, first=False)
    assert project.estimate == pytest.approx(20.3)
    assert project.walls == 2


def test_a_merged_pacers_estimate_is_never_above_what_its_keys_accepted_together() -> None:
    """Two regions on one quota of 50/s, bare 429s, never merged until their walls coincided
    twice: each key's estimate was its share of the quota when it met its own last wall, one
    while the other was starved (50/s), one while both sent (21/s). Summed, 71/s: the merged
    pacer went back to 95% of that at once, 1.36x the quota, learned the refusals as background,
    and drew 16% of 429s. What the keys were let through together over the last second is the
    shared quota's own measure, and caps the sum."""
    project = KeyPacer(200.0)
    east = KeyPacer(200.0, rate=20.0, walls=2, estimate=21.4)
    west = KeyPacer(200.0, rate=47.5, walls=1, estimate=50.0)
    feed(east, 9.0, 20.0, 20, 0.0)  # the second before the merge: 20/s and 30/s accepted
    feed(west, 9.0, 30.0, 30, 0.0)
    project.absorb(east, 10.0, first=True)
    assert project.estimate == pytest.approx(21.4)  # one key's: nothing to compare yet
    project.absorb(west, 10.0, first=False)
    assert project.estimate == pytest.approx(50.0, rel=0.05)  # not 71.4


def test_keys_idle_before_a_merge_keep_the_sum_of_their_estimates() -> None:
    """The cap is what the keys were let through together lately; keys that sent little in
    the last second (too few accepts to measure) keep the sum of what they measured."""
    project = KeyPacer(200.0)
    east = KeyPacer(200.0, rate=10.0, walls=1, estimate=10.8)
    west = KeyPacer(200.0, rate=9.0, walls=1, estimate=9.5)
    feed(east, 9.0, 5.0, 5, 0.0)
    feed(west, 9.0, 5.0, 5, 0.0)
    project.absorb(east, 10.0, first=True)
    project.absorb(west, 10.0, first=False)
    assert project.estimate == pytest.approx(20.3)


def test_what_a_key_was_let_through_apart_leaves_out_its_start_up_burst() -> None:
    """A merge on trial is undone when the merged keys accept under 70% of what they were let
    through apart. Counted from each key's first send, that held the burst a minute's bucket
    saves before the first wall: two regions on one bucket of 15/s with 2 s of burst read
    23/s apart four seconds in, the merged pacer's honest 15/s looked like separate quotas held
    back, and the split keys drew 27.5% of 429s (18.3% kept merged). Since the first wall, a
    key's rate is what it was let through from then on."""
    pacer = KeyPacer(200.0, rate=100.0)
    now = feed(pacer, 0.0, 100.0, 30, 0.0)  # the burst: 30 accepted in 0.3 s
    assert pacer.first_wall is None
    assert pacer.sustained_rate(now) == pytest.approx(100.0, rel=0.05)  # (under a second)
    now = feed(pacer, now, 100.0, 16, 0.75, seed=2)  # the wall: most refused
    assert pacer.walled and pacer.first_wall is not None
    walled_at = pacer.first_wall[0]
    now = feed(pacer, now, 10.0, 30, 0.0)  # then 10/s, every one accepted, for 3 s
    assert now - walled_at >= 1.0
    assert pacer.sustained_rate(now) == pytest.approx(10.0, rel=0.15)
    assert pacer.accepted_total / (now - 0.0) > 15.0  # what counting from the start reads


def test_answers_sent_before_a_merge_do_not_cut_the_shared_pacer() -> None:
    """Seen against a fake with one 100/s quota for two regions, stated in ErrorInfo: both
    keys sent at 100/s in slow start; the first 429s merged them, and answers to one key's
    requests granted before the merge (most refused: the two keys sent 200/s together) read as
    the quota's acceptance: a cut to 30/s, then four seconds growing back (a 300-per-region run
    took 2x its floor)."""
    quota = QuotaInfo(limit="ApiRequestsPerMinutePerProject", limit_value=6000.0)
    project, east, central = KeyPacer(200.0), KeyPacer(200.0), KeyPacer(200.0)
    sent = [0.01 * i for i in range(10)]
    for at in sent:
        east.sent(at)
        central.sent(at)
    project.absorb(east, 0.1, first=True)
    project.absorb(central, 0.1, first=False)
    for at in sent:  # east's answers arrive after the merge, 70% refused
        project.on_answer(0.11 + at, throttled=at >= 0.03, sent_at=at, quota=quota)
    assert project.limit == pytest.approx(100.0)
    assert project.rate == pytest.approx(98.0)  # the stated limit, not a third of it
    assert project.cut_at == -math.inf


def test_keys_whose_walls_coincide_share_one_pacer_and_separate_ones_split() -> None:
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    a, b = "projects/p/locations/a", "projects/p/locations/b"
    # Walls that coincide, unprovoked (each key cut, then refused again without growing).
    _merge_on_coinciding_walls(governor, clock, a, b)
    _split_on_trial(governor, clock, a, b)


def _answers(
    governor: RateGovernor, clock: list[float], key: str, count: int, share: float
) -> None:
    """``count`` answers of ``key``, 5 ms apart, ``share`` of them refused, evenly."""
    for i in range(count):
        grant = Grant(governor.pacer(key), clock[0])  # granted: pacing is not tested
        governor.sent(grant)
        clock[0] += 0.005
        governor.report(grant, throttled=(i * share) % 1 + share >= 1, key=key)


def _merge_on_coinciding_walls(governor: RateGovernor, clock: list[float], a: str, b: str) -> None:
    for _ in range(3):  # the first walls end slow start: they never count
        clock[0] += 1.5  # separate events (walls within a second are one)
        for key in (a, b):
            _answers(governor, clock, key, 16, 0.7)
    assert governor.pacer(a) is governor.pacer(b) is governor.pacer("projects/p")


def _split_on_trial(governor: RateGovernor, clock: list[float], a: str, b: str) -> None:
    """On trial, ``a`` refused every time, ``b`` never: separate quotas after all (judged on
    32 answers each)."""
    for _ in range(40):
        if governor.pacer(a) is not governor.pacer(b):
            break
        _answers(governor, clock, a, 1, 1.0)
        _answers(governor, clock, b, 1, 0.0)
    assert governor.pacer(a) is not governor.pacer(b)


@pytest.mark.parametrize(
    ("fast", "noise", "merged"), [(10.0, 0.0, True), (2.0, 0.0, False), (10.0, 0.1, False)]
)
def test_a_key_starved_beside_a_far_faster_one_of_its_project_is_merged_with_it_on_trial(
    fast: float, noise: float, merged: bool
) -> None:
    """Two regions on one bucket of one token: their requests collide, and one key is refused
    at any rate while the other sends at 5-9/s; its decisions take seconds, and the walls of
    the two never coincided twice. Refused on 40% or more of its fresh answers, at a quarter
    of the other key's rate or less, for a second, it is merged with it on trial. Not beside a
    key only twice as fast (its own quota, lower), nor with a background known (refused by
    chance)."""
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    a, b = "projects/p/locations/a", "projects/p/locations/b"
    for key in (a, b):
        _answers(governor, clock, key, 16, 0.7)  # the walls that end slow start
    for key, rate in ((a, 1.0), (b, fast)):  # past them: a at 1/s, b at ``fast``
        pacer = governor.pacer(key)
        pacer.checking, pacer.walls, pacer.estimate, pacer.rate = None, 1, rate, rate
        pacer.noise = noise
        pacer._new_epoch(clock[0])
    together = []
    for i in range(14):  # a answered every half second, every other answer refused
        clock[0] += 0.25
        if i % 2:
            _answers(governor, clock, a, 1, 1.0 if i % 4 == 1 else 0.0)
        _answers(governor, clock, b, 1, 0.0)
        together.append(governor.pacer(a) is governor.pacer(b))
    # Starved from the fifth answer on (3 of 5 refused, 2.7 s in), seen again a second later.
    assert together[-1] is merged
    assert not any(together[:-1])
    if merged:
        assert governor.pacer(a) is governor.pacer("projects/p")
        assert a in governor.sharing._trial["projects/p"]


@pytest.mark.parametrize(
    ("accepted", "noise", "merged"), [(True, 0.0, True), (False, 0.0, False), (True, 0.1, False)]
)
def test_a_key_parked_beside_a_key_its_project_keeps_accepting_is_merged_with_it_on_trial(
    accepted: bool, noise: float, merged: bool
) -> None:
    """Two regions on one bucket of one token: one key parked at its first wall, and each of
    its probes collided with the other key's requests for seconds. A bucket of its own would
    have given an idle key its token back within a second. Parked a second, a probe refused
    again while the other key is accepted at a request a second or more: merged on trial.
    Not while the other key is refused too (a spent window), nor with a background known (a
    refused probe may be chance)."""
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    a, b = "projects/p/locations/a", "projects/p/locations/b"
    _answers(governor, clock, a, 16, 0.7)  # the wall that ends a's slow start
    clock[0] += 1.5  # (b's walls a second and more later: no wall coincides)
    parked = governor.pacer(b)
    parked.noise = noise
    for _ in range(40):  # refused until it parks
        if parked.state is PacerState.PARKED:
            break
        _answers(governor, clock, b, 1, 1.0)
    assert parked.state is PacerState.PARKED
    since = clock[0]
    together = []
    for i in range(30):  # a answered every 0.1 s; a probe of b every half second, refused
        clock[0] += 0.1
        _answers(governor, clock, a, 1, 0.0 if accepted else 1.0)
        if i % 5 == 4:
            probe = Grant(parked, clock[0], probe=True)
            governor.report(probe, throttled=True, key=b)
            together.append((clock[0] - since, governor.pacer(a) is governor.pacer(b)))
    joined = [at for at, one in together if one]
    if merged:
        assert 1.0 <= joined[0] < 1.5  # at the first probe refused a second parked or more
        assert governor.pacer(b) is governor.pacer("projects/p")
        assert b in governor.sharing._trial["projects/p"]
    else:
        assert not joined


def test_a_trial_splits_two_clearly_different_keys_without_waiting_for_a_slow_third() -> None:
    """Six regions with windows of their own turning together (fixed 3 s windows of 105/s,
    bare 429s) were merged; the merged pacer, refused by the spent regions whatever its rate,
    cut to 3.7/s, and the trial waited for 32 answers from every key: 26 s at 4/s (4.07x the
    floor). Two keys with 16 answers each, one refused every time and one never, are enough;
    a key that has sent nothing since the merge is not waited for."""
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    a, b, c = (f"projects/p/locations/{x}" for x in "abc")
    for _ in range(3):
        clock[0] += 1.5
        for key in (a, b, c):
            _answers(governor, clock, key, 16, 0.7)
    assert governor.pacer(c) is governor.pacer("projects/p")
    for _ in range(15):
        _answers(governor, clock, a, 1, 1.0)
        _answers(governor, clock, b, 1, 0.0)
    assert governor.pacer(a) is governor.pacer(b)  # (15 each: not yet)
    _answers(governor, clock, a, 1, 1.0)
    _answers(governor, clock, b, 1, 0.0)
    assert governor.pacer(a) is not governor.pacer(b) is not governor.pacer(c)


def test_a_trial_waits_for_more_answers_where_the_keys_differ_as_one_quota_may_by_timing() -> None:
    """Two regions on one quota (a minute's bucket, bare 429s) merged, then 9 of one key's 17
    answers refused and 1 of the other's 16, from timing alone: judged on that, the merge was
    undone (1.05x -> 1.01x, but 17.7% -> 20.0% of 429s). Early, the keys must differ by 3.5
    standard errors; at 32 answers each, 2.5, as before. (5 of b's first 8 answers since the
    merge were refused while it was being merged.)"""
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    a, b = "projects/p/locations/a", "projects/p/locations/b"
    _merge_on_coinciding_walls(governor, clock, a, b)
    for i in range(16):
        _answers(governor, clock, a, 1, 1.0 if i == 0 else 0.0)
    for i in range(9):
        _answers(governor, clock, b, 1, 1.0 if i % 2 == 0 else 0.0)
    assert governor.sharing._trial["projects/p"] == {a: [16, 1], b: [17, 10]}
    assert governor.pacer(a) is governor.pacer(b)


@pytest.mark.parametrize(("other", "split"), [(0.0, True), (0.125, False)])
def test_a_trial_splits_a_key_refused_steadily_beside_one_hardly_refused(
    other: float, split: bool
) -> None:
    """Two regions with quotas of their own, 61/s and 31/s (small buckets, bare 429s), had
    walls in step and were merged; the merged pacer sent each about 57/s, so one key was
    refused a quarter of the time and the other never (34 of 126 and 0 of 124), and the trial
    confirmed the merge at 128 answers each, waiting for a share of 40%: 19% of 429s. A share
    three times the other's or more, 3.5 standard errors apart, on 32 answers each or more,
    splits it. A key refused half as often as the other is no such sign (one quota's timing
    refuses keys unevenly): that merge is confirmed at 128 answers each, as before. (5 of b's
    first 16 answers since the merge were refused while it was being merged.)"""
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    a, b = "projects/p/locations/a", "projects/p/locations/b"
    _merge_on_coinciding_walls(governor, clock, a, b)
    together = 0
    for i in range(128):
        if governor.pacer(a) is not governor.pacer(b):
            break
        together += 1
        _answers(governor, clock, a, 1, float(i % 4 == 3))  # a refused once in four
        _answers(governor, clock, b, 1, float(other > 0 and i % 8 == 7))
    if split:
        assert 32 <= together < 128  # 25% of a's answers against 5 of b's 100 or so
        assert "projects/p" in governor.sharing._separate
    else:
        assert governor.pacer(a) is governor.pacer(b)
        assert "projects/p" not in governor.sharing._trial  # confirmed: one quota


@pytest.mark.parametrize("waiting", [False, True], ids=["done", "still-waiting"])
def test_a_trial_whose_other_key_is_done_ends_with_the_key_left(waiting: bool) -> None:
    """Keys merged on trial, and one's work done a moment later: the trial waited for its
    answers for ever, and the project's pacer went on at the rate it measured beside it. A
    key on trial that has sent nothing for a second, none of its requests waiting, while the
    other was answered eight times since, is done: the trial ends and the project's pacer,
    the key left's alone now, goes back to slow start as any key whose peer finished does
    (undoing the merge instead gave the key left a fresh pacer at its share from before the
    merge: a key starved at 4/s beside another on one quota of 115/s took 6 s to climb back,
    1.00x -> 1.40x the floor). A key with a request waiting for its turn is not done,
    however long it has been quiet."""
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    a, b = "projects/p/locations/a", "projects/p/locations/b"
    _merge_on_coinciding_walls(governor, clock, a, b)
    if waiting:
        governor._queued[a] = 1  # (as acquire_key counts a request waiting for its turn)
    clock[0] += 1.0  # a sends nothing more
    _answers(governor, clock, b, 8, 0.0)
    assert governor.pacer(a) is governor.pacer(b)
    if waiting:
        assert "projects/p" in governor.sharing._trial
        return
    assert "projects/p" not in governor.sharing._trial
    assert "projects/p" not in governor.sharing._separate
    shared = governor.pacer(b)
    assert shared.peer_gone or (shared.walls == 0 and shared.estimate == math.inf)


def test_a_request_waiting_for_its_turn_is_counted_until_it_has_it() -> None:
    async def main() -> None:
        clock = [0.0]
        governor = RateGovernor(200.0, clock=lambda: clock[0])
        pacer = governor.pacer(KEY)
        pacer.next_free = 5.0
        waiter = asyncio.ensure_future(governor.acquire_key(KEY))
        await asyncio.sleep(0)
        assert governor._queued[KEY] == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert governor._queued[KEY] == 0

    run_simulation(main)


def test_keys_split_after_a_trial_stay_apart_at_their_next_walls() -> None:
    """A split is for good: each key's next walls are its own. Before, a split key rejoined
    its project's pacer at its next wall, without a trial, and stayed there (three regions
    with buckets of one token at 37/s each, bare 429s, walls in step: merged, split, then all
    three rejoined and held to about one region's quota, 1.76x the floor)."""
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    a, b = "projects/p/locations/a", "projects/p/locations/b"
    _merge_on_coinciding_walls(governor, clock, a, b)
    _split_on_trial(governor, clock, a, b)
    own = {key: governor.pacer(key) for key in (a, b)}
    for _ in range(3):  # walls in step again: each key cut by its own pacer
        clock[0] += 1.5
        for key in (a, b):
            _answers(governor, clock, key, 16, 0.7)
    assert governor.pacer(a) is own[a] and governor.pacer(b) is own[b]
    assert governor.pacer(a).walled and governor.pacer(b).walled


def test_a_request_waiting_at_the_merged_pacer_moves_to_its_keys_own_at_a_split() -> None:
    """A request queued for the project's pacer when the merge is undone asks its key's own
    pacer at once. Before, it waited for the project's turn, however far off: a pacer that no
    longer spoke for the keys, cut or parked at the split, still paced their requests."""

    async def main() -> None:
        clock = [0.0]
        loop = asyncio.get_running_loop()
        governor = RateGovernor(200.0, clock=lambda: clock[0])
        a, b = "projects/p/locations/a", "projects/p/locations/b"
        _merge_on_coinciding_walls(governor, clock, a, b)
        governor.pacer(a).next_free = clock[0] + 30.0  # the project's next turn: 30 s away
        waiting = loop.create_task(governor.acquire_key(a))
        await asyncio.sleep(0)  # (it asks, and naps until that turn)
        _split_on_trial(governor, clock, a, b)
        grant = await asyncio.wait_for(waiting, 1.0)  # (virtual seconds: not the project's 30)
        assert grant is not None and grant.pacer is governor.pacer(a)

    run_simulation(main)


@pytest.mark.parametrize(
    ("peer_rate", "not_yet", "by"),
    [(45.0, 0.2, 0.6), (2.0, 0.9, 1.4)],  # (four of its turns, a quarter of a second at least)
)
def test_a_key_whose_work_is_done_frees_its_project_peers_from_what_they_measured(
    peer_rate: float, not_yet: float, by: float
) -> None:
    """Two regions of one project on one quota without ErrorInfo, never merged: each pacer
    measured its share of it. When one region's work is done (nothing sent for four of its
    turns, a quarter of a second at least and a second at most, nobody waiting), the other
    goes back to slow start from its rate, once, rather than creeping up from its share by 5%
    steps (real runs: seconds at 40/s of a 100/s quota). A second of silence was the rule
    until session 33: three regions on one quota of 40/s, the first done at 1.25 s, left a
    fifth of the quota unused for two seconds; the sweeps, 225 -> 217 draws over 1.2x."""

    async def main() -> None:
        clock = [0.0]
        governor = RateGovernor(200.0, clock=lambda: clock[0])
        a, b = "projects/p/locations/a", "projects/p/locations/b"

        def answer(key: str) -> None:  # an accepted request, 10 ms later
            grant = Grant(governor.pacer(key), clock[0])
            governor.sent(grant)
            clock[0] += 0.01
            governor.report(grant, throttled=False, key=key)

        for key in (a, b):
            governor.pacer(key).walls, governor.pacer(key).estimate = 1, 50.0
            governor.pacer(key).rate = 45.0
        governor.pacer(b).rate = peer_rate
        answer(b)  # b's last request
        while clock[0] < not_yet:  # a's answers: b is not idle yet
            answer(a)
        assert governor.pacer(a).walls == 1 and governor.pacer(a).estimate == 50.0
        while governor.pacer(a).walls == 1 and clock[0] < by:
            answer(a)
        freed = governor.pacer(a)
        assert freed.walls == 0 and freed.estimate == math.inf  # slow start: it doubles
        assert freed.rate < 60.0  # from about where it was (it grows from there)
        freed.walls, freed.estimate = 1, 90.0  # a wall met again, at the whole quota
        for _ in range(150):
            answer(a)
        assert freed.walls == 1  # once per finished key

    asyncio.run(main())


def test_a_peer_that_finishes_while_a_cut_is_judged_frees_the_key_after_the_judgement() -> None:
    """The governor tells a key once per finished peer; a key judging a cut then (or parked)
    owes its return to slow start until that is over. Dropped, it left a key of two regions
    with 8% of 429s each, cut on a chance cluster and confirmed, creeping up by 5% steps from
    a third of its pace for seconds after the other region was done (1.83x the floor)."""
    pacer = KeyPacer(200.0, rate=100.0, walls=1, estimate=120.0)
    now = feed_pattern(pacer, 0.0, 100.0, [i % 3 == 0 for i in range(16)])  # 6 of 16: a cut
    assert pacer.checking is not None
    pacer.peer_left(now)
    assert pacer.walls == 1 and pacer.peer_gone  # owed
    feed_pattern(pacer, now + 0.01, pacer.rate, [False] * 32)  # the cut is judged: a wall
    assert pacer.checking is None and not pacer.peer_gone
    assert pacer.walls == 0 and pacer.estimate == math.inf  # then paid: slow start


def test_a_wall_of_a_few_answers_is_cut_to_what_the_last_second_accepted() -> None:
    """7 of 8 refused, one accept among them: a wall far over the quota, or a window spent
    and turning. One accept in 8 says the server takes 12% of the rate, +- 12%; the second
    before says more. Cut on the 8 alone, a key of three regions with 6 s windows fell from
    145/s to 17/s and took 32 answers to have that judged (1.51x the floor; now 1.15x).
    (Five refused in a row from the first would park it: see the next tests.)"""
    for accepted, most in [(150, 80.0), (30, 0.0)]:  # 1.5 s of accepts; a pacer 0.3 s old
        pacer = KeyPacer(100.0, rate=100.0, walls=1, estimate=105.0)  # held at the ceiling
        now = feed_pattern(pacer, 0.0, 100.0, [False] * accepted)
        while pacer.fresh:  # to the end of a decision: the wall is all the next one sees
            now = feed_pattern(pacer, now, 100.0, [False])
        feed_pattern(pacer, now, 100.0, [True] * 4 + [False] + [True] * 3)
        assert pacer.checking is not None  # cut, not parked (7 of 8 is under the park share)
        if most:
            assert pacer.rate >= most, pacer.rate
        else:  # a young pacer's last "second" is its start-up: the 8 answers say it
            assert pacer.rate <= 15.0, pacer.rate


def test_a_burst_spent_as_a_decision_begins_parks_on_its_fifth_refusal() -> None:
    """A window spent after a second of accepts: every answer from the first refusal on was
    refused, five of them. The key parks then, however few answers its decision has; waiting
    for 8 when the decision had just begun cost a spent window three refusals more. Not with
    a background known: there a chance run of five in a decision's first seven answers (at
    15%) parked a key that met no wall; it takes 8 answers, as before."""
    for noise, parked in [(0.0, True), (0.1, False)]:
        pacer = KeyPacer(100.0, rate=100.0, walls=1, estimate=105.0, noise=noise)
        every = round(1 / noise) if noise else 151  # (a background refused among them)
        now = feed_pattern(pacer, 0.0, 100.0, [i % every == 1 for i in range(150)])
        assert (pacer.noise > 0) is (noise > 0)
        while pacer.fresh > 0:  # to the end of a decision
            now = feed_pattern(pacer, now, 100.0, [False])
        now = feed_pattern(pacer, now, 100.0, [False] * 2 + [True] * 4)
        assert pacer.state is PacerState.ACTIVE and pacer.fresh == 6  # four in a row: not yet
        now = feed_pattern(pacer, now, 100.0, [True])
        assert (pacer.state.value == "parked") is parked
        feed_pattern(pacer, now, 100.0, [True])  # the eighth answer
        assert pacer.state.value == "parked"


def test_a_burst_spent_at_a_decision_s_end_waits_for_its_fifth_refusal_and_parks() -> None:
    """A minute's bucket spent at slow start's pace: 13 of a decision's 16 answers accepted,
    then three refused. Cut on the 16, the key went from 50/s to 38/s (what the whole decision
    accepted), and nine more were refused before it parked (a bucket of 5/s in 3 s windows,
    told 50/s, 50 names: 29% of the run's requests refused). A lead of 8 accepts or more
    before a wall within the decision is a burst spent: the key waits for five refused in a
    row and parks then, however small the decision's share. An accept before the fifth ends
    the wait: the decision is made as any other. Not on a pacer that took over two keys or
    more (one key's lull among the others' accepts reads so: a merged pacer of eight regions'
    buckets parked every half second): it decides on the 16 as before."""
    merged = KeyPacer(50.0, rate=25.0)
    merged.absorbed = 2
    now = feed_pattern(merged, 0.0, 25.0, [False] * 4)
    feed_pattern(merged, now, 50.0, [False] * 13 + [True] * 3)
    assert merged.rate < 50.0 and merged.checking is not None  # cut on the 16
    for tail, expect in [([True] * 2, PacerState.PARKED), ([False], PacerState.ACTIVE)]:
        pacer = KeyPacer(50.0, rate=25.0)
        now = feed_pattern(pacer, 0.0, 25.0, [False] * 4)  # slow start doubles: 50/s
        assert pacer.rate == 50.0
        now = feed_pattern(pacer, now, 50.0, [False] * 13 + [True] * 3)
        assert pacer.rate == 50.0 and pacer.fresh == 16  # three in a row: not yet
        feed_pattern(pacer, now, 50.0, tail)
        assert pacer.state is expect
        if expect is PacerState.ACTIVE:  # the accept ended the wait: a cut
            assert pacer.checking is not None and pacer.rate < 50.0


def test_a_resume_that_finds_no_budget_is_cut_on_its_third_refusal() -> None:
    """A minute's bucket spent and parked on: its probe is let through (a token saved), and
    the key resumes at the burst's pace. Three of its first four answers refused say no budget
    came back (a window that turned gives a budget's worth of accepts): the key is cut to what
    came back since the park began, not after eight answers (a minute's bucket of 5/s told
    50/s, 50 names: 24% -> 18% of the run's requests refused). Not on a pacer that took over
    two keys or more (three regions' sliding windows, separate but in step, merged: cut so to a
    fifth of what they allowed together, the merged pacer held there for 32 answers, 12 s)."""
    for merged in (False, True):
        pacer = KeyPacer(50.0, rate=25.0)
        now = feed_pattern(pacer, 0.0, 25.0, [False] * 4)
        now = feed_pattern(pacer, now, 50.0, [False] * 13 + [True] * 5)
        assert pacer.state is PacerState.PARKED
        now = probe(pacer, now, accepted=True, quota=None)
        assert pacer.state.value == "active" and pacer.rate > 25.0
        pacer.absorbed = 3 if merged else 0
        now = feed_pattern(pacer, now, pacer.rate, [True, False, True])
        assert pacer.checking is None  # two refused: not yet
        feed_pattern(pacer, now, pacer.rate, [True])
        if merged:
            assert pacer.checking is None and pacer.rate > 25.0  # the eighth answer decides
        else:
            assert pacer.checking is not None and pacer.rate < 10.0


def spend_windows(pacer: KeyPacer, window: list[bool]) -> list[int]:
    """Three windows, each ``window`` sent at 100/s (True: refused) and then refused until the
    key parks (20 at most), the key resumed by its first probe (:func:`probe`): how many were
    refused in each window before the park."""
    now, runs = 0.0, []
    for _ in range(3):
        now = feed_pattern(pacer, now, 100.0, window)
        run = 0
        while pacer.state is PacerState.ACTIVE and run < 20:
            now = feed_pattern(pacer, now, 100.0, [True])
            run += 1
        runs.append(run)
        assert pacer.state is PacerState.PARKED
        now = probe(pacer, now, accepted=True)
    return runs


def test_a_window_spent_again_parks_on_two_refusals() -> None:
    """Once a window's budget is known (what the key was let through from its start or a
    resume to the park after it), the next window is spent when three quarters of that came
    through again and the last two answers are refused (three with a background known): the
    key parks then, not after five. Windows of 1-3 s spent at 4-10x their pace cost ten
    refusals each or more, 15-25% of all requests."""
    pacer = KeyPacer(100.0, rate=100.0, walls=1, estimate=105.0)
    runs = spend_windows(pacer, [False] * 120)
    assert runs[0] >= 5  # the first window: five in a row at least (40% of the decision)
    assert runs[1:] == [2, 2]  # then two
    assert pacer.window_budget == 120
    # A background of 5% (one in 20 refused, within the decisions too): three.
    noisy = KeyPacer(100.0, rate=100.0, walls=1, estimate=105.0, noise=0.05)
    assert spend_windows(noisy, ([True] + [False] * 19) * 6)[1:] == [3, 3]
    assert noisy.noise > 0
    # Two refusals in a row with half the budget through are no spent window.
    now = feed_pattern(pacer, 100.0, 100.0, [False] * 60 + [True] * 2)
    assert pacer.state is PacerState.ACTIVE
    feed_pattern(pacer, now, 100.0, [False] * 40 + [True] * 2)  # 100 of 120: spent
    assert pacer.state.value == "parked"


def spend_a_window_of_16(pacer: KeyPacer) -> float:
    """From 0 s, 0.07 s apart: a window's budget of 16 accepted, then refusals (bare) until
    the key parks; returns when the next request would go."""
    now = 0.0
    for i in range(40):
        pacer.sent(now)
        pacer.on_answer(now + 0.01, throttled=i >= 16, sent_at=now)
        now += 0.07
        if pacer.state is PacerState.PARKED:
            break
    return now


def test_a_window_budget_sent_again_parks_before_the_wall() -> None:
    """A fixed window with bare 429s, its period not learned (probes a second apart found its
    turns too roughly): each window's budget was spent into the wall, and behind 0.15 s answers
    every request in flight then was refused (3 s windows of 30/s told 300/s: 32-38% of 429s).
    Once a resumed key has sent the budget its last window let through, it parks before its
    next request, and probes a quarter second apart (not doubling: the turn is near, and a
    probe a second late cost a fifth of a 2 s window): 20-22%."""
    pacer = KeyPacer(100.0, rate=50.0)

    def state(pacer: KeyPacer) -> PacerState:  # (read afresh: each call may change it)
        return pacer.state

    now = spend_a_window_of_16(pacer)
    assert state(pacer) is PacerState.PARKED and pacer.window_budget == 16
    wait, probe = pacer.reserve(now)
    now += wait
    assert pacer.reserve(now) == (0.0, True)
    pacer.sent(now)
    pacer.on_answer(now + 0.01, throttled=False, sent_at=now)  # the window turned
    assert state(pacer) is PacerState.ACTIVE
    now += 0.01
    for _ in range(16):  # the budget again, none refused (answers still in flight)
        now = take_turn(pacer, now)
    assert state(pacer) is PacerState.ACTIVE
    wait, probe = pacer.reserve(now + 1.0)
    assert state(pacer) is PacerState.PARKED and not probe
    parked = now + 1.0
    assert wait == pytest.approx(0.25)
    assert pacer.reserve(parked + 0.25) == (0.0, True)
    pacer.sent(parked + 0.25)
    pacer.on_answer(parked + 0.26, throttled=True, sent_at=parked + 0.25, probe=True)
    wait, _ = pacer.reserve(parked + 0.26)
    assert wait == pytest.approx(0.25)  # (a refused probe does not double the next one's gap)


def test_a_park_on_a_budget_sent_waits_half_the_last_park_before_probing() -> None:
    """Google's windows are a minute long: a key parked on its budget sent, probing a quarter
    second apart, drew some 200 refusals a window waiting for the turn (10/s in 60 s windows,
    bare 429s: 12.9% of a four-minute run's requests). The park before it says how far off the
    turn is: the first probe goes after half of it (8.6%), the drain the same."""
    pacer = KeyPacer(100.0, rate=50.0)
    now = spend_a_window_of_16(pacer)
    parked = pacer.parked_at
    while pacer.state is PacerState.PARKED:  # probes refused until the turn, 4 s on
        now = max(now, pacer.probe_at)
        turned = now >= parked + 4.0
        pacer.sent(now)
        pacer.on_answer(now + 0.01, throttled=not turned, sent_at=now, probe=True)
        now += 0.01
    assert pacer.parked_for == pytest.approx(4.0, abs=1.1)  # (probes a second apart by then)
    for _ in range(16):  # the budget again, none refused (answers still in flight)
        now = take_turn(pacer, now)
    wait, probe = pacer.reserve(now + 0.1)
    assert pacer.state.value == "parked" and not probe  # (read afresh)
    assert wait == pytest.approx(pacer.parked_for / 2)  # not a quarter second


def test_a_small_windows_budget_spent_again_parks_on_two_refusals() -> None:
    """Windows of 20-30 requests (10/s in windows of 2-3 s) were left to the five-refusal
    rule: five refusals a window or more, then probes, 19-25% of a short run's requests. A
    budget of eight or more is a window's too."""
    pacer = KeyPacer(50.0, rate=50.0, walls=1, estimate=52.0)
    runs = spend_windows(pacer, [False] * 20)
    assert runs[1:] == [2, 2]
    assert pacer.window_budget == 20


def _after_two_clean_decisions(marks: list[bool], alone: bool = True) -> KeyPacer:
    """A key at its ceiling of 50/s past two clean decisions (4 answers, then 16), then one
    decision of ``marks`` (True: refused)."""
    pacer = KeyPacer(50.0, rate=50.0, alone=alone)
    now = feed_pattern(pacer, 0.0, 50.0, [False] * 20)
    assert pacer.fresh == 0
    feed_pattern(pacer, now, 50.0, marks)
    return pacer


def test_a_wall_met_within_the_decision_is_cut_on_what_followed_its_first_refusal() -> None:
    """A minute's bucket of 10/s, told 50/s: its burst spent within the decision, five of the
    sixteen answers accepted before the first refusal, two of the eleven after. Counted over the
    whole decision the server accepted 22/s: the key was cut to 21/s, and the next 32 answers
    were half refused (27% of a 100-name run's requests). From the first refusal on it
    accepted 9/s, the bucket's refill: the cut lands there."""
    burst_then_refill = [False] * 5 + [True, False] + [True] * 4 + [False] + [True] * 4
    pacer = _after_two_clean_decisions(burst_then_refill)
    assert pacer.checking is not None
    assert pacer.rate == pytest.approx(50.0 * 2 / 11 * 0.95, rel=0.02)
    # Beside another key of its project the accepts before the wall may be that key's lull on
    # a shared quota (a cut on the answers after it starved one of two keys sharing one).
    beside = _after_two_clean_decisions(burst_then_refill, alone=False)
    assert beside.rate == pytest.approx(50.0 * 7 / 16 * 0.95, rel=0.02)
    # Two accepts before the first refusal: what a background of 50% shows one time in four.
    early = _after_two_clean_decisions([False, False, True, True, False, True, True, False] * 2)
    assert early.checking is not None
    assert early.rate == pytest.approx(50.0 * 8 / 16 * 0.95, rel=0.02)


def test_the_first_sure_wall_at_a_stated_limit_parks_the_key() -> None:
    """At a stated per-minute limit nothing but a budget already spent refuses 40% or more: a
    start-up burst spent a 2 s window of 10/s before the limit was known, and the cut on the
    refusals after it, to 2.4/s, was confirmed as a wall (2.9x the floor). The first such wall
    parks the key, to resume at the limit; later ones are cut as any wall (a limit stated above
    what the server enforces must not park the key window after window)."""
    per_minute_10 = QuotaInfo(limit="ApiRequestsPerMinutePerProjectPerRegion", limit_value=600.0)
    pacer = KeyPacer(43.0, rate=43.0)
    now = feed_pattern(pacer, 0.0, 43.0, [False] * 8)  # a young key: no burst measured
    pacer.on_answer(now, throttled=True, sent_at=now - 0.01, quota=per_minute_10)
    assert pacer.rate == pytest.approx(10.0 * 0.98)
    for i in range(16):  # two of three refused, until the key parks or is cut
        now = feed_pattern(pacer, now, pacer.rate, [i % 3 != 0])
        if pacer.state is PacerState.PARKED or pacer.checking is not None:
            break
    assert pacer.state is PacerState.PARKED and pacer.checking is None  # parked, not cut
    now = probe(pacer, now, accepted=True)
    assert pacer.state.value == "active"
    assert pacer.rate == pytest.approx(10.0 * 0.98)  # resumed at the limit
    now = feed_pattern(pacer, now, pacer.rate, [False] * 64)
    for i in range(16):  # the same again
        now = feed_pattern(pacer, now, pacer.rate, [i % 3 != 0])
        if pacer.state is PacerState.PARKED or pacer.checking is not None:
            break
    assert pacer.state.value == "active" and pacer.checking is not None  # cut this time
    assert pacer.rate < 10.0 * 0.98


def test_a_stated_limit_over_the_rate_that_met_the_first_wall_is_no_budget_spent() -> None:
    """A server that states 160/s (9600 a minute) and refuses a key at 100/s, its first wall,
    enforces less than it says (another limit, a burst it refuses): no budget at the limit was
    spent. Parked to resume at the limit, the key went to 157/s, over the rate just refused,
    and the first second cost 30 refusals (12% of a 250-name run; 6% cut as any wall)."""
    per_minute_160 = QuotaInfo(limit="ApiRequestsPerMinutePerProjectPerRegion", limit_value=9600.0)
    pacer = KeyPacer(200.0, rate=100.0)
    now = feed_pattern(pacer, 0.0, 100.0, [False] * 4)
    pacer.on_answer(now, throttled=True, sent_at=now - 0.01, quota=per_minute_160)
    assert pacer.rate == 100.0  # a stated limit caps; it never raises the rate
    for i in range(16):  # two of three refused at 100/s, until the key is cut (or parks)
        now = feed_pattern(pacer, now, 100.0, [i % 3 != 0])
        if pacer.state is PacerState.PARKED or pacer.checking is not None:
            break
    assert pacer.state is PacerState.ACTIVE and pacer.checking is not None  # cut, not parked
    assert pacer.rate < 50.0  # to what was accepted, not resumed at 157/s


def test_a_slow_key_judging_a_cut_takes_a_finished_peers_quota_at_once() -> None:
    """Owed only while the judgement is a second away or less: a key cut to a few requests a
    second beside a peer that finished (two regions on one small quota, the other region
    done) waited 32 answers, half a minute, to have its cut judged before it grew again."""
    pacer = KeyPacer(200.0, rate=12.0, walls=1, estimate=15.0)
    now = feed_pattern(pacer, 0.0, 12.0, [i % 3 == 0 for i in range(16)])  # 6 of 16: a cut
    assert pacer.checking is not None and pacer.rate < 10.0
    pacer.peer_left(now)
    assert not pacer.peer_gone and pacer.checking is None  # paid now, the judgement dropped
    assert pacer.walls == 0 and pacer.estimate == math.inf  # slow start from here


def test_a_cut_judged_before_any_wall_is_dropped_when_a_peer_leaves() -> None:
    """A cut made in slow start, judged seconds later, is dropped too when a peer finishes:
    kept, it was confirmed after the peer had gone (the share fell: the quota was the peer's
    too), and the key crept up by 5% steps from the cut rate (a sweep draw, two regions on
    one minute's bucket of 57/s with 10% of 429s at random: 4/s for 45 s, 6.05x the floor)."""
    pacer = KeyPacer(200.0, rate=12.0)  # slow start, no wall met
    now = feed_pattern(pacer, 0.0, 12.0, [i % 2 == 0 for i in range(16)])  # half refused: a cut
    assert pacer.checking is not None and pacer.walls == 0 and pacer.rate < 6.0
    pacer.peer_left(now)
    assert not pacer.peer_gone and pacer.checking is None  # the judgement dropped
    feed_pattern(pacer, now, pacer.rate, [i % 16 == 0 for i in range(32)])  # 2 of 32 refused
    assert pacer.walls == 0 and pacer.estimate == math.inf  # never the cut's rate as a quota
    assert pacer.rate > 6.0  # slow start from there


def test_a_starved_key_takes_a_finished_peers_rate_at_once() -> None:
    """On one bucket of one token, one key of two took every token and the other had every
    answer refused at under a request a second, its cuts never judged (still in slow start).
    When the first finishes, the starved key takes its rate at once: slow start from 0.7/s
    waited four answers, seconds, per doubling (real, two regions on one 10/s bucket with bare
    429s: a median 1.94x the floor). A key refused no more than its own quota refuses is not
    starved: it goes back to slow start from half its share of the finished key's rate (a
    region at 5/s beside a free one, jumped to the free region's whole rate, paid a wall of
    429s)."""
    starved = KeyPacer(200.0, rate=0.74)
    now = feed_pattern(starved, 0.0, 0.74, [True] * 6)  # (under the 8 a park needs)
    assert starved.refused_lately >= 0.4
    starved.peer_left(now, freed=9.8)
    assert starved.rate == pytest.approx(9.8)
    assert starved.walls == 0 and starved.estimate == math.inf  # slow start from there

    own = KeyPacer(200.0, rate=5.0, walls=1, estimate=5.0)  # at its own quota
    now = feed_pattern(own, 0.0, 5.0, [False, False, True, False, False, False])
    own.peer_left(now, freed=45.0)
    assert own.rate == pytest.approx(22.5)  # slow start from half the share
    assert own.walls == 0 and own.estimate == math.inf

    fast = KeyPacer(200.0, rate=30.0, walls=1, estimate=30.0)
    now = feed_pattern(fast, 0.0, 30.0, [False] * 6)
    before = fast.rate
    fast.peer_left(now, freed=45.0)
    assert fast.rate == before > 22.5  # already faster than that: from its own rate


def test_a_key_cut_deep_beside_a_finished_peer_climbs_to_the_quota_within_a_second() -> None:
    """Two regions on one bucket of 50/s with bare 429s, real: at their first walls one key
    drew nearly every refusal (the other, alone over the quota, took each token as it came)
    and was cut to 2/s, where every answer was accepted; the other took the quota. When that
    one finished, the slow key went back to slow start from 2.2/s, doubling per four answers,
    never past twice what it sent in the last second: 3.6 s to reach 45/s here, 5 s in the
    real run (1.36x the floor, about one round in five). Half its share of the finished key's
    rate is where it starts now."""
    pacer = KeyPacer(200.0, rate=2.2, walls=1, estimate=2.1)
    now = feed_pattern(pacer, 0.0, 2.2, [False] * 8)  # every answer accepted at its cut rate
    pacer.peer_left(now, freed=51.7)
    assert pacer.rate == pytest.approx(51.7 / 2)
    start = now
    while pacer.rate < 45.0 and now - start < 10.0:  # the quota accepts it all now
        now = feed_pattern(pacer, now, pacer.rate, [False])
    assert now - start < 1.2


def test_a_late_waiter_at_the_ceiling_has_its_lateness_made_up_within_the_catch_up() -> None:
    pacer = KeyPacer(100.0, rate=100.0)  # at the ceiling, no quota known: 10 ms turns
    assert pacer.reserve(0.0) == (0.0, False)
    wait, _ = pacer.reserve(0.0)
    assert wait == pytest.approx(0.01)
    assert pacer.reserve(0.013, woken=True) == (0.0, False)  # woke 3 ms late
    assert pacer.next_free == pytest.approx(0.02)  # the schedule keeps its pace
    assert pacer.reserve(0.021, woken=True)[0] == 0.0
    assert pacer.next_free == pytest.approx(0.03)
    # lateness beyond the catch-up is lost, not banked
    assert pacer.reserve(0.5, woken=True)[0] == 0.0
    assert pacer.next_free == pytest.approx(0.5 - 0.02 + 0.01)


def test_late_waiters_off_the_unbounded_ceiling_make_up_a_quarter_turn() -> None:
    """Under the ceiling, or with a quota measured or stated, a waiter woken late has up to a
    quarter of a turn of its lateness made up: lost at every turn, it sent a stated 300/s limit at
    264/s. A burst-1 bucket's known spacing stays strict, and an idle key banks nothing."""
    idle = KeyPacer(100.0, rate=100.0)
    idle.reserve(0.0)
    assert idle.reserve(0.5)[0] == 0.0  # not a woken waiter: strict from now
    assert idle.next_free == pytest.approx(0.51)
    below = KeyPacer(100.0, rate=50.0)  # below the ceiling: 20 ms turns
    below.reserve(0.0)
    below.reserve(0.023, woken=True)  # 3 ms late: made up
    assert below.next_free == pytest.approx(0.04)
    below.reserve(0.05, woken=True)  # 10 ms late: a quarter turn (5 ms) made up
    assert below.next_free == pytest.approx(0.065)
    known = KeyPacer(100.0, rate=100.0)
    known.estimate = 100.0  # a wall was met at this rate: 10 ms turns, 2.5 ms made up
    known.reserve(0.0)
    known.reserve(0.013, woken=True)
    assert known.next_free == pytest.approx(0.0205)
    spaced = KeyPacer(100.0, rate=50.0)
    spaced.spacing = Spacing(50.0, 60.0, 50.0, 0)  # a burst-1 bucket: strict spacing
    spaced.reserve(0.0)
    spaced.reserve(0.023, woken=True)
    assert spaced.next_free == pytest.approx(0.043)


PER_MINUTE_50 = QuotaInfo(limit="ApiRequestsPerMinutePerProjectPerRegion", limit_value=3000.0)


def spend_a_window(
    pacer: KeyPacer,
    start: float,
    rate: float,
    count: int,
    *,
    quota: QuotaInfo | None = PER_MINUTE_50,
) -> float:
    """``count`` accepted at ``rate``, then refusals stating ``quota`` (a 50/s per-minute
    limit; None: bare 429s) until the key parks; returns the time of the last refusal."""
    now = feed(pacer, start, rate, count, 0.0)
    while pacer.state is PacerState.ACTIVE:
        pacer.sent(now)
        pacer.on_answer(now + 0.01, throttled=True, sent_at=now, quota=quota)
        now += 1.0 / pacer.rate
    return now


def probe(
    pacer: KeyPacer, now: float, *, accepted: bool, quota: QuotaInfo | None = PER_MINUTE_50
) -> float:
    """Wait for the parked key's next probe and answer it (a refusal states ``quota``);
    returns when it was answered."""
    wait, is_probe = pacer.reserve(now)
    if not is_probe:
        now += wait
        wait, is_probe = pacer.reserve(now)
    assert (wait, is_probe) == (0.0, True)
    pacer.sent(now)
    stated = None if accepted else quota
    pacer.on_answer(now + 0.01, throttled=not accepted, sent_at=now, probe=True, quota=stated)
    return now + 0.01


def test_a_window_that_turns_is_spent_at_the_pace_that_worked_not_at_the_stated_average() -> None:
    pacer = KeyPacer(200.0, rate=150.0)
    now = spend_a_window(pacer, 0.0, 150.0, 150)  # 150/s let through: far over 50/s
    assert pacer.state is PacerState.PARKED
    assert pacer.burst == pytest.approx(150.0, rel=0.05)  # measured before the limit's cut
    now = probe(pacer, now, accepted=False)
    probe(pacer, now, accepted=True)  # the window turned
    assert pacer.state.value == "active"
    assert pacer.rate == pytest.approx(150.0, rel=0.05)  # the window's budget, at that pace


def test_a_key_accepted_at_its_stated_rate_resumes_at_it() -> None:
    pacer = KeyPacer(200.0, rate=50.0)
    now = spend_a_window(pacer, 0.0, 50.0, 60)  # never let through more than the limit
    probe(pacer, now, accepted=True)
    assert pacer.rate == pytest.approx(50.0 * 0.98)


def test_a_burst_resume_that_finds_no_budget_is_not_tried_again() -> None:
    pacer = KeyPacer(200.0, rate=150.0)
    now = spend_a_window(pacer, 0.0, 150.0, 150)
    now = probe(pacer, now, accepted=True)
    assert pacer.rate > 100.0 and pacer.windowed
    # A bucket refilling at the stated rate, not a window: a few go through, then it refuses.
    now = spend_a_window(pacer, now, pacer.rate, 3)
    assert not pacer.windowed
    probe(pacer, now, accepted=True)
    assert pacer.rate == pytest.approx(50.0 * 0.98)


def test_a_wall_short_of_the_last_windows_budget_is_probed_at_once() -> None:
    """A key that knows its window's period parks on a wall and aims its probes at the next
    turn. A wall met before the last window's budget came through again may have spent no
    budget (a sliding window's sends of a window ago not yet aged out, a chance run of
    background 429s): one probe goes first, at the park's first gap, and only its refusal
    aims the rest at the turn. A sliding window of 10 s at 220/s, background 429s, parked
    at 93% of its budget, sat out the 7 s to the predicted turn (1.65x the floor; 1.03x)."""
    pacer = KeyPacer(200.0, rate=150.0)
    now = spend_a_window(pacer, 0.0, 150.0, 150)  # stated 50/s: far over it, a window
    now = probe(pacer, now, accepted=True)
    now = spend_a_window(pacer, now, pacer.rate, 150)  # the same budget again
    assert pacer.period == pytest.approx(3.0)  # 150 over the stated 50/s
    assert pacer.probe_at > now + 1.0  # spent whole: aimed at the next turn
    turn = pacer.aimed_at
    now = probe(pacer, now, accepted=True)  # (the turn)
    now = spend_a_window(pacer, now, pacer.rate, 100)  # a wall at two thirds of it
    assert pacer.state is PacerState.PARKED
    assert pacer.probe_at <= pacer.parked_at + 0.25  # probed at once
    now = probe(pacer, now, accepted=False)  # spent after all: back to the aim
    assert pacer.probe_at >= pacer.aimed_at - 0.02 * 3.0 > now + 1.0
    assert pacer.aimed_at == pytest.approx(turn + 3.0, abs=0.3)
    # Where it was not spent, the first probe goes through and the key sends again.
    again = KeyPacer(200.0, rate=150.0)
    now = spend_a_window(again, 0.0, 150.0, 150)
    now = probe(again, now, accepted=True)
    now = spend_a_window(again, now, again.rate, 150)
    now = probe(again, now, accepted=True)
    now = spend_a_window(again, now, again.rate, 100)
    parked = again.parked_at
    now = probe(again, now, accepted=True)
    assert again.state is PacerState.ACTIVE and now - parked <= 0.26


def test_a_burst_resume_walled_as_a_trickle_comes_through_lands_at_the_stated_limit() -> None:
    """A stated limit set aside (the server let a burst through far over it), and the resume
    at that burst meets a wall in its first answers, some accepted after the first refusal: a
    bucket refilling at the stated rate, or a sliding window giving back what its first sends
    spent. The key is cut to the stated limit, which caps it from then on. It was cut to what
    the park let it save over the park's time (a sliding window of 1 s at 188/s, stated: to
    15/s, then eleven seconds climbing back, 1.40x the floor; 1.08x now)."""
    pacer = KeyPacer(1000.0, rate=150.0)
    now = spend_a_window(pacer, 0.0, 150.0, 150)  # stated 50/s
    now = probe(pacer, now, accepted=True)
    assert pacer.rate > 100.0 and pacer.windowed
    feed_pattern(pacer, now, pacer.rate, [False, True, False, True, True])
    assert pacer.state is PacerState.ACTIVE and not pacer.windowed
    assert pacer.rate == pytest.approx(50.0 * 0.95)


def test_a_refusal_just_after_a_resume_measures_the_burst_since_the_resume() -> None:
    """A sliding window, its limit stated and set aside (let through far over it), gives its
    budget back at the pace it was spent: the resume at that pace outruns the echo by a hair
    and draws one refusal 0.2 s in, more than a second after the last refused probe. The
    burst is measured there afresh, and the last second's accepts, most of it parked, said
    19/s: under 1.5x the stated 20/s, the limit then capped the key for the rest of the run
    (the 20/s matrix's sliding window, stated: 1.24x the floor in every round). Measured since
    the resume it is the pace the server let through, and the limit stays set aside."""
    stated = QuotaInfo(limit="CancelRequestsPerMinute", limit_value=1200.0)
    pacer = KeyPacer(100.0, rate=100.0)
    now = spend_a_window(pacer, 0.0, 100.0, 120, quota=stated)  # (returns parked)
    while pacer.probe_gap < 1.0:
        now = probe(pacer, now, accepted=False, quota=stated)
    now = probe(pacer, now, accepted=False, quota=stated)
    now = probe(pacer, now + 1.0, accepted=True)
    assert pacer.state is PacerState.ACTIVE and pacer.rate > 90.0
    now = feed(pacer, now, pacer.rate, 18, 0.0)
    pacer.sent(now)
    pacer.on_answer(now + 0.01, throttled=True, sent_at=now, quota=stated)
    assert pacer.burst > 1.5 * 20.0
    assert pacer.rate > 90.0  # not capped at 19.6/s


def test_probes_with_a_stated_limit_cost_about_a_twentieth_of_it() -> None:
    pacer = KeyPacer(200.0, rate=150.0)
    now = spend_a_window(pacer, 0.0, 150.0, 150)
    gaps = []
    for _ in range(6):
        before = now
        now = probe(pacer, now, accepted=False)
        gaps.append(now - before)
    assert max(gaps) == pytest.approx(20.0 / 50.0 + 0.01)  # 0.4 s apart at 50/s, not 1 s
    bare = KeyPacer(100.0, rate=100.0)
    now = feed(bare, feed(bare, 0.0, 100.0, 66, 0.0), 100.0, 30, 1.0)
    for _ in range(6):
        now = probe(bare, now, accepted=False, quota=None)
    assert bare.probe_gap == 1.0  # no quota stated: a second apart, as before


def test_a_stated_limit_does_not_cut_a_key_the_server_let_through_far_over_it() -> None:
    # A window that turns before the key parks: the stated 50/s must not hold it there.
    windowed = KeyPacer(200.0, rate=150.0)
    now = feed(windowed, 0.0, 150.0, 150, 0.0)
    windowed.on_answer(now, throttled=True, sent_at=now - 0.01, quota=PER_MINUTE_50)
    assert windowed.limit == pytest.approx(50.0)
    assert windowed.rate > 100.0  # not cut to 49: the shares decide
    # A few accepts at start-up are no such evidence: the limit applies at once.
    young = KeyPacer(200.0, rate=100.0)
    now = feed(young, 0.0, 100.0, 3, 0.0)
    young.on_answer(now, throttled=True, sent_at=now - 0.01, quota=PER_MINUTE_50)
    assert young.rate == pytest.approx(50.0 * 0.98)


def test_one_gap_between_parks_is_no_window_period() -> None:
    """Windows that repeat are learned from two like gaps between resumes, not one: two parks
    13 s apart, taken for a 13 s window, aimed the third park's first probe at the predicted
    boundary, and a key of 1 s windows sat parked for 11 s (1.84x the floor)."""

    def park(pacer: KeyPacer, now: float) -> float:
        now = feed_pattern(pacer, now, 50.0, [False] * 60)
        for _ in range(24):
            now = feed_pattern(pacer, now, 50.0, [True])
            if pacer.state is PacerState.PARKED:
                return now
        raise AssertionError("never parked")

    def resume(pacer: KeyPacer) -> float:
        at = pacer.probe_at
        assert pacer.reserve(at) == (0.0, True)
        pacer.sent(at)
        pacer.on_answer(at + 0.01, throttled=False, sent_at=at, probe=True)
        assert pacer.state is PacerState.ACTIVE
        return at + 0.01

    once, twice = KeyPacer(100.0, rate=50.0), KeyPacer(100.0, rate=50.0)
    for pacer, starts in [(once, (0.0, 13.0)), (twice, (0.0, 13.0, 26.0))]:
        for start in starts:
            park(pacer, start)
            resume(pacer)
    assert once.period is None  # one gap
    now = park(once, 15.0)
    assert once.probe_at - now <= 1.0  # probed as at any park, not 11 s later
    assert twice.period is not None and 12.5 <= twice.period <= 13.5  # two like gaps
    now = park(twice, 28.0)
    assert twice.probe_at > now + 5.0  # aimed just before the next boundary


def test_a_burst_under_background_429s_is_measured_at_the_wall_after_a_clean_decision() -> None:
    """With a background share of 429s a second without a throttle never comes, and the burst
    (what the server accepted when a wall began) was measured only after one: a stated 50/s
    then cut a key the server let through at 180/s to 49/s, and a fixed window's later budgets
    were spent at that pace (2.04x the floor)."""
    pacer = KeyPacer(200.0, rate=200.0)
    now = feed_every(pacer, 0.0, 200.0, 300, 10)  # 1.5 s, every tenth refused: background
    assert pacer.rate == 200.0 and pacer.noise > 0
    pacer.sent(now)
    pacer.on_answer(now + 0.01, throttled=True, sent_at=now, quota=PER_MINUTE_50)
    assert pacer.burst == pytest.approx(180.0, rel=0.05)
    assert pacer.rate == 200.0  # not cut to 49: a window's budget, spent at its pace


def test_a_few_refusals_under_a_stated_limit_take_two_decisions() -> None:
    """At or under a stated per-minute limit, 2 of 16 refused (before any background is
    learned) is as likely a background's chance as a wall the server did not state: the key
    suspects it and cuts only on a second decision over the margin (cut at once, keys of
    fixed windows were held under their stated limits, confirmed on the window's turn)."""
    pacer = KeyPacer(200.0, rate=49.0, limit=50.0, walls=1, estimate=50.0)
    now = feed_pattern(pacer, 0.0, 49.0, [False] * 64)
    assert pacer.rate == pytest.approx(49.0)
    now = feed_pattern(pacer, now, 49.0, [True, *[False] * 7, True, *[False] * 7])
    assert pacer.rate == pytest.approx(49.0) and pacer.suspected_at == pacer.decided_at
    feed_pattern(pacer, now, 49.0, [True, *[False] * 7, True, *[False] * 7])
    assert pacer.rate < 45.0  # the second decision over the margin: a wall after all


def test_a_merged_pacers_burst_is_what_its_keys_accepted_together() -> None:
    """Two keys of one project each let through 150/s, merged when the first refusal said the
    quota is project-wide (123/s stated): the burst measured on the first key's accepts
    alone (150/s, under 1.5x the limit) held the pair at 120/s, their window's budgets
    spent at that pace (1.8x the floor)."""
    shared = QuotaInfo(limit="ApiRequestsPerMinutePerProject", limit_value=123.0 * 60)
    keys = [KeyPacer(400.0, rate=150.0) for _ in range(2)]
    for key in keys:
        feed(key, 0.0, 150.0, 150, 0.0)
    project = KeyPacer(400.0)
    project.absorb(keys[0], 1.0, first=True)
    project.on_answer(1.01, throttled=True, sent_at=1.0, quota=shared)
    assert project.rate == pytest.approx(123.0 * 0.98)  # one key's 150/s: a spacing, for now
    project.absorb(keys[1], 1.02, first=False)
    assert project.burst == pytest.approx(300.0, rel=0.05)
    assert project.rate > 200.0  # the faster key's rate, not the limit: the shares decide


def test_a_slow_keys_cut_on_a_sure_wall_is_judged_after_four_seconds() -> None:
    """7 of 8 refused at 4/s: a sure wall, cut to what was accepted (about 1/s). Judging the
    cut on 32 answers took half a minute at that rate (a minute at 0.5/s), the key growing
    not at all meanwhile (three regions on one quota of 4.6/s: one sat at 0.5/s for 60 s,
    3.6x the floor). Four seconds and four answers after the cut, a share that fell is
    judged: a wall, confirmed, and the key grows from there."""
    pacer = KeyPacer(200.0, rate=4.0, walls=1, estimate=4.2)
    now = feed_pattern(pacer, 0.0, 4.0, [True] * 4 + [False] + [True] * 3)
    assert pacer.checking is not None
    cut = pacer.rate
    now = feed_pattern(pacer, now + 0.02, cut, [False] * 3)
    assert pacer.checking is not None  # three answers: not yet
    now = max(now, pacer.cut_at + 3.9)
    feed_pattern(pacer, now, cut, [False])
    assert pacer.checking is not None  # four answers, under four seconds: not yet
    feed_pattern(pacer, pacer.cut_at + 4.0, cut, [False])
    assert pacer.checking is None and pacer.walls == 2
    assert pacer.rate > cut


def test_a_fast_keys_cut_still_waits_for_its_answers() -> None:
    """The four-second judgement is for slow keys only: cut from 100/s to about 48/s, a key
    has its 32 answers in under a second, and the cut is judged on them as before."""
    pacer = KeyPacer(200.0, rate=100.0, walls=1, estimate=105.0)
    now = feed_pattern(pacer, 0.0, 100.0, [i % 2 == 0 for i in range(16)])
    assert pacer.checking is not None and pacer.rate > 40.0
    now = feed_pattern(pacer, now + 0.02, pacer.rate, [False] * 31)
    assert pacer.checking is not None
    feed_pattern(pacer, now, pacer.rate, [False])
    assert pacer.checking is None and pacer.walls == 2


def two_keys_walled_in_turn(rate: float, b_from: float, length: float, period: float) -> bool:
    """Two keys of one project answered in turn, each at ``rate``; key a refused 70% for
    ``length`` seconds from the start of every ``period``, key b from ``b_from`` into it.
    Merged into the project's pacer at the end?"""

    async def main() -> bool:
        clock = [0.0]
        governor = RateGovernor(200.0, clock=lambda: clock[0])
        keys = {"projects/p/locations/a": 0.0, "projects/p/locations/b": b_from}
        counts = dict.fromkeys(keys, 0)
        while clock[0] < 4 * period:
            for key, start in keys.items():
                i, counts[key] = counts[key], counts[key] + 1
                walled = start <= clock[0] % period < start + length
                grant = Grant(governor.pacer(key), clock[0])  # granted: pacing is not tested
                governor.sent(grant)
                clock[0] += 0.5 / rate
                refused = walled and (i * 0.7) % 1 + 0.7 >= 1
                governor.report(grant, throttled=refused, key=key)
        return len({id(governor.pacer(key)) for key in keys}) == 1

    return asyncio.run(main())


def test_walls_of_slow_keys_coincide_when_the_answers_that_showed_them_overlap() -> None:
    """Regions on one quota, each at a few requests a second: a key needs seconds of answers
    to see a wall, so two keys' walls on one quota are found seconds apart, never within the
    second that made them one event (merged late or never: of 150 random such runs, 22 took
    over 1.2x the floor; 15 now). A slow key's wall began somewhere within the answers that
    showed it: two walls whose answers overlap in time (or come within a second) coincide.
    Keys fast enough to see a wall in a fraction of a second are judged as before, and slow
    keys whose answers do not overlap are not merged."""
    assert two_keys_walled_in_turn(4.0, b_from=1.5, length=3.0, period=8.0)
    assert not two_keys_walled_in_turn(100.0, b_from=2.0, length=0.5, period=4.0)
    assert not two_keys_walled_in_turn(4.0, b_from=5.0, length=1.5, period=12.0)


def test_refusals_of_requests_sent_before_the_limit_was_stated_do_not_park_the_key() -> None:
    """A distant server (answers in 0.3 s) stating a 50/s quota: the key sent at 100/s in slow
    start, doubled on four clean answers, and the first 429 stated the limit and held the key
    at 49/s; the refusals of the requests sent before (at 200/s) then read as a wall met at the
    limit, "a budget spent": the key parked (1.16x the floor in simulation; 1.07x now). What
    was sent before the limit was known is news already acted on."""
    quota = QuotaInfo(limit="ApiRequestsPerMinutePerProjectPerRegion", limit_value=3000.0)
    pacer = KeyPacer(200.0, rate=100.0)
    slow = [0.01 * i for i in range(34)]  # slow start's 100/s: half refused from 0.09 on
    fast = [0.335 + 0.005 * i for i in range(11)]  # 200/s: two in three refused
    late = [0.39 + i / 49.0 for i in range(20)]  # at the stated limit, all accepted
    refused = {at for at in slow if at >= 0.09 and round(at * 100) % 2 == 1}
    refused |= {at for i, at in enumerate(fast) if i % 3 != 2}
    sends = slow + fast + late
    for now, answer, at in sorted(
        [(at, False, at) for at in sends] + [(at + 0.3, True, at) for at in sends]
    ):
        if not answer:
            pacer.sent(now)
            continue
        no = at in refused
        pacer.on_answer(now, throttled=no, sent_at=at, quota=quota if no else None)
        assert pacer.state is PacerState.ACTIVE
    assert pacer.rate == pytest.approx(49.0)
    assert not pacer.walled
    # Answers to requests sent at the limit are news: a wall there parks the key.
    for i in range(8):
        at = 1.0 + i / 49.0
        pacer.sent(at)
        pacer.on_answer(at + 0.3, throttled=True, sent_at=at, quota=quota)
    assert pacer.state is PacerState.PARKED


def test_only_a_send_that_waited_for_a_slot_or_the_ceiling_spaces_a_stated_keys_next_turn() -> None:
    """The governor's side: a send that took its slot and the ceiling at once (the loop's own
    microseconds between grant and send: counted from the send, they cost a key at a stated
    50/s 2% of its rate against the fake) leaves the next turn where the grant put it."""
    clock = [0.0]
    governor = RateGovernor(200.0, clock=lambda: clock[0])
    pacer = governor.pacer(KEY)
    pacer.limit, pacer.rate = 50.0, 49.0
    for waited, expected in ((False, 1 / 49.0), (True, 0.004 + 1 / 49.0)):
        clock[0] = pacer.next_free
        start = clock[0]
        grant = governor.try_acquire_key(KEY)
        assert grant is not None
        clock[0] += 0.004
        governor.sent(grant, waited=waited)
        assert pacer.next_free - start == pytest.approx(expected)


def test_a_send_held_back_after_its_turn_spaces_the_next_turn_at_a_stated_limit() -> None:
    """Two regions at a stated 7.45/s each, burst of one token, told 25/s: their turns fell at
    the same instants, the run's ceiling let one go and held the other 40 ms, and the next
    turn, counted from the grant, went 97 ms after that send: refused, one in four (far draw
    97: 9.5% of 429s). Held at a stated limit, a key's next turn counts from the send; with no
    limit known it still counts from the grant (a rate measured lost nothing to waits)."""
    for stated, expected in ((True, 0.04 + 1 / 7.3), (False, 1 / 7.3)):
        pacer = KeyPacer(25.0, rate=7.3)
        if stated:
            pacer.limit = 7.45
        wait, _ = pacer.reserve(0.0)
        assert wait == 0.0
        pacer.granted += 1
        pacer.went(0.04, sent=True, waited=0.04)
        assert pacer.next_free == pytest.approx(expected)


@pytest.mark.parametrize("wall_age", [3.0, 1.5])
def test_a_resume_that_finds_no_budget_works_at_what_the_key_sustained_since_its_wall(
    wall_age: float,
) -> None:
    """A sliding window (bare 429s) gives back what the sends of a window ago spent: after a
    short park, the echo of the park before it, next to nothing. Read as a bucket's refill
    alone, the key's resume rate and its measured quota were that echo (three regions of 62/s
    cut to 10/s together, 2.1x the floor); what it was let through since its first wall, two
    seconds old or more, is the better measure, and a bucket's refill the floor of it. A first
    wall younger than that holds the burst a bucket saved, and is not used."""
    pacer = KeyPacer(400.0, rate=200.0)
    # the first wall: a window's budget spent
    now = spend_a_window(pacer, 0.0, 200.0, 200, quota=None)
    assert pacer.state is PacerState.PARKED and pacer.first_wall is not None
    wall = pacer.first_wall[0]
    now = max(now, wall + wall_age - 1.1)
    while pacer.state is PacerState.PARKED:
        now = probe(pacer, now, accepted=True, quota=None)
    # 100 let through at 100/s since the resume, then the budget runs out again: parked
    now = spend_a_window(pacer, now, 100.0, 100, quota=None)
    assert pacer.state is PacerState.PARKED
    parked_at = now
    now = probe(pacer, now, accepted=True, quota=None)  # a probe through: the echo of one
    assert pacer.state is PacerState.ACTIVE
    # one more, then refused: no budget back
    now = spend_a_window(pacer, now, pacer.rate, 1, quota=None)
    assert pacer.state is PacerState.PARKED
    assert now - wall >= 2.0 if wall_age > 2 else now - wall < 2.0
    echo = 2 / (now - parked_at)  # what came back since the park began
    sustained = (pacer.accepted_total - 200) / (now - wall)
    expected = sustained if wall_age > 2 else echo
    assert pacer.resume_rate == pytest.approx(expected, rel=0.05)
    assert pacer.estimate == pytest.approx(expected, rel=0.05)
    if wall_age > 2:
        assert pacer.resume_rate > 5 * echo
