"""What one quota key's pacer knows: its state, the evidence it keeps, and what it measures.

The ground floor of the pacer (the design is in :mod:`bulkcancel._pacer`'s docstring):
:class:`KeyRecord` holds every field of a key's pacer, the rates measured from its sends and
accepts, and the small steps every part of it takes (a new decision's epoch, a wall met, the
stated limit as a cap). On top of it :class:`bulkcancel._parking.Parking` parks and resumes,
:class:`bulkcancel._background.Background` learns the background share of 429s,
:class:`bulkcancel._peers.Peers` takes what other keys of the project do (a peer gone, a merge),
and :class:`bulkcancel._pacer.KeyPacer` decides. Pure: no I/O and no clock of its own (the time is
passed in, ``now``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Self

from bulkcancel._spacing import Spacing

MIN_RATE = 0.5  # requests/s: a key never stalls completely while active
_START_SHARE = 0.5  # a new key starts at this share of the ceiling (slow start)
MIN_SAMPLES = 16  # fresh answers before any wall decision
CLEAN_SAMPLES = 64  # ... and before an increase (or _CLEAN_TIME seconds of them)
CHECK_SAMPLES = 32  # fresh answers after a cut before judging it
SURE_WALL = 0.4  # a throttle share this high is a wall, never background
#: idle stretches of a key kept (see KeyPacer.reserve and _fresh_rate)
_IDLE_KEPT = 64
PARK_SAMPLES = 8  # fresh answers before parking, when nearly all are refused
WINDOW_BUDGET = 2 * MIN_SAMPLES  # let through this many, a window's budget beyond doubt (a
# bucket refilling gives fewer back after a park, a start-up burst may be fewer)
LIMIT_SHARE = 0.98  # a quota value from ErrorInfo is used this close
PROBE_STEP = 0.05  # additive probe above the measured quota, per clean decision
PROBE_BASE = 0.25  # seconds to the first probe of a parked key
_WINDOW_BURST = 1.5  # accepted this far above a stated per-minute rate: budgets, not spacing
HISTORY = 1.0  # seconds of sends and accepts remembered, for measured rates


class PacerState(Enum):
    """A key sends at its rate (active), or waits for a probe to be accepted (parked)."""

    ACTIVE = "active"
    PARKED = "parked"


@dataclass(slots=True)
class KeyRecord:
    """The state of one quota key's pacer (see :class:`bulkcancel._pacer.KeyPacer`)."""

    ceiling: float
    rate: float = 0.0
    throttle_budget: float = 120.0
    hint_cap: float = 60.0
    state: PacerState = PacerState.ACTIVE
    next_free: float = 0.0
    #: turns granted and neither sent nor given back (the governor counts them: see went)
    granted: int = 0
    #: a waiter was held back by such a turn: wake it when that turn goes
    held: bool = False
    # evidence since the last decision
    decided_at: float = -math.inf
    fresh: int = 0
    fresh_throttled: int = 0
    fresh_first_sent: float = math.inf
    fresh_last_sent: float = -math.inf
    #: the learned share of background 429s that does not grow with the rate
    noise: float = 0.0
    #: answers, and refusals among them, of the decisions held clean since a background was
    #: learned: its share measured over many answers, not one test's few
    noise_seen: int = 0
    noise_refused: int = 0
    #: accepts in a row up to the latest answer; the longest such run of this stretch of
    #: answers and of the one before; answers so far in this stretch (see _plausible_noise)
    accept_run: int = 0
    longest_run: int = 0
    longest_run_before: int = 0
    stretch_answers: int = 0
    #: ``decided_at`` of the decision that suspected a weak wall at a steady rate (the next
    #: decision confirms it or clears it)
    suspected_at: float = -math.inf
    #: (share, rate, accepted rate) before a cut that the next decision must confirm
    checking: tuple[float, float, float] | None = None
    #: how many fresh answers that share was measured on
    checked_on: int = 0
    #: ... the share from the first refusal among them on, and the requests per second
    #: they were sent at
    checked_onset: float = 0.0
    checked_sent: float = 0.0
    #: that cut landed on a spotless rate (a burst-1 bucket's jittered wall, see _cut), not on
    #: what the server accepted
    landed_clean: bool = False
    #: the throttle share that made slow start double to test it (wall or background?)
    testing: tuple[float, float] | None = None  # (share, sent per second)
    #: (rate, estimate, walls) before the first cut since the last growth
    before_cuts: tuple[float, float, int] | None = None
    #: what the server accepted per second at the last confirmed wall: the quota, roughly
    estimate: float = math.inf
    #: requests per second a per-minute quota value from ErrorInfo allows
    limit: float = math.inf
    #: the next additive probe above the measured quota, as a share of the rate
    step: float = PROBE_STEP
    walls: int = 0
    #: when the rate was last cut: requests granted before it and not yet sent ask again
    cut_at: float = -math.inf
    # parking
    parked_at: float = 0.0
    parked_for: float = 0.0  # how long the last park lasted, to its resume
    probe_at: float = 0.0
    probe_gap: float = PROBE_BASE
    probe_out: bool = False
    last_failed_probe: float = 0.0
    #: the first sure wall met at a stated limit parked the key (see _cut); later ones cut
    limit_parked: bool = False
    #: a wall parked the key before the last window's budget came through again: the park's
    #: first probe goes before its aim at the next turn (cleared by that probe's answer)
    short_of_budget: bool = False
    #: the window boundary a park's probes are aimed at (inf: none predicted)
    aimed_at: float = math.inf
    resume_rate: float = MIN_RATE
    #: what the server accepted per second when the last wall began (its first throttle
    #: after a quiet second, or after a clean decision), before any cut it caused; measured
    #: on 16 accepts or more in the second before it (4 once the key is a second old: a slow
    #: key's wall after a second of 10 accepts is a spent window's too), or over what a key
    #: that resumed at its burst was let through since (16 or more); a throttle with fewer
    #: leaves it as it was (0 until a first measure)
    burst: float = 0.0
    last_throttle: float = -math.inf
    #: the last decision was clean (a growth, or 429s judged background): the next throttle
    #: may be a wall's first, the accepted rate then its burst (with a background share, a
    #: second without a throttle never comes)
    clean_since: bool = False
    #: False once a resume at the burst found no budget: the key resumes at its limit
    windowed: bool = True
    #: the key last resumed at its burst (counted from ``resumed_total``), and met no wall since
    at_burst: bool = False
    accepted_total: int = 0
    #: requests this pacer sent in all, and that count at its last resume
    sent_total: int = 0
    resumed_sent: int = 0
    #: when the key first met a wall (a cut or a park), and ``accepted_total`` then
    first_wall: tuple[float, int] | None = None
    #: where each resume put the window's boundary (the last four)
    resumes: list[float] = field(default_factory=list)
    #: the spans known to hold a window's boundary: (last failed probe or park, resume)
    turns: list[tuple[float, float]] = field(default_factory=list)
    #: learned length of a fixed quota window (see _windows), or the stated one's
    period: float | None = None
    #: how wide the span is where the last turn of that window may have been (inf: unknown)
    turn_width: float = math.inf
    #: windows in a row parked on their budget sent, before any refusal (see _budget_spent)
    early_parks: int = 0
    #: a request sent since the last resume was refused
    refused_since_resume: bool = False
    #: the pacer that took over this one's key (one quota shared by several keys)
    merged_into: Self | None = None
    #: keys whose pacers this one absorbed (see absorb); two or more: their requests
    #: interleave in its answers (see :attr:`interleaved`)
    absorbed: int = 0
    #: when this pacer first sent a request (None: never)
    born: float | None = None
    sends: deque[float] = field(default_factory=deque)
    #: stretches (start, end) when turns went unclaimed, nothing waiting to send (_fresh_rate)
    idle: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=_IDLE_KEPT))
    accepts: deque[float] = field(default_factory=deque)
    #: the fresh answers themselves, (sent at, throttled): their spacing tells a burst-1 bucket
    fresh_answers: list[tuple[float, bool]] = field(default_factory=list)
    #: slow start's last doubling (no background known) was decided at ``decided_at`` on
    #: answers to what was sent from this time on: answers to requests sent in between that
    #: arrive after it are late news of the rate before (inf: none; see _late_news)
    late_from: float = math.inf
    #: ... those answers, the doubling's own first: (sent at, throttled)
    late_answers: list[tuple[float, bool]] = field(default_factory=list)
    #: what the key sent per second over its last clean decision since the last wall (0: none)
    clean_rate: float = 0.0
    #: a burst-1 bucket's quota, bisected (see _spaced_wall)
    spacing: Spacing | None = None
    #: spacing walls met: from the second on, a key holds at a close bound
    spaced: int = 0
    #: when the last decision put the rate on a new step of its own: a growth, or a spacing
    #: wall's landing on the last spotless rate (a wall in the next decision is that step's)
    stepped_at: float = -math.inf
    #: the rate that step left (a probe past a known quota refused at once goes back there)
    stepped_from: float = 0.0
    #: when the key last resumed from a park, and ``accepted_total`` then
    resumed_at: float = -math.inf
    resumed_total: int = 0
    #: what the key was let through from its last resume (or its start) to the park after it:
    #: a fixed window's budget, where the walls are windows
    window_budget: int = 0
    #: no other key of its project is paced apart (the governor says): a share that stays put
    #: when the rate changes cannot be another key's traffic on a shared quota
    alone: bool = True
    #: the share of recent answers refused (a moving average over about four answers): a key
    #: starved beside another on one quota (see :meth:`KeyPacer.peer_left`)
    refused_lately: float = 0.0
    #: the governor found this key's work done (nothing sent for four turns, nobody waiting):
    #: its project's other keys were sent back to slow start once for it
    finished: bool = False
    #: when the governor may next look at this key's project for finished keys
    peers_checked_at: float = -math.inf
    #: another key of the project finished while this one was parked or judging a cut: its
    #: return to slow start (:meth:`KeyPacer.peer_left`) is owed, and paid once that is over
    peer_gone: bool = False

    def __post_init__(self) -> None:
        if self.rate <= 0:
            # Slow start: half the ceiling, doubling after each clean decision until the first
            # wall, so a run told more than the quota does not open with a wall of 429s.
            self.rate = max(MIN_RATE, self.ceiling * _START_SHARE)

    @property
    def _held_at_limit(self) -> bool:
        """The key sends at its stated limit's cap (98% of it), not under it."""
        cap = self._cap()
        return cap < math.inf and self.rate >= cap * 0.999

    def _no_budget_back(self, now: float) -> bool:
        """The key resumed from a park and meets a wall in its first decision since, within
        a second of that park's start, after a burst (the wall began after a second of 16 or
        more accepts: a window's or a bucket's budget spent)."""
        return (
            self.resumed_at == self.decided_at
            and now - self.parked_at <= HISTORY
            and self.burst > 0
        )

    def _budget_back(self, now: float) -> float:
        """What a key that found no budget back at its resume works at: what came back since
        the park began (a bucket's refill), or what the key has been let through since its
        first wall when that is more and the wall two seconds old. A sliding window gives back
        what the sends of a window ago spent: after a short park, next to nothing (the echo of
        the park a window before), and read as a bucket's refill that cut three regions of 62/s
        to 10/s together."""
        since = self._accepted_since(self.parked_at, now)
        walled = self._since_first_wall(now, 2 * HISTORY)
        return since if walled is None else max(since, walled)

    def _since_first_wall(self, now: float, age: float) -> float | None:
        """Requests per second accepted since this pacer's first wall, once that wall is
        ``age`` seconds old (else None)."""
        if self.first_wall is None or now - self.first_wall[0] < age:
            return None
        at, accepted = self.first_wall
        return (self.accepted_total - accepted) / (now - at)

    def _accepted_since(self, start: float, now: float) -> float:
        """Requests per second accepted from ``start`` (at most a second ago) to ``now``."""
        return self._accepts_since(start, now) / max(now - start, 0.1)

    def _accepts_since(self, start: float, now: float) -> int:
        """Requests accepted from ``start`` (at most a second ago) to ``now``."""
        trim_history(self.accepts, now)
        return sum(1 for at in self.accepts if at >= start)

    def _since_onset(self) -> list[bool]:
        """The fresh answers in send order from the first refusal on (True: refused)."""
        marks = [throttled for _, throttled in sorted(self.fresh_answers)]
        return marks[marks.index(True) :] if True in marks else []

    def state_limit(self, per_second: float) -> None:
        """A quota value stated in requests per second (``inf``: none known), by this pacer's
        own throttle or by one another pacer received (see
        :meth:`bulkcancel._sharing.QuotaSharing.told`): the rate is capped at it."""
        self.limit = per_second
        self.rate = max(MIN_RATE, min(self.rate, self._cap()))

    def _cap(self) -> float:
        """The stated per-minute limit as a ceiling on the rate (98% of it); none when none
        is stated, or when it is set aside (:attr:`_limit_set_aside`) and the shares decide."""
        if self.limit == math.inf or self._limit_set_aside:
            return math.inf
        return self.limit * LIMIT_SHARE

    @property
    def _limit_set_aside(self) -> bool:
        """A per-minute limit is stated, and the server let through more than 1.5x it when the
        last wall began (over at least 16 accepts): it is an average over a window (or a
        minute's bucket), not a spacing. (False when none is stated.)"""
        return self.windowed and self.burst > _WINDOW_BURST * self.limit

    @property
    def interleaved(self) -> bool:
        """This pacer took over two keys or more (a project's one quota): their requests
        interleave in its answers, and one key's lull or spent window among the others'
        accepts is no pattern of the quota's. (Over one key, it paces what that key's own
        pacer paced.)"""
        return self.absorbed >= 2

    @property
    def walled(self) -> bool:
        """The key met a wall since it started: a cut or a park, judged or not."""
        return self.cut_at > -math.inf or bool(self.resumes)

    @property
    def _slow_start(self) -> bool:
        """No wall met and no limit known yet: the rate doubles per clean decision."""
        return self.walls == 0 and self.limit == math.inf and self.estimate == math.inf

    def _seen_a_second(self, now: float) -> bool:
        """This pacer has sent for a second or more: its accepts over the last second are a
        second's worth (a young pacer's count what a burst let through at start-up)."""
        return self.born is not None and now - self.born >= HISTORY

    def accepted_rate(self, now: float) -> float:
        """Requests per second accepted lately: over the last second, or over the time since
        this pacer's first send when that is shorter (a pacer that just took over a key)."""
        trim_history(self.accepts, now)
        seen = now - self.born if self.born is not None else 0.0
        return len(self.accepts) / max(min(HISTORY, seen), 0.1)

    def _rate_since_resume(self, now: float) -> float:
        """Requests per second accepted since the key resumed, when that was under a second
        ago and 16 or more were: the server's pace since the park, which the last second's count
        dilutes with the park's own silence (0 otherwise). A sliding window of 6 s at 20/s, spent
        at 100/s, gives its budget back at that pace: its first refusal 0.2 s after a resume
        (the echo of a send 6 s before) read 19/s let through, under 1.5x the stated limit, and
        held the key at 20/s for the rest of the run (1.24x the floor)."""
        since = now - self.resumed_at
        if since >= HISTORY:
            return 0.0
        accepted = self._accepts_since(self.resumed_at, now)
        return accepted / max(since, 0.1) if accepted >= MIN_SAMPLES else 0.0

    def sustained_rate(self, now: float) -> float:
        """Requests per second accepted since this pacer's first wall, once that is a second
        old, else since its first send (over the last second, :meth:`accepted_rate`, while the
        pacer is younger than a second): what the key sustains apart, for a merge's trial.
        Counted from the first send it held the burst a bucket saves before a run (a minute's
        bucket of 15/s shared by two regions: 23/s four seconds in, where 15/s merged looked
        like separate quotas held back, and the merge was undone: 27.5% of 429s, 18.3% kept)."""
        if self.born is None or not self._seen_a_second(now):
            return self.accepted_rate(now)
        walled = self._since_first_wall(now, HISTORY)
        return self.accepted_total / (now - self.born) if walled is None else walled

    def current(self) -> Self:
        """The pacer now in charge of this one's key: itself, or the one that absorbed it."""
        pacer = self
        while pacer.merged_into is not None:
            pacer = pacer.merged_into
        return pacer

    def _fresh_rate(self) -> float:
        """Requests per second the fresh evidence was sent at: every request this key sent
        in the span of the fresh answers' sends, answered yet or not, over that span. Answers
        come back out of order over a real network, and the first eight to arrive are a
        scatter of what went out: counted alone they said 70/s where 200/s was sent, and a
        cut landed at a third of what the server accepted (a 50/s bucket behind 0.2 s
        answers with jitter, simulated: 1.48x -> 1.08x). (Sends are remembered for a second:
        the answers' own count is the least.) The span leaves out the key's idle stretches
        (turns unclaimed, nothing waiting: see :meth:`KeyPacer.reserve`), never more than
        seven eighths of it: the rate the key sent at is its rate while it had something to
        send, and what the server accepted is what it accepted then. (A bucket's tokens saved
        while the key was idle make that read high, and the next decision cuts again; counted,
        the idle time read what the key sent, not what the server would take: a quarter of it,
        in the case in :mod:`bulkcancel._pacer`'s docstring.)"""
        first, last = self.fresh_first_sent, self.fresh_last_sent
        span = last - first
        if self.fresh < 2 or span <= 0:
            return self.rate
        sent = 0
        for at in reversed(self.sends):  # (in send order: only the span and what came after)
            if at < first:
                break
            sent += at <= last
        idle = sum(max(0.0, min(end, last) - max(start, first)) for start, end in self.idle)
        return (max(self.fresh, sent) - 1) / max(span - idle, span / 8)

    def _new_epoch(self, now: float) -> None:
        self.decided_at = now
        self.late_from, self.late_answers = math.inf, []
        self.fresh = self.fresh_throttled = 0
        self.fresh_answers.clear()
        self.fresh_first_sent, self.fresh_last_sent = math.inf, -math.inf

    def _wall_met(self, now: float) -> None:
        """A cut or a park: if the key last resumed at its burst and that found next to no
        budget, it was not a window that turned but a bucket refilling at the stated rate:
        from now on the stated limit caps this key. The first wall is remembered (see
        :meth:`sustained_rate`)."""
        if self.at_burst and self.accepted_total - self.resumed_total < WINDOW_BUDGET:
            self.windowed = False
        self.at_burst = False
        if self.first_wall is None:
            self.first_wall = (now, self.accepted_total)


def trim_history(times: deque[float], now: float) -> None:
    while times and times[0] <= now - HISTORY:
        times.popleft()
