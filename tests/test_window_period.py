"""A fixed window's period, learned from the spans of time each park's turn was found in."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkcancel._pacer import KeyPacer
from bulkcancel._windows import turn_span, window_period
from tests._pacing import Window


def spans(
    period: float, phase: float, windows: list[int], widths: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """One span per window index in ``windows``, around its boundary ``phase + k * period``:
    ``(before, after)`` seconds either side."""
    return [
        (phase + k * period - before, phase + k * period + after)
        for k, (before, after) in zip(windows, widths, strict=True)
    ]


def test_spans_a_quarter_of_a_window_wide_or_more_tell_nothing() -> None:
    """Parks of 1 s windows found by probes a quarter of a second apart and more, in spans of
    0.8 s: windows of 1.65 s turn within each of them as well as windows of 1 s do. Learned,
    the longer one aimed every park's probes past a turn (1.41x the floor)."""
    turns = [(0.53, 1.32), (1.8, 2.59), (3.83, 4.62)]
    assert turn_span(turns, 1.0) is not None and turn_span(turns, 1.65) is not None
    assert window_period(turns, None) is None


def test_parks_that_hold_one_turn_or_two_tell_the_window_not_their_gaps() -> None:
    """1 s windows whose parks held one boundary or two: gaps of 1.1 s and 1.8 s."""
    turns = spans(1.0, 0.35, [7, 8, 10, 11, 13, 14], [(0.25, 0.0), (0.03, 0.22)] * 3)
    learned = window_period(turns, None)
    assert learned is not None and learned[0] == pytest.approx(1.0, rel=0.05)


def test_two_spans_are_no_period_and_wide_ones_tell_none() -> None:
    assert window_period(spans(2.0, 0.5, [1, 2], [(0.1, 0.1)] * 2), None) is None
    # Probes a second apart on windows of a second: every span holds a boundary at any phase.
    assert window_period(spans(1.0, 0.5, [1, 2, 3, 4], [(0.9, 0.1)] * 4), None) is None


def test_a_known_period_stays_beside_a_wide_span_and_goes_when_the_spans_deny_it() -> None:
    """A park whose first aimed probe was accepted has a span half a window wide: relearned
    from the longest that fits, it read 1.34 s for windows of 1 s; kept, it stays."""
    turns = spans(1.0, 0.35, [3, 4, 5, 6], [(0.01, 0.01)] * 3 + [(0.5, 0.02)])
    kept = window_period(turns, 1.0)
    assert kept is not None and kept[0] == pytest.approx(1.0, rel=0.01)
    # Spans 1.5 s apart deny a period of 1 s: it is learned again from them.
    denied = spans(1.5, 0.2, [1, 2, 3, 4], [(0.02, 0.02)] * 4)
    again = window_period(denied, 1.0)
    assert again is not None and again[0] == pytest.approx(1.5, rel=0.02)
    # A stated window's period, with fewer than three spans, is not disproved yet (and no
    # surer than the spread a learned one may have).
    assert window_period(denied[:2], 1.0) == (1.0, 0.1)


def test_a_span_that_misses_its_turn_fits_no_period_until_it_is_old() -> None:
    """A probe refused by a background 429 after the turn: that span holds no boundary, and
    no period fits it (left out, parks in windows 1, 2, 4 and 6 read as windows of twice the
    period, the first span the one left out). Six spans later it is forgotten."""
    turns = spans(2.0, 0.1, [1, 2, 3, 4, 5], [(0.05, 0.05)] * 5)
    turns[2] = (turns[2][1] + 0.3, turns[2][1] + 0.4)
    assert window_period(turns, None) is None
    assert window_period(turns, 2.0) is None
    later = spans(2.0, 0.1, [6, 7, 8, 9, 10, 11], [(0.05, 0.05)] * 6)
    learned = window_period([*turns, *later][-6:], None)
    assert learned is not None and learned[0] == pytest.approx(2.0, rel=0.03)


def test_where_the_last_turn_may_lie() -> None:
    turns = spans(2.0, 0.1, [1, 2, 3], [(0.1, 0.3), (0.2, 0.05), (0.3, 0.3)])
    turning = turn_span(turns, 2.0)
    assert turning is not None
    low, high = turning
    assert low <= 6.1 <= high  # the true boundary of the last span
    assert high - low == pytest.approx(0.15)  # narrowed by the others: 6.1 - 0.1, 6.1 + 0.05
    assert turn_span(turns, 1.6) is None


@given(
    period=st.floats(0.5, 10.0),
    phase=st.floats(0.0, 1.0),
    gaps=st.lists(st.sampled_from([1, 1, 2]), min_size=2, max_size=5).filter(lambda g: 1 in g),
    widths=st.lists(st.tuples(st.floats(0.0, 0.15), st.floats(0.0, 0.15)), min_size=6, max_size=6),
)
def test_a_learned_period_is_the_windows_own_when_two_turns_are_one_window_apart(
    period: float, phase: float, gaps: list[int], widths: list[tuple[float, float]]
) -> None:
    """Spans that each hold a boundary, two of them in windows next to each other: what is
    learned (if anything) is a band that holds the period, within 10% of it, never a
    multiple or a fraction of it; a period known is kept within 10%. (Spans only every other
    window show twice the period: nothing in them says otherwise.)"""
    windows = [1]
    for gap in gaps:
        windows.append(windows[-1] + gap)
    scaled = [(before * period, after * period) for before, after in widths[: len(windows)]]
    turns = spans(period, phase * period, windows, scaled)
    learned = window_period(turns, None)
    if learned is not None:
        middle, spread = learned
        assert middle - spread <= period * 1.000001 and period <= (middle + spread) * 1.000001
        assert abs(middle / period - 1) <= 0.11, learned
    kept = window_period(turns, period)
    assert kept is not None and abs(kept[0] / period - 1) <= 0.1


def drive(
    pacer: KeyPacer, window: Window, until: float, offset: float, latency: float = 0.002
) -> list[list[int]]:
    """Send whenever ``pacer`` grants, each answered ``latency`` seconds later by ``window`` (its
    clock ``offset`` ahead), the key sending meanwhile, until ``until``: [sent, refused] per
    window."""
    counts: list[list[int]] = []
    pending: list[tuple[float, float, bool, bool]] = []  # (answered at, sent at, accepted, probe)
    now = 0.0
    while now < until:
        if pending and pending[0][0] <= now:
            answered, sent_at, accepted, probe = heapq.heappop(pending)
            pacer.on_answer(answered, throttled=not accepted, sent_at=sent_at, probe=probe)
            continue
        wait, probe = pacer.reserve(now)
        if wait > 0:
            now = min(now + wait, pending[0][0]) if pending else now + wait
            continue
        pacer.sent(now)
        accepted = window.admit(now + offset)
        index = int((now + offset) // window.period)
        counts.extend([0, 0] for _ in range(index + 1 - len(counts)))
        counts[index][0] += 1
        counts[index][1] += not accepted
        heapq.heappush(pending, (now + latency, now, accepted, probe))
        now += 1e-4
    return counts


def test_a_window_whose_budget_is_known_is_left_before_its_wall() -> None:
    """A key alone on windows of 10 a second, told 60/s, no ErrorInfo: each window's budget
    spent, two or three more refused before the key parked, and a probe or two at the turn,
    a third of its requests refused (32% in windows 15-40). Once the period is known the key
    parks when the last window's budget has come through, before a refusal, and aims its
    probe just past the turn; every fourth window runs to its wall, so a budget that grew is
    seen (14% of the requests refused; 28% without the early parks, the aim alone)."""
    pacer = KeyPacer(60.0)
    counts = drive(pacer, Window(10, 1.0), 40.0, offset=0.37)
    assert pacer.period == pytest.approx(1.0, rel=0.02)
    later = counts[15:40]
    refused = sum(r for _, r in later)
    accepted = sum(n - r for n, r in later)
    assert accepted >= 24 * 10  # every window's budget used, or all but one
    assert refused <= 0.2 * accepted, (refused, accepted)
    assert sum(r == 0 for _, r in later) >= 10  # (none without the early parks)
    assert any(r > 0 for _, r in later[:5])  # a window run to its wall again


@pytest.mark.parametrize(
    ("budget", "period", "told", "latency", "most"),
    [(30, 3.0, 50.0, 0.1, 0.10), (60, 2.0, 200.0, 0.2, 0.12)],
    ids=["30-in-3s-0.1s-answers", "60-in-2s-0.2s-answers"],
)
def test_a_windows_budget_is_counted_in_sends_behind_a_distant_server(
    budget: int, period: float, told: float, latency: float, most: float
) -> None:
    """A key that knows the period parks once the last window's budget has gone out, not once
    it has come back: counted in answers, every request sent in the round trip before the
    last of the budget was answered was refused (30 a window of 3 s, told 50/s, answers of
    0.1 s: 15.4% of requests refused in windows 15-40; 60 a window of 2 s, told 200/s, answers
    of 0.2 s: 33.7%). Counted in sends, 6.2% and 8.5%, every window's budget still used."""
    pacer = KeyPacer(told)
    counts = drive(pacer, Window(budget, period), 40 * period, 0.37 * period, latency)
    assert pacer.period == pytest.approx(period, rel=0.05)
    later = counts[15:40]
    refused = sum(r for _, r in later)
    accepted = sum(n - r for n, r in later)
    assert accepted == 25 * budget
    assert refused <= most * (accepted + refused), (refused, accepted)
