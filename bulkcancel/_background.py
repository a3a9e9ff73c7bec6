"""What a key's pacer knows of background 429s: refusals that do not grow with the rate.

Overload elsewhere and other limits refuse a share of requests at any rate; a quota's wall
refuses more the faster a key sends. :class:`Background` keeps the share a key learned (see
:mod:`bulkcancel._pacer`'s docstring, "Shares, not single 429s" and "A wall grows with the send
rate, noise does not": how it is learned), measures it again over every clean decision, bounds
it by the longest run of accepts it shows, and says when a share over the margin must wait for
a second decision, and when a share after a cut may still be background's.
:func:`noise_margin` is how far above the background a share must be to suspect a wall;
:func:`fell_beyond_chance`, whether a share fell beyond chance. Pure: no I/O and no clock of
its own (the time is passed in, ``now``).
"""

from __future__ import annotations

import math

from bulkcancel._key_record import (
    CLEAN_SAMPLES,
    MIN_SAMPLES,
    SURE_WALL,
    KeyRecord,
)

MAX_NOISE = 0.15  # the most background learned from a share that held after a cut
_RUN_STRETCH = 1024  # answers: the longest run of accepts is kept for this stretch and the last
_RUN_CHANCE = 0.01  # ... and a background that shows such a run rarer than this is too high
_NOISE_STEP = 0.005  # ... and is lowered by this until it is not
_FELL_Z = 2.0  # a share fell beyond chance by this many standard errors (3/16, 1/32: chance)


class Background(KeyRecord):
    """A key's pacer that learns its background share of 429s
    (:class:`bulkcancel._pacer.KeyPacer` decides with it)."""

    __slots__ = ()

    @property
    def _chancy(self) -> bool:
        """A background share is known on a key alone in its project: a share over the margin
        may be its chance cluster, judged on whole decisions, and measured again on every clean
        one. (Beside another key of one quota, a share that rises may be that key's growth: it
        is judged at every answer, and a share learned beside it is not pooled up.)"""
        return self.noise > 0 and self.alone

    def _suspect(self, now: float, share: float) -> bool:
        """A wall at a rate held for a decision or more, on a key with a background known, or,
        with a share under 40%, at the run's ceiling without a wall met yet or at or under a
        stated per-minute limit, needs a second decision over the margin: suspect it (a decision
        that changes nothing) and say True, or say False when it must be cut now. A background's
        chance clusters cross the margin once in a few dozen decisions (with none learned yet, 2 of
        16 does: a 5% background's chance one decision in five), and a cut on one, judged against
        the share that made it (which, picked for being high, falls back after any cut), may be
        confirmed as a wall and costs seconds of growing back. So for keys beside others of their
        project too (the fault mix's two regions: simulated at 5-12% of 429s, 40 seeds each, runs
        over 1.2x the floor went from 52 to 25 of 720), where the cost is one decision's 429s more
        when a shared quota's wall comes from another key's growth. A wall the key's own step (or
        resume) ran into is cut at once."""
        unwalled = self.walls == 0 and self.rate >= self.ceiling and share < SURE_WALL
        stated = self.limit < math.inf and self.rate <= self.limit and share < SURE_WALL
        if (
            not (self.noise > 0 or unwalled or stated)
            or self.suspected_at == self.decided_at
            or self.stepped_at >= self.decided_at
            or self.resumed_at >= self.decided_at
        ):
            return False
        self._new_epoch(now)
        self.suspected_at = now
        return True

    def _learn_noise(self, n: int, refused: int) -> None:
        """Once a background is learned (``_chancy``), every decision held clean measures it
        again: the key's background share becomes their pooled share (over 64 answers or more,
        the last 512 or so weighing most), which raises it to 15% at most (above that only a
        test of a faster rate does). A share learned on one test's 16 or 32 answers is rough,
        and one learned low sets a margin a background crosses every few decisions. (Decisions
        over the margin are left out: a wall among them would raise the background it is
        judged against.)"""
        if not self._chancy:
            return
        self.noise_seen += n
        self.noise_refused += refused
        if self.noise_seen >= CLEAN_SAMPLES:
            pooled = self.noise_refused / self.noise_seen
            self.noise = self._plausible_noise(min(max(MAX_NOISE, self.noise), pooled))
        if self.noise_seen > 512:
            self.noise_seen //= 2
            self.noise_refused //= 2

    def _count_run(self, throttled: bool) -> None:
        """One answer extends the run of accepts in a row, or ends it."""
        self.accept_run = 0 if throttled else self.accept_run + 1
        self.stretch_answers += 1
        if self.stretch_answers >= _RUN_STRETCH:
            self.longest_run_before, self.longest_run = self.longest_run, 0
            self.stretch_answers = 0
        self.longest_run = max(self.longest_run, self.accept_run)

    def _plausible_noise(self, share: float) -> float:
        """The highest background share, ``share`` at most (in half-point steps), that shows
        the longest run of accepts of the last two stretches of answers one time in a hundred
        or more (about ``answers * b * (1 - b) ** run`` such runs come in that many answers at a
        background ``b``). A background is refused at any rate, so a run of accepts bounds it,
        where a share that held after a cut does not: a minute's bucket refilling at 4.7/s,
        400 answers clean while its burst lasted, then a cut that landed over the refill rate,
        judged 4 of 32 refused; learned as a background of 12.5%, later raised to 15%, the key
        took a quarter of each decision's answers refused for clean and ran at 17% of 429s
        (8% now: the background learned is 2%). At a real background of 10%, a run of 95
        accepts in 2,048 answers comes less than one time in a hundred."""
        run = max(self.longest_run, self.longest_run_before)
        answers = 2 * _RUN_STRETCH
        while share > _NOISE_STEP and answers * share * (1.0 - share) ** run < _RUN_CHANCE:
            share -= _NOISE_STEP
        return share

    def _may_hold(self) -> bool:
        """A high share that holds after a cut may be background here: the key is alone in
        its project, and the share before the cut was measured on 16 answers or more."""
        return self.alone and self.checked_on >= MIN_SAMPLES

    def _nearer_background(self, share: float, before: float) -> bool:
        """The share after a cut may be background's: no higher than before it (a cut is made
        on a share that came out high, so background's falls back, on average), or, if it rose,
        nearer what background predicts (the same share) than what a wall does (its accepted
        rate stays put, so at the cut rate its share falls to ``wall_share``), both counted
        from the wall's onset. A share that rose when the rate was cut says the one before was
        diluted: a minute's burst spent within the decision showed 7 of 16 refused, all of the
        last 8 but one, and at half the rate 20 of 32 (refilling at a fifth of the rate sent),
        within the binomial margin of 7 in 16, but a wall."""
        if share <= before:
            return True
        onset, sent = self.checked_onset, self.checked_sent
        wall_share = 1 - (1 - onset) * sent / max(self._fresh_rate(), 1e-9)
        return share >= (onset + wall_share) / 2


def noise_margin(samples: int, noise: float) -> float:
    """How far above the background a throttle share must be to suspect a wall: 2.5 standard
    deviations of a binomial share (never assuming a background below 1%), plus 3 points."""
    base = max(noise, 0.01)
    return 0.03 + 2.5 * math.sqrt(base * (1 - base) / samples)


def fell_beyond_chance(before: float, before_n: int, after: float, after_n: int) -> bool:
    """A throttle share fell beyond chance: two binomial shares, the later one at least two
    standard errors (of their pooled share) under the earlier. (Both counts are positive: a
    cut is made on 8 answers or more, and judged on 16 or more.)"""
    pooled = (before * before_n + after * after_n) / (before_n + after_n)
    error = math.sqrt(pooled * (1 - pooled) * (1 / before_n + 1 / after_n))
    return error == 0 or (before - after) / error >= _FELL_Z
