"""The adaptive pacer's decisions, driven by a plain number as the clock: exact and instant."""

from __future__ import annotations

import asyncio
import random

import pytest

from bulkcancel._answers import QuotaInfo
from bulkcancel._limits import RateGovernor
from bulkcancel._pacer import KeyPacer, PacerState


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
