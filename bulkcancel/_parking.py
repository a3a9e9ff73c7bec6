"""Parking a quota key on a wall that refuses nearly everything, probing it, and resuming.

When a key's pacer decides that a wall refuses nearly everything (a spent per-minute window, a
minute's burst used up; the rules are in :mod:`bulkcancel._pacer`'s docstring, under Parking),
or that the key has sent a window's budget again, it parks here: one probe at a time, aimed at
the next turn of a window whose period is known, until one is accepted; the key then resumes
at the rate that worked. Each resume leaves a span of time known to hold a window's boundary,
from which :mod:`bulkcancel._windows` learns the period. Pure: no I/O and no clock of its
own (the time is passed in, ``now``).
"""

from __future__ import annotations

import math

from bulkcancel._key_record import (
    LIMIT_SHARE,
    MIN_RATE,
    PARK_SAMPLES,
    PROBE_BASE,
    WINDOW_BUDGET,
    KeyRecord,
    PacerState,
)
from bulkcancel._windows import turn_span, window_period

_PROBE_CAP = 1.0  # probes of a parked key are at most this far apart
_PROBE_SPEND = 20.0  # ... and, with a quota known, 1/20 of it apart at most: 5% of the quota
_PROBE_MIN = 0.1  # ... but never closer than this
_PARK_AHEAD = 0.5  # a park on a budget sent waits this share of the last park before probing
_AIM_EARLY = 0.02  # aimed probes start this share of a window's period before its boundary,
_AIM_GAP = 0.01  # ... this share apart,
_AIM_PAST = 0.05  # ... until this share past it; then their gaps double
_AIM_LATE = 0.005  # ... or this share past the latest a window can turn, when that is known
_SHORT_OF_BUDGET = 0.97  # a wall before this share of the last window's budget came through
_EARLY_PARKS = 3  # windows in a row parked on their budget used, before one runs to its wall
_TURNS = 6  # spans known to hold a window's boundary, kept to learn its period


class Parking(KeyRecord):
    """A key's pacer that parks, probes and resumes (:class:`bulkcancel._pacer.KeyPacer`
    decides when)."""

    __slots__ = ()

    def exhausted(self, now: float) -> bool:
        """Parked, refusing everything, for the whole throttle budget: stop retrying here."""
        return self.state is PacerState.PARKED and now - self.parked_at >= self.throttle_budget

    def _park(self, now: float, hint: float | None) -> None:
        self._wall_met(now)
        self.early_parks = 0
        # The rate that worked: what was accepted in the second before the wall (for a fixed
        # window that is the full pace; for a spent minute's burst, the refill rate), over the
        # part of that second this pacer saw; a per-minute value from ErrorInfo says it exactly.
        # (Never under a quarter of the rate in force: a young pacer has seen few accepts.)
        worked = max(self.accepted_rate(now), self.rate / 4)
        if self._no_budget_back(now):
            # It resumed and met this wall in its first decision: no budget came back (a
            # bucket refilling, not a window that turned). What works is what the server
            # accepted since the last park began, not the burst spent before it.
            worked = self._budget_back(now)
            self.estimate = worked  # a measured quota: slow start is over
            self.walls += 1
        self._resume_at(worked)
        # What the key was let through since it resumed at a window's boundary: that window's
        # budget, where a window it is (a bucket refilling gives next to none back, and the
        # stated limit caps it from then on: see _wall_met).
        spent = self.accepted_total - self.resumed_total
        short = (
            hint is None
            and bool(self.resumes)
            and self.window_budget >= PARK_SAMPLES
            and spent < _SHORT_OF_BUDGET * self.window_budget
        )
        self.window_budget = spent
        if (
            self.period is None
            and self.resumes
            and self._limit_set_aside
            and spent >= WINDOW_BUDGET
        ):
            # A fixed window's length is its budget over the stated per-minute rate (a window
            # of 2 s at 50/s holds 100): known after one window, where the spans of three
            # resumes are needed otherwise, and the run may be over by then (probes 0.4 s
            # apart found each turn up to 0.4 s late: 1.25-1.49x the floor in three windows).
            self.period = spent / self.limit
        # A wall short of the last window's budget, where the probes would wait for the next
        # turn: probe once first (see _parked).
        self.short_of_budget = short and self.period is not None
        self._parked(now, hint)

    def _budget_spent(self, now: float) -> bool:
        """The key has sent, since it resumed at a window's turn, the budget the last window let
        through (eight or more), none of it refused so far: the next request would meet the
        wall. Parked before it (:meth:`_budget_park`), it costs no refusal at all; the wall's own
        (two or three, and more in flight) and the probes' cost windows of 10 a third of their
        requests in 429s. Counted in sends, not answers: behind a distant server every request
        in flight when the answers show the wall is refused (3 s windows of 30/s told 300/s
        behind 0.15 s answers: a budget of 90 spent at up to 260/s, then 50-60 refusals a window,
        32-38% of all requests; 30 a window of 3 s told 50/s, answers of 0.1 s: 15% of requests,
        6% now; 60 a window of 2 s told 200/s, answers of 0.2 s: 34%, 9% now; the sweeps' sliding
        windows 30 -> 23 runs over the 429 targets). Every fourth window runs to its wall again,
        so a budget that grew is seen. Not after a refusal since the resume: parks every other
        window show twice the period, and their budget held a wall in the middle. Two kinds of
        key park so:

        * One whose window's period is known: alone in its project, or the pacer that took over
          its project's keys (one quota), less than a period after its resume (a budget found
          in the next window is that window's); its sends only (turns granted and not yet sent
          are given back at a park: counted, they parked it one short of a budget). Not on a
          key paced beside other keys of its project: their share of one quota moves window to
          window. A merged pacer paces that share itself: two regions on one window of 20 a
          second, merged on their walls, ran to the wall every window, 15% of requests refused,
          10% now.
        * One that has not learned the period, has met no quota (no wall measured, none stated)
          but parks window after window: its sends and the turns granted to it."""
        if (
            self.window_budget < PARK_SAMPLES  # (first: on every grant, and 0 until a park)
            or self.early_parks >= _EARLY_PARKS
            or self.refused_since_resume
            or not self.resumes
        ):
            return False
        sent = self.sent_total - self.resumed_sent
        if self.period is None:
            return (
                self.walls == 0
                and self.limit == math.inf
                and sent + self.granted >= self.window_budget
            )
        return (
            (self.alone or self.absorbed > 0)
            and now < self.resumes[-1] + self.period
            and sent >= self.window_budget
        )

    def _budget_park(self, now: float) -> None:
        """Park on a window's budget sent (:meth:`_budget_spent`), before any refusal: the
        wall's rate to resume at, the budget as it was, the next turn aimed at; without a
        period, the first probe after half as long as the last park lasted (the turn is about
        that far off: probing from the start, 60 s windows of 10/s drew some 200 refusals each,
        12.9% of a run's requests, 8.6% now), then probes a quarter second apart, not doubling
        to a second (the turn is near: found up to a second late, a 2 s window lost half its
        time)."""
        self.early_parks += 1
        self._resume_at(max(self.accepted_rate(now), self.rate / 4))
        self._parked(now, None)
        if self.period is None:
            self.probe_at = max(self.probe_at, now + _PARK_AHEAD * self.parked_for)

    def _resume_at(self, worked: float) -> None:
        """The rate the key resumes at: what worked, or the stated per-minute limit."""
        self.resume_rate = max(MIN_RATE, min(self.ceiling, worked))
        if self.limit < math.inf:
            self.resume_rate = self.limit * LIMIT_SHARE

    def _parked(self, now: float, hint: float | None) -> None:
        """Park the key: probes from a quarter of a second on (or after the hint), or aimed at
        the next turn of a window whose period is known (after one probe at the first gap,
        when the wall came short of the last window's budget: see :meth:`_park`)."""
        self.state = PacerState.PARKED
        self.parked_at = now
        self.last_failed_probe = now
        self.probe_out = False
        self.checking = None
        self.probe_gap = min(PROBE_BASE, self._probe_cap())
        first = self.probe_gap if hint is None else min(max(hint, PROBE_BASE), self.hint_cap)
        self.probe_at = now + first
        self.aimed_at = math.inf
        if self.period is not None and self.resumes:
            first_gap = self.probe_at
            self._aim(now)
            if self.short_of_budget:  # (never on a hint: the first gap is the probes' own)
                self.probe_at = min(self.probe_at, first_gap)

    def _aim(self, now: float) -> None:
        """Aim a park's probes at the next turn of a window whose period is known."""
        assert self.period is not None
        # A fixed window seen before: aim just before its next boundary, or just past the
        # latest it can be when the spans tell it within 4% of a period (probes from 2%
        # before it, 1% apart, were refused about once a window: one key on windows of 10
        # a second, a test's driver at four phases, 31% of its requests refused -> 26%).
        boundary = self.resumes[-1] + self.period
        while boundary < now:
            boundary += self.period
        self.aimed_at = boundary
        self.probe_at = max(now + 0.01, boundary - _AIM_EARLY * self.period)
        if self.turn_width <= 2 * _AIM_EARLY * self.period:
            late = self.turn_width / 2 + _AIM_LATE * self.period
            self.probe_at = max(now + 0.01, boundary + late)
        self.probe_gap = max(0.01, _AIM_GAP * self.period)

    def _probe_cap(self) -> float:
        """Probes of a parked key are at most a second apart; with a per-minute quota known,
        closer, so the probes of a park cost about 5% of the quota (a turning window is found
        0.4 s late at most at 50/s, not a second), but never under 0.1 s."""
        if self.limit == math.inf:
            return _PROBE_CAP
        return min(_PROBE_CAP, max(_PROBE_MIN, _PROBE_SPEND / self.limit))

    def _while_parked(self, now: float, *, throttled: bool, sent_at: float, probe: bool) -> None:
        if not throttled and sent_at >= self.parked_at:
            self._resume(now)
            return
        if probe:
            self.probe_out = False
            self.last_failed_probe = now
            if self.short_of_budget:
                # (the first probe of a park short of its window's budget: see _park)
                self.short_of_budget = False
                if now < self.aimed_at:
                    self._aim(now)
                    return
            # Aimed probes stay close only around the predicted boundary: a prediction off
            # by a fifth of a window, probed 1% apart until a whole period had passed,
            # cost 35 refusals in one park (two regions of 20/s in 2 s windows: 18-20% 429s).
            # (A park on a window's budget, the period unknown, keeps its probes a quarter
            # second apart: see _budget_park. ``early_parks`` counts such parks since the last
            # wall's, which zeroes it: non-zero while parked, this park is one.)
            if (self.period is None and self.early_parks == 0) or (
                self.period is not None and now > self.aimed_at + _AIM_PAST * self.period
            ):
                self.probe_gap = min(self._probe_cap(), self.probe_gap * 2)
            self.probe_at = now + self.probe_gap

    def _resume(self, now: float) -> None:
        # A window's boundary lies between the last failed probe (or the park) and now: the
        # span is kept, and the spans of the last few resumes tell the period, when one
        # period puts a boundary in every one of them (see _windows). The boundary
        # remembered for the next aim is the middle of where, in this span, such windows
        # turn. Without a period: when an aimed park's first probe was accepted, the turn
        # lies anywhere since the park began (the middle of that was up to half a window
        # early, and the next park's aimed probes were refused all the way to the real turn):
        # remember a little before now; else the middle of the span, or now when probes were
        # a second apart.
        if self.last_failed_probe <= self.parked_at and self.period is not None:
            boundary = now - _AIM_PAST * self.period
        elif self.probe_gap < 1.0:
            boundary = (self.last_failed_probe + now) / 2
        else:
            boundary = now
        self.turns.append((self.last_failed_probe, now))
        del self.turns[:-_TURNS]
        learned = window_period(self.turns, self.period)
        self.period, self.turn_width = None, math.inf
        if learned is not None:
            self.period, spread = learned
            turning = turn_span(self.turns, self.period)
            if turning is not None:
                # (the next turn, a period on, is as uncertain as the period, and more)
                boundary = (turning[0] + turning[1]) / 2
                self.turn_width = turning[1] - turning[0] + 2 * spread
        self.resumes.append(boundary)
        del self.resumes[:-4]
        self.state = PacerState.ACTIVE
        self.probe_out = False
        self.rate = max(MIN_RATE, min(self.resume_rate, self.limit * LIMIT_SHARE))
        if self._limit_set_aside:
            # The server let through far more than its stated per-minute rate before the wall:
            # the rate is an average over a window (or a minute's bucket), not a spacing. A
            # fixed window that turned has its whole budget back: spend it at the pace that
            # worked; the next wall parks the key again. (A bucket refilling at the stated
            # rate refuses that pace at once, and the key learns it: see _wall_met.)
            self.rate = max(self.rate, min(self.ceiling, self.burst))
            self.at_burst = True
        self.next_free = now
        self.parked_for = now - self.parked_at
        self.resumed_at, self.resumed_total = now, self.accepted_total
        self.resumed_sent = self.sent_total
        self.refused_since_resume = False
        self.short_of_budget = False
        self._new_epoch(now)
