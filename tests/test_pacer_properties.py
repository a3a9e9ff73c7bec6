"""Properties of one key's pacer under any answers, in any order: whatever the server says and
however late, the pacer's rate stays a rate and its evidence stays consistent. The decisions
themselves are tested case by case in ``test_limits`` and the simulations."""

from __future__ import annotations

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bulkcancel._key_record import MIN_RATE, PacerState
from bulkcancel._pacer import KeyPacer

# One step: seconds since the step before, a uniform draw for the background share, and how
# much of the round trip its answer takes (answers overtake each other).
_STEPS = st.lists(
    st.tuples(
        st.floats(0.0005, 0.02, allow_nan=False),
        st.floats(0.0, 1.0, allow_nan=False),
        st.floats(0.5, 1.5, allow_nan=False),
    ),
    min_size=1,
    max_size=800,
)


def _sane(pacer: KeyPacer, ceiling: float) -> None:
    assert math.isfinite(pacer.rate) and MIN_RATE <= pacer.rate <= ceiling, pacer.rate
    assert pacer.state in (PacerState.ACTIVE, PacerState.PARKED)
    assert pacer.fresh == len(pacer.fresh_answers)
    assert 0 <= pacer.fresh_throttled <= pacer.fresh
    if pacer.fresh:
        assert pacer.fresh_first_sent <= pacer.fresh_last_sent
    assert pacer.late_from < math.inf or not pacer.late_answers
    if pacer.late_answers:  # (kept only while the last decision was slow start's doubling)
        assert pacer.stepped_at == pacer.decided_at and not pacer.walled and not pacer.walls
    # (the doubling's own answers among them: sent up to the moment it was decided)
    assert all(pacer.late_from <= at <= pacer.decided_at for at, _ in pacer.late_answers)


@settings(max_examples=150, deadline=None)
@example(  # slow start's late answers show a 50/s bucket's wall behind 0.2 s answers: a cut
    ceiling=200.0, quota=50.0, burst=5.0, background=0.0, latency=0.2,
    steps=[(0.002, 1.0, 1.0)] * 500,
)  # fmt: skip
@example(  # a bucket of 0.5/s, told 20/s, behind 0.5 s answers: cuts down to the floor
    ceiling=20.0, quota=0.5, burst=1.0, background=0.05, latency=0.5,
    steps=[(0.02, (i * 0.37) % 1.0, 1.0) for i in range(800)],
)  # fmt: skip
@given(
    ceiling=st.sampled_from([2.0, 20.0, 200.0]),
    quota=st.floats(0.5, 300.0, allow_nan=False),
    burst=st.floats(1.0, 50.0, allow_nan=False),
    background=st.sampled_from([0.0, 0.05, 0.3]),
    latency=st.sampled_from([0.0, 0.02, 0.2, 0.5]),
    steps=_STEPS,
)
def test_any_answers_in_any_order_keep_a_pacer_sane(
    ceiling: float,
    quota: float,
    burst: float,
    background: float,
    latency: float,
    steps: list[tuple[float, float, float]],
) -> None:
    """A key sends whenever its pacer grants a turn, to a token bucket (``quota`` per second,
    ``burst`` deep) that also refuses a ``background`` share at random; each request reaches
    the bucket half a round trip after it is sent and its answer comes back half a round trip
    after that, each round trip ``latency`` times a factor (out of send order when the factors
    differ)."""
    pacer = KeyPacer(ceiling)
    tokens, filled = burst, 0.0
    now = 0.0
    pending: list[tuple[float, float, bool, bool]] = []  # (arrives, sent at, refused, probe)
    for gap, draw, spread in steps:
        now += gap
        due = sorted(answer for answer in pending if answer[0] <= now)
        pending = [answer for answer in pending if answer[0] > now]
        for arrives, sent_at, throttled, probe in due:
            pacer.on_answer(arrives, throttled=throttled, sent_at=sent_at, probe=probe)
            _sane(pacer, ceiling)
        wait, probe = pacer.reserve(now)
        assert wait >= 0.0
        if wait == 0.0:
            pacer.sent(now)
            reaches = now + latency * spread / 2
            tokens = min(burst, tokens + (reaches - filled) * quota)
            filled = max(filled, reaches)
            refused = draw < background or tokens < 1.0
            tokens -= not refused
            pending.append((now + latency * spread, now, refused, probe))
        _sane(pacer, ceiling)
