"""What the other keys of a project do to a quota key's pacer: a peer that finished its work
(:meth:`Peers.peer_left`: a wall measured beside it is stale), and a merge that hands another
key's pacer over to this one (:meth:`Peers.absorb`: one quota shared by several keys). Which
keys share a quota, and when, is :mod:`bulkcancel._sharing`'s to tell; this is what the pacer
does with it. Pure: no I/O and no clock of its own (the time is passed in, ``now``).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Self

from bulkcancel._key_record import (
    CHECK_SAMPLES,
    HISTORY,
    MIN_RATE,
    MIN_SAMPLES,
    PROBE_STEP,
    SURE_WALL,
    KeyRecord,
    PacerState,
    trim_history,
)

#: a key whose peer finished starts slow start from at least this part of its share of the
#: finished key's rate (see Peers.peer_left)
_FREED_SHARE = 0.5


class Peers(KeyRecord):
    """A key's pacer beside the other keys of its project: a peer gone, a peer's pacer taken
    over."""

    __slots__ = ()

    def peer_left(self, now: float, freed: float = 0.0) -> None:
        """Another key of this project finished its work: a quota it shared with this key is
        all this key's now, so a wall this key measured beside it is stale. Back to slow start
        from the current rate, or from half its share of the finished key's if that is more
        (see ``freed``), doubling per clean decision, never past twice what it sent lately, up
        to the next wall: one wall's few 429s where the quotas were separate after all. Not
        held by a stated limit, or still in slow start (but for a cut made there and judged
        seconds on, dropped as below: confirmed after the peer left, its rate became the key's
        quota, 4/s for 45 s in one sweep draw); while parked, or judging a cut due within a
        second, owed until the first answer after (ignored there, a key cut on a chance cluster
        of background 429s beside a peer, and confirmed, crept up by 5% steps for seconds after
        the peer left). A judgement further off (a slow key's 32 answers: 32 s at
        the 1/s a key beside a finished peer was cut to) is dropped for it.

        ``freed``: this key's share of the finished key's rate. A key starved beside it (most
        of its recent answers refused, at a rate under that share: the other key took what the
        quota gave) starts from there, in slow start or not: doubling from under a request a
        second waits four answers, seconds, per step. Any other key starts from half that share
        if it was slower: two regions on one bucket of 50/s, one cut to 2/s at its first walls
        (the other, over the quota alone, took each token as it came) and every answer accepted
        there, the other taking the quota; when that one finished, slow start from 2.2/s took 5 s
        to reach the quota, doubling per four answers and never past twice what it sent in the
        last second (real, about one round in five: 1.36x the floor). Where the quotas were
        separate, the jump costs a few 429s more than slow start from its own rate (a region of
        5/s beside a freed 45/s: 12 refused in the next ten seconds, 10 before); a jump to the
        whole share cost a wall of them, and a quarter of it left draws of separate quotas
        that differ worse in the sweeps."""
        # (past 32 answers, a cut still judged waits for 64: a lull's, see _decide)
        due = CHECK_SAMPLES if self.fresh < CHECK_SAMPLES else 2 * CHECK_SAMPLES
        judging = self.checking is not None and due - self.fresh <= self.rate * HISTORY
        if self.state is not PacerState.ACTIVE or judging:
            self.peer_gone = True
            return
        self.peer_gone = False
        starved = freed > self.rate and self.refused_lately >= SURE_WALL
        if self.limit < math.inf or (self._slow_start and self.checking is None and not starved):
            return  # (a cut judged before any wall is confirmed would end slow start stale)
        self.checking = None
        self.walls, self.estimate = 0, math.inf
        self.spacing, self.step, self.before_cuts = None, PROBE_STEP, None
        if starved:
            self.rate = min(self.ceiling, freed)
        else:
            self.rate = max(self.rate, min(self.ceiling, freed * _FREED_SHARE))
        self._new_epoch(now)

    def absorb(self, other: Self, now: float, *, first: bool) -> None:
        """Take over the pacing of ``other``'s key (one quota shared by several keys): its
        history and what it learned join this pacer's; the rate is the higher of the two
        (``first``: this pacer has paced nothing yet, so ``other``'s), never above a known
        limit unless the keys together let through more than 1.5x it (see ``_cap``), which is
        what the merged pacer's burst becomes. Its estimate of the quota is the sum of the
        keys', never above what they were let through together over the last second (16
        accepts or more). The merge is a decision: answers to requests sent before it count as
        history (accepts, sends), not toward the next decision."""
        self.sends = deque(sorted([*self.sends, *other.sends]))
        self.accepts = deque(sorted([*self.accepts, *other.accepts]))
        trim_history(self.sends, now)
        trim_history(self.accepts, now)
        if other.born is not None:
            self.born = other.born if self.born is None else min(self.born, other.born)
        # What the keys were let through together over the last second: the shared quota's
        # own measure (None: too few accepts to tell).
        together = self.accepted_rate(now) if len(self.accepts) >= MIN_SAMPLES else None
        if together is not None:
            # It is the shared quota's burst (each key's own, or this pacer's measured before
            # the other key joined, is a part of it): a window's budget, spent by two keys at
            # 150/s each, was taken for a 123/s spacing.
            self.burst = max(self.burst, other.burst, together)
        self.limit = min(self.limit, other.limit)
        self.noise = min(self.noise, other.noise)  # per-key verdicts were confounded
        # Not the sum: keys that each ramped up alone have just overrun the quota together.
        rate = other.rate if first else max(self.rate, other.rate)
        if other.estimate < math.inf:
            # (A pacer that has measured nothing yet, or whose walls were undone as background,
            # adds nothing: the sum must not stay unknown because one key's part is.)
            known = not first and self.estimate < math.inf
            self.estimate = self.estimate + other.estimate if known else other.estimate
            if known and together is not None:
                # Each key measured its share when it met its own wall, one maybe while the
                # other was starved: the sum overstates the one quota (21 + 50 for 50/s, and
                # the merged pacer went back to 95% of that at once, learned its refusals as
                # background, 16% of 429s).
                self.estimate = min(self.estimate, together)
            self.walls = max(self.walls, other.walls)
        self.rate = max(MIN_RATE, min(self.ceiling, rate, self._cap()))
        other.merged_into = self
        self.absorbed += 1
        self.spacing, self.clean_rate = None, 0.0  # (one key's spacing: not the quota's)
        # The merge is a decision: answers to requests sent before it were sent at the keys'
        # own rates, and a few of one key's would read as the whole quota's acceptance (a cut
        # to a fraction of a stated limit, then seconds of growing back).
        self._new_epoch(now)
