"""A token bucket that saves no burst (a burst-1 bucket): what its spacing says of its quota.

A token bucket that saves no burst is empty after each accept:
sent to evenly a little over its quota it accepts every other request (every k-th further over),
so what it accepted at a wall is about half the quota, however close the send rate was; a cut to
95% of that lands at half the quota, and growing back over it halves it again (a sawtooth at
~1.6x the floor, at every quota). Its signature is regular: in send order never two accepts in a
row, every accept followed by the same number of refusals, and the gaps bound the quota: an
accept ``g`` after the one before says it is at least ``1/g``, a refusal ``g`` after the last
accept that it is under ``1/g`` (for any bucket). Such a wall (8 answers suffice, 40% refused;
never the wall that ends slow start, when all keys meet walls at once and the requests of keys
sharing one quota interleave as regularly; never on a pacer that took over two keys or more, whose
requests interleave too: three regions' fixed windows merged on trial, one spent, read so,
held them to a third of one region's quota; never on a key held at its stated limit, which
such a bucket would not refuse) needs no judging: the key lands on the last rate it
sent at without a single refusal, if that lies within the bounds (a burst-1 bucket hides no
overshoot, so spotless there means under the quota), else at 95% of the low bound, and climbs
towards the high bound by 15%, doubling per spotless decision, never past the geometric middle;
each further spacing wall narrows the range (the key lands on its spotless rate again), until
the bounds are within 10%. Then, after a second spacing wall, the key holds at the low bound for
256 accepts before probing again (one short wall per 256 accepts); after one only it grows as
after any wall (a spacing seen once may be two keys' requests interleaved on one quota, which
must not hold a key under its share), unless it is alone in its project: then it holds after
the first (the second wall cost four refusals, 12.3% -> 9.1% of a 100-name run at 10/s; real,
11.6% -> 8.5%). A refusal while climbing that is no spacing wall ends the bisection at the last
spotless rate; a wall that is not a spacing while the key bisects (a bigger bucket, sent to at
exactly twice its quota, looks the same once; its burst then hides the climb's overshoot) lands
under what the spacing measured; once it holds, a wall is cut as any other (a bucket of a token
and a bit hides a hair of overshoot at the held rate: landing at the accepts' spacing halved
the key). The walls of a bisection are its own probes and do not set ``cut_at``, which the
governor reads for coinciding walls: keys with quotas of their own probe in lockstep. Timing
jitter (a few milliseconds on a real network) blurs the signature near the quota: some gaps
shrink under the spacing, so the refusals come irregularly, yet the bucket still accepts about
60% of what was sent. So a wall met in the first decision after the key's
own last step (a growth, or a spacing wall's landing on a spotless rate), at most 25% above a
spotless rate and accepting under 80% of it, lands at 95% of the spotless rate, not of what was
accepted (nor under what a spacing measured). A drained burst accepts about its quota, close to
any spotless rate it hid, so it is cut as any wall; and only the key's own step counts, so a key
whose share of one quota shrank because another key grew is cut as any wall too. A landing that
leaves a fifth or more refused did not clear the wall (the spotless rate was a small burst's,
spent within its decision), and is cut to what was accepted, never judged a background that
held.

Pure: :func:`spacing_bounds` reads a decision's answers; :class:`bulkcancel._pacer.KeyPacer`
keeps the :class:`Spacing` it learned and climbs between its bounds.
"""

from __future__ import annotations

import math
from typing import NamedTuple

_SPACED_ACCEPTS = 3  # accepts, none back to back, that show a burst-1 bucket's spacing
_SPACING_DONE = 1.1  # a spacing bound this tight is not bisected further


class Spacing(NamedTuple):
    """What a burst-1 bucket's spacing said of its quota: it lies in ``[low, high)``."""

    low: float  # a rate sent at without a refusal, or what the accepts' spacing allowed
    high: float  # the spacing it refused
    measured: float  # what the accepts' spacing alone allowed (clean rates not counted)
    since: int  # ``accepted_total`` when learned: forgotten after _SPACING_ACCEPTS more

    @property
    def bisecting(self) -> bool:
        """The bounds are still wider than ``_SPACING_DONE``: the key climbs between them."""
        return self.high > _SPACING_DONE * self.low


def spacing_bounds(answers: list[tuple[float, bool]]) -> tuple[float, float] | None:
    """The quota of a burst-1 bucket sent to faster than it refills, or None, from a
    decision's ``answers`` (sent at, throttled).

        Such a bucket holds one token: after an accept it is empty, so the next request is
        accepted only if it comes at least ``1/quota`` later. Sent to evenly a little over its
        quota it accepts every other request (every k-th, further over), so its accepted rate
        is half the send rate, however close the send rate was. Its signature, in send order:
        never two requests in a row accepted, every accept followed by the same number of
        refusals (one quota shared with other keys, or a bigger bucket, refuses
        less regularly), at least three accepts. Then each accept that came ``g`` after the one
        before says the quota is at least ``1/g``, and each refusal ``g`` after the last accept
        (any bucket is empty or better after an accept) that it is under ``1/g``:
        ``(low, high)``.
    """
    previous = -math.inf
    accepts, run, runs = 0, 0, set()
    shortest, longest = math.inf, 0.0
    for sent_at, throttled in sorted(answers):
        if throttled:
            run += 1
            if accepts:
                longest = max(longest, sent_at - previous)
            continue
        if accepts and run == 0:
            return None  # two in a row accepted: not a burst-1 bucket's spacing
        if accepts:
            runs.add(run)
            shortest = min(shortest, sent_at - previous)
        previous, accepts, run = sent_at, accepts + 1, 0
    if accepts < _SPACED_ACCEPTS or len(runs) != 1 or run > max(runs):
        return None
    if not 0.0 < longest < shortest:
        return None
    return 1.0 / shortest, 1.0 / longest
