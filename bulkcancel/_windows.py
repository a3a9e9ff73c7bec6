"""A fixed quota window's period, learned from the spans of time that hold its boundaries.

A key parked on a spent window resumes when the window turns; the span from its last refused
probe (or the park) to the accepted one holds a boundary. Windows of one period put a boundary
in every such span, so a few narrow spans tell the period, and the last span with the period
tells where the next boundary falls (:func:`turn_span`): the pacer aims its probes there. Pure
functions of the spans, no state: :class:`bulkcancel._pacer.KeyPacer` keeps the spans and the
period it learned.
"""

from __future__ import annotations

import itertools
import math

_PERIOD_SPREAD = 0.1  # a period is learned when the spans tell it within this share either way
_PERIOD_SCAN = 0.995  # ... scanned down by steps of this ratio
_TURN_SHARE = 0.25  # ... from spans no longer than this share of it, three or more
_SLACK = 1e-9  # seconds: a span's ends are this much wider (a clock's float sums)


def turn_span(turns: list[tuple[float, float]], period: float) -> tuple[float, float] | None:
    """Where, within the last of ``turns`` (spans of time each known to hold a boundary of
    a fixed window), windows of ``period`` seconds may turn: (earliest, latest); None when no
    windows of that length turn within every span. (A span as long as the period or longer
    holds a boundary whatever the phase: it says nothing.)"""
    start, end = turns[-1]
    start = max(start, end - period)
    for low, high in turns[:-1]:
        if high - low >= period:
            continue
        # The span moved by whole periods to lie nearest the last one.
        shift = round(((start + end) - (low + high)) / 2 / period) * period
        best: tuple[float, float] | None = None
        for moved in (shift - period, shift, shift + period):
            lo, hi = max(start, low + moved - _SLACK), min(end, high + moved + _SLACK)
            if lo <= hi and (best is None or hi - lo > best[1] - best[0]):
                best = (lo, hi)
        if best is None:
            return None
        start, end = best
    return start, end


def window_period(
    turns: list[tuple[float, float]], known: float | None
) -> tuple[float, float] | None:
    """The period of a fixed window whose boundaries lie one in each of ``turns`` (spans of
    time, oldest first, one per resume), and how far it may be off either way; or None.

    A period ``known`` that still puts a boundary in every span is kept, refined to the
    middle of the periods within ``_PERIOD_SPREAD`` of it that do so too (spans wider than a
    quarter of a period, parks whose first aimed probe was accepted, leave it where it was,
    as uncertain as that share). Else three spans or more tell it: the longest periods that
    put a boundary in every span (none is longer than the gap between two spans' far ends:
    each holds a boundary of its own) make a band, and when it is narrow (within
    ``_PERIOD_SPREAD`` either way) the period is its middle. (Relearned from the longest
    while a period was known, spans half a window wide fit a longer one too: 1.34 s for
    windows of 1 s.) A span that misses its turn (a probe refused by a background 429 after
    it) fits no period: none is learned, nor a known one kept, until it is one of the last
    six no more. (Left out, one span of parks in windows 1, 2, 4 and 6 made the others
    twice the period.)

    Parks every other window show twice the period, and nothing in their spans says
    otherwise (that was so of two like gaps too): the aim skips a turn, and a key that was
    refused between its resume and its park never parks on a window's budget used (see
    ``KeyPacer._budget_spent``).

    Until session 29 a period was two like gaps between resumes: probes a second apart found
    each turn of 3 s windows up to a second late, the gaps alternated 3.5 s and 2.6 s, and no
    period was ever learned (nor for 1 s windows whose parks held one boundary or two: gaps
    of 1.1 s and 1.8 s)."""
    if known is not None:
        top, bottom = (1 + _PERIOD_SPREAD) * known, (1 - _PERIOD_SPREAD) * known
        kept = _period_band(turns, _TURN_SHARE * known, top, bottom, regular=False)
        if kept is not None:
            return (kept[0] + kept[1]) / 2, (kept[1] - kept[0]) / 2
        if len(turns) < 3 or turn_span(turns, known) is not None:
            # (too few narrow spans to refine it, none that denies it: a stated window's,
            # or one whose parks' first aimed probes were accepted)
            return known, _PERIOD_SPREAD * known
    if len(turns) < 3:
        return None
    found = _period_band(turns)
    if found is None:
        return None
    low, high = found
    if high - low > _PERIOD_SPREAD * (low + high):
        return None
    return (low + high) / 2, (high - low) / 2


def _period_band(
    turns: list[tuple[float, float]],
    widest: float | None = None,
    top: float = math.inf,
    bottom: float = 0.0,
    *,
    regular: bool = True,
) -> tuple[float, float] | None:
    """The longest periods under ``top`` (and the longest any two spans allow) and over
    ``bottom`` (and a third of that) that put a boundary in every one of ``turns`` no wider
    than ``widest`` (three or more: wider ones hold a boundary at many phases): a band,
    (shortest, longest); None when none does. Scanned down by 0.5% steps, each step's count
    of windows between the spans gives the band exact (:func:`_exact_band`; a period known
    is refined without ``regular``). How wide is too wide is set once: a quarter of the
    longest period the spans allow, or of the one known (set per period scanned, spans a
    quarter of a window wide were left out at the period and kept at twice it, which was
    learned)."""
    longest = min(high - low for (low, _), (_, high) in itertools.pairwise(turns))
    if widest is None:
        widest = _TURN_SHARE * longest
    period = min(longest, top)
    bottom = max(bottom, period / 3)
    best: tuple[float, float] | None = None
    while period > bottom and (best is None or period > best[0]):
        band = _exact_band(turns, period, widest, regular=regular)
        if band is not None:
            low, high = max(band[0], bottom), min(band[1], longest, top)
            if low <= high and (best is None or high > best[1]):
                best = (low, high)
        period *= _PERIOD_SCAN
    return best


def _exact_band(
    turns: list[tuple[float, float]], period: float, widest: float, *, regular: bool
) -> tuple[float, float] | None:
    """With as many windows between the spans as at ``period`` (each span's middle from the
    last's, in periods, rounded), the periods that put a boundary ``phase - k * period`` in
    every span, ``k`` its count: for two spans ``i`` and ``j``, ``lo_j - hi_i <= (k_i - k_j)
    * period`` (the phase eliminated), exact however narrow the spans. Spans wider than
    ``widest`` or a quarter of ``period`` are left out, and three must be left (spans of
    0.8 s, parks of 1 s windows found by probes, fit windows of 1.65 s as well as of 1 s;
    spans of 0.25 s, beside 2 s windows, one of them a park on background 429s that held
    no turn, fit windows of 0.72 s). ``regular``: two or more of the spans that are left,
    and half of them or more, must be one window after the one before, as parks of a window
    spent every window are (three spans of parks 4 and 13 s apart, on background 429s beside
    1 s windows, fit windows of 4.24 s by chance: a lattice scanned over a range of periods
    finds one that meets three spans a tenth of a period wide; a period that is their
    usual gap does not come by chance)."""
    last = (turns[-1][0] + turns[-1][1]) / 2
    counted = [
        (round((last - (low + high) / 2) / period), low, high)
        for low, high in turns
        if high - low <= min(widest, _TURN_SHARE * period)
    ]
    if len(counted) < 3:
        return None
    if regular:
        steps = [k_a - k_b for (k_a, _, _), (k_b, _, _) in itertools.pairwise(counted)]
        if 2 * steps.count(1) < len(steps) or steps.count(1) < 2:
            return None
    low_p, high_p = 0.0, math.inf
    for k_i, _, hi_i in counted:
        for k_j, lo_j, _ in counted:
            gap = lo_j - hi_i - _SLACK
            if k_i > k_j:
                low_p = max(low_p, gap / (k_i - k_j))
            elif k_i < k_j:
                high_p = min(high_p, -gap / (k_j - k_i))
            elif gap > 0:
                return None  # two spans apart, one boundary
    return (low_p, high_p) if low_p <= high_p and high_p > 0 else None
