"""The adaptive pacer of one quota key: pure, every method takes ``now``.

Evidence: every attempt's answer is reported exactly once, as a *throttle* (429, 403
``rateLimitExceeded``) or as *capacity* (everything else: 2xx, 4xx, 5xx, resets). Only answers to
requests sent after the pacer's last decision count toward its next decision, so one decision is
never made twice on the same news (TCP's "one decrease per round trip"); the one exception is
slow start's doubling, which acted on no wall: the answers to what went out before it still show
one (see Growth after AWS's adaptive retry).

How a pacer tells a wall from noise, and what it borrowed:

* **Shares, not single 429s** (the SRE book's client-side throttling compares requests with
  accepts; gRPC's retry throttling keeps a token ratio, so scattered failures cost little while a
  sustained majority stops retries). A wall is suspected when, over at least 16 fresh answers, the
  throttle share exceeds the learned background share by a binomial margin (2.5 standard
  deviations plus 3 points, so few samples need a bigger share); 60% refused of as few as 8
  answers is a wall whatever a background of up to 15%. On a key alone in its project with a
  background known, chance clusters are expected, and four things keep them from passing for
  walls (simulated at 10-20% of 429s at random, 300-1,000 names, the worst of 8 seeds: 1.07-2.95x
  the floor before, 1.02-1.80x after): a share is judged on whole decisions of 16, 32, 48 or 64
  answers, not at every answer between (tested 48 times over, a share crosses its margin twice
  as often); at a rate held for a decision or more, a wall needs a second decision over the
  margin (one the key's own step or resume ran into is cut at once); the 8-answer rule is off
  (6 of 8 is a 20% background's chance once in 800, and 8 answers are a rough measure of what
  the server accepts); and the background share is measured again over every decision held
  clean (pooled over 64 answers or more), where one test's 16 or 32 answers had set it, often
  low. A share under 40% on a key at the run's ceiling that has met no wall also needs two
  decisions (2 of 16 crosses the margin there: a 5% background's chance one decision in
  five), and so does one on a key at or under a stated per-minute limit (the server said what
  it allows: cut at once, keys of fixed windows were held under their limits on a chance
  cluster, confirmed when the window turned). The two-decision rules hold for a key beside other
  keys of its project too (the fault mix's two regions: a chance cluster cut and confirmed there
  held a key at a third of its pace for seconds), where they cost one decision's 429s more when a
  rising share is another key's growth on a shared quota; the other three (whole decisions, no
  8-answer walls, a re-measured background) do not (there they let learned shared quotas take 14%
  429s). An increase needs 64 clean fresh answers, or 16 and half a second, or (a slow key: after a
  park, or holding a small share of a quota) 4 answers without a single throttle and half a second,
  so recovery takes about the same time at 1 req/s as at 100.
* **A wall grows with the send rate, noise does not.** A suspected wall cuts the rate to 95% of what
  the server *accepted* (the share accepted times the rate sent, every request sent in the span of
  the answers' sends counted: answers come back out of order; stretches of that span when the key's
  turns went unclaimed, nothing waiting to send, left out: a listing's pages go one a round trip,
  and a decision holding two pages' answers and the cancels' that followed them at 150/s read
  21/s sent, and cut a bucket of 30/s behind 0.15 s answers to 7/s, 1.8x the floor for the run,
  1.1x now; the quota itself when we were over it;
  a wall of fewer than 16 answers, on a key a second old or more, to no less than what the last
  second accepted: 1 of 8 accepted is a rough measure, and a slow key cut too deep waits long for
  its next decision; on a key alone in its project, a wall that began within the decision, after
  more accepts in a row than a background of its share shows one time in twenty, from its first
  refusal on: the accepts before it were a burst, and counted they landed a minute's bucket of 10/s
  at 21/s; over 252 short runs at 5-20/s, runs over the 429 targets 99 -> 89, over 1.2x the floor 62
  -> 60, the sweeps of faster keys within a draw or two); 32 answers later the cut is judged (on 16
  when 40% are still refused: a wall the cut did not clear; see below for when the share must also
  have moved; and a cut on 40% or more, four seconds and four answers after it, however few: at
  0.5/s the 32 took a minute, the key growing not at all meanwhile, 3.6x the floor for three regions
  on one bucket of 4.6/s, 2.6x at 9/s; over 600 random slow personalities, 4-40/s, mean 1.139x ->
  1.118x, runs over 2x 13 -> 9, over 1.2x 97 -> 95, over the 429 targets 99 -> 98): if the share
  neither fell (to under 40% of what it was; and, while the key has confirmed no wall yet, by two
  standard errors of the two shares: 3 of 16 refused, then 1 of 32, is how an 8% background that
  clustered before the cut looks a quarter of the time, and confirmed as a wall it held a key at the
  cut rate for the rest of a short run; and none of 32 refused after such a first cut on a share
  under 40% is judged with 32 more, as 2 of 16 at 8% then none of 32 is one time in fifteen, and
  none of 64 one in two hundred: in simulation, two regions with 5-12% of 429s, runs over 1.2x the
  floor 20 -> 11 of 720, the fault mix's worst of 40 draws 1.64x -> 1.39x) nor rose (and stayed
  under 40%), the 429s were background (overload, other limits), every cut since the last increase
  is undone and that share, at most 15%, becomes the key's background, which later decisions
  discount, but never more than the key's longest recent run of accepts allows (a background is
  refused at any rate: 300 accepts in a row rule out one of 12.5%; see ``_plausible_noise``). In
  slow start a small share is tested the other way, by doubling instead of cutting: behind a wall
  the accepted rate stays put and the share jumps, a background share stays the same, and the run
  loses no time at a cut rate. A background share costs one short test, not a spiral. A
  test that did not send faster (the key held under its rate by the run's ceiling, which its
  project's other regions share: three regions of 50/s each, told 200/s, each sends at 67/s whatever
  its rate; or by its requests in flight) tells nothing: the share is then cut as a wall, and the
  cut is judged as any other (bare 429s, those three regions drew 24% of refusals all run, tested
  again at every decision). A share of 40% or more that held within its binomial margin over 32
  answers after a cut (measured on 16 or more before it), if it rose at the cut rate only nearer to
  what background predicts than to a wall's share (both counted from the wall's onset: a rise says a
  burst spent within the decision diluted the share before), may be a high background too (20-40% of
  429s at random: confirming every such cut as a wall spiralled the rate down, 12-250x the floor):
  the key goes back to its rate before the cuts as a test (such a share is judged on 16 answers only
  if it moved, or rose nearer a wall's share), and a share that holds there is background, learned
  up to 60%. Only for a key alone in its project (the governor says; or the project's pacer of a
  quota ErrorInfo calls project-wide, once every key that sent has joined it): beside another
  key on one quota a share holds when the other key's rate falls as this one's rises.
* **Growth after AWS's adaptive retry** (CUBIC after a throttle, capped at twice the measured send
  rate): slow start doubles per clean decision (every 16 answers, or 4 and half a second since
  the last decision: at start-up, the first four) until the first wall. Behind a distant server
  the answers to what went out at the old rate meanwhile come back after a doubling, and a wall
  among them is acted on at once (eight from the first refusal on in send order, 40% of them
  refused, cut to what the answers after that refusal say the server accepts; five refused in a
  row after a burst of 16 accepts park the key; no background known): taken for news already
  acted on, they were ignored, and the wall waited a round trip more at twice the rate (a 50/s
  bucket told 200/s, 300 names, simulated at 0.2/0.3/0.5 s answers: 12.5/13.3/16.7% of 429s ->
  10.4/9.1/9.1%). After the first wall a clean decision returns to 95% of the measured quota at
  once and then probes by 5%, doubling the step per clean decision only once the rate is clean
  at 1.1x the old measurement (CUBIC's plateau, then its convex phase); the rate never grows
  past twice what the key actually sent lately, so an idle key does not bank a burst. A probe
  past a quota the key confirmed that meets a wall in its first decision (40% of 8 answers or
  more refused, no background known) is taken back at once, to 95% of the rate it stepped
  from or of what the answers say the server accepts, whichever is more: a bucket of one token
  refuses every other request past its quota, however small the overshoot, and judged on 16
  answers each probe cost eight refusals (a merged pacer probing one bucket of 10/s every
  five seconds, simulated for 40 s: 15% of its requests refused, 9% now).
  A doubling in slow start that meets a wall in its first decision accepting no more than
  about the spotless rate it doubled from (1.2x) says the quota lies between the two, not at
  what was accepted (a bucket of one token accepts every other request at up to twice its
  quota): the cut is made and judged as any other, and the climb back starts at 15%.
  We did not take CUBIC's cubic curve: a measured quota is a better target than a fitted one.
* **Parking.** When nearly everything is refused (90% of at least 8 fresh answers: a spent
  per-minute window, a minute's burst used up; or, when the wall began after a second of at least
  16 accepts (4 on a key a second old or more: a slow key's second holds few), every fresh answer
  from the first refusal on, five or more, in send order, however few the decision has while no
  background is known (a burst spent within the decision, whose accepts before it dilute the share,
  would otherwise be cut to a third of its pace first, ten more refusals; waiting for 8 answers
  when a decision had just begun cost three more; with a background of 15% a chance run of five in
  a decision's first seven answers parked a key that met no wall), 40% of the decision refused, or
  whatever its share when eight or more of its answers before the first refusal were accepted, on a
  pacer whose answers are one key's (its own, or its project's that one key joined: see
  :attr:`interleaved`; a burst spent at the decision's end, 3 of 16 refused, was cut
  on the 16 to three quarters of slow start's pace, and nine more were refused before the key
  parked: a minute's bucket of 5/s told 50/s, 50 names, 29% of the requests refused, 24% now); with
  no background known, such a decision waits for the fifth refusal rather than cutting on the first
  few, and an accept before it ends the wait; or, once the key was let through 8 or more between a
  resume (or its start) and the park after it, a window's budget, and three quarters of that came
  through again since its last resume, the last two fresh answers in send order refused, three with
  a background known: the next window spent. Windows of 1-3 s spent at 4-10x their pace cost ten
  refusals each or more, 15-25% of all requests; with the last two rules, runs over the 429 targets
  46 -> 29 of 580 random personalities, over 1.2x the floor 49 -> 49; budgets of 8 to 31 were left
  out until 252 short runs at 5-20/s showed windows of 20-30 paying five refusals each: over the
  targets 89 -> 83), the key parks: nothing is sent but one probe at a time (after 0.25 s, doubling
  to 1 s, so a window that turns is found within a second, at one 429 a second while parked; with a
  per-minute quota stated in ErrorInfo, at most 1/20 of its rate apart, never under 0.1 s: 0.4 s at
  50/s, probes costing about 5% of the quota; or after the server's hint, capped at ``hint_cap``).
  Requests granted before a park or a cut and still waiting for a slot go back to the queue. The
  first accepted probe resumes the key at the rate that worked: what was accepted in the second
  before the wall (over the part of it this pacer saw, and never under a quarter of the rate it
  parked at: a pacer that just took over a key has seen few accepts), or the per-minute limit from
  ErrorInfo when known, unless the server let through more than 1.5x that stated rate before the
  wall: then the rate is an average over a window, not a spacing, and a window that turned has its
  whole budget back, so the key spends it at the pace it was accepted at when the wall began, until
  the next wall parks it again (if that resume finds next to no budget, the key was a bucket
  refilling at the stated rate after all, and resumes at its limit from then on). Stated or not, a
  resume after a burst that meets a wall in its first decision, within a second of the park, found
  no budget back either (a bucket refilling, not a window that turned; when an accept came after
  the first refusal, a refill trickling through, this is decided at the third refusal, 60% of the
  answers or more, not at the eighth answer: 24% -> 18% of that 50-name run's requests refused; not
  on a pacer that took over two keys or more, where it cut three regions' sliding windows, merged in
  step, to a fifth of what they allowed together, for 12 s): the key parks again and resumes at
  (or, when one came through, is cut to) what the server accepted since the first park began (the
  tokens the park let it save, over the time they took: its refill rate), or what the key was let
  through since its first wall when that is more and the wall two seconds old (a sliding window
  gives back what the sends of a window ago spent, after a short park the echo of the park before
  it: next to nothing), a measured quota that ends slow start, not at the burst's pace again; with
  a limit stated, cut to it, as after any burst resume. Each resume leaves a span of time known to
  hold a window's boundary (from the last refused probe, or the park, to the accepted one); when a
  period puts a boundary in every one of the last six spans no wider than a quarter of it, three or
  more, half of them one window after the one before, and the longest such periods agree within 10%
  (``window_period``: until session 29, two like gaps between resumes, which probes a second apart
  never gave), the period is learned and the next probes are aimed at the predicted window
  boundary: just past the latest it can be when the spans tell it within 4% of a period, else 1% of
  a period apart from 2% before it to 5% past it, then twice as far apart each (a prediction a
  fifth of a window early, probed 1% apart for a whole period, cost 35 refusals in one park); a
  turn that an aimed park's first probe found is remembered 5% of a period before that probe when
  the spans cannot place it. With a per-minute limit stated, the period is known after one window:
  its budget (what the key was let through from its resume at the boundary to the wall) over the
  stated rate (2 s windows at 50/s, three in a run, were each found up to 0.4 s late by probes 1/20
  of the rate apart: 1.25-1.49x the floor; 1.07-1.09x now). A wall met before 97% of the last
  window's budget came through again since the turn may have spent no window at all (a chance run
  of background 429s; a sliding window, whose sends of a window ago have not all aged out): one
  probe goes first, at a park's first gap, and only its refusal aims the rest at the turn (a
  sliding window of 10 s at 220/s walled at 93% of its budget sat out the 7 s to the predicted
  turn, 1.65x the floor, 1.03x now; six such draws of the sweeps 1.18-1.65x -> 1.03-1.15x, the
  sweeps' runs over 1.2x the floor 206 -> 202, behind jitter 0.5 324 -> 317, over the 429 targets
  296 -> 297 and 399 -> 400). A key alone in its project (or a merged pacer, which paces its
  project's one quota) that knows the period parks as soon as it has sent the last window's budget
  again since the turn (answers still in flight), before any refusal, three windows in four (the
  fourth runs to its wall, so a budget that grew is seen): windows of 10 a second lost a third of
  their requests to the wall's refusals and the probes, a seventh now (counted in answers until
  session 40, behind a distant server the round trip's sends past the budget were refused: 3 s
  windows of 30 behind 0.1 s answers, 15% of requests, 6% now). A key that has not learned the
  period, met no quota (still in slow start, none stated) and parks window after window does the
  same, and probes a quarter second apart until the turn: behind a distant server every request in
  flight when the answers showed the wall was refused (3 s windows of 30/s told 300/s behind 0.15 s
  answers: 32-38% of 429s, 20-22% now; sweeps 216 / 43 / 332 -> 219 / 43 / 316, behind jitter 0.5
  324 / 96 / 430 -> 332 / 97 / 414: fewer 429s, a few short windows a little slower). Its first
  probe waits half as long as its last park lasted (Google's windows are a minute: probed from the
  park's start, 60 s windows of 10/s drew 12.9% of a run's requests in refusals, 8.6% so, the drain
  the same).
* **A burst-1 bucket's spacing** (:mod:`bulkcancel._spacing`). A token bucket that saves no
  burst accepts every other request sent a little over its quota, so a cut to 95% of what it
  accepted lands at half the quota; its regular signature bounds the quota from both sides, and
  the key climbs between the bounds instead of cutting (never on the wall that ends slow start,
  on a pacer that took over two keys or more, or on a key held at its stated limit).
* **Hints and budgets.** RetryInfo / ``Retry-After`` pause the request that received them (the
  client waits ``min(hint, hint_cap)``, or less if its key accepts another request meanwhile) and
  set the first probe of a park. A single hinted 429 among successes never stops the key. A key
  parked for ``throttle_budget`` seconds is *exhausted*: its waiting requests end at once (the
  client reports them as throttled errors) while the probes go on.
* **A per-minute limit value** in ErrorInfo (``quota_limit_value`` of a ``...PerMinute...`` limit)
  gives the quota at once: the rate is held at 98% of it, unless the server was seen to let through
  more than 1.5x it (a window's budget: see Parking). Then a wall that still accepts some after its
  first refusal (cut, not parked: a spent window refuses everything from there) is a bucket
  refilling at the stated rate: the key lands on the limit and is held there (cut on what a few
  answers after the burst accepted, a key of 10/s told 60/s was cut twice, 10-18% 429s in short
  runs). A window spent at the end of a decision shows only refusals after the first (taken for a
  bucket, 2-3 s windows were held to the average for the rest of a run, each run's last window
  spent at it: 1.25-1.5x the floor); it is cut as any wall, and parks at the next answers. The
  first wall of 40% or more refused that would cut a key held at its stated limit parks it instead,
  to resume at the limit: at the stated average nothing but a budget already spent refuses that
  much (a start-up burst spent a 2 s window of 10/s before the limit was known, and the cut on the
  refusals after, to 2.4/s, was confirmed: 2.9x the floor). Later ones are cut as any wall (a limit
  stated above what is enforced must not park the key window after window), and so is a first
  wall met well under the limit (stated 160/s, refused at 100/s: resumed at the limit, over the
  rate just refused, the first second of a 250-name run cost 30 refusals). 80 random short windows
  with stated limits: over 1.3x the floor 5 -> 3, mean 1.125x -> 1.094x. Answers to what was sent
  before the first limit stated lowered the rate are news acted on: behind a distant server (0.3 s
  answers) the refusals of slow start's sends, at twice the limit, arrived after the key was held
  at it, passed for that first wall, and parked the key half a second (1.11x -> 1.03x against the
  fake). A key held at its limit counts its next turn from a send that waited for a slot or the
  run's ceiling (a bucket of one token refuses a turn brought early by that wait).

Keys of one project that share a quota are merged into one pacer (:meth:`KeyPacer.absorb`, in
:mod:`bulkcancel._peers` with what a peer's finishing does; ``_sharing`` decides when); its
burst is what the keys accepted together (one key's share of a window's budget, 150/s of 300/s,
was taken for a 123/s limit's spacing), and so is the cap on its estimate of the quota (the
keys' estimates, each measured at its own wall, summed to 1.4x a quota of 50/s). A burst is
measured at a wall's first throttle after a quiet second, or after a clean decision: with a
background share of 429s a quiet second never comes, and a stated 40/s then held a key the
server let through at 190/s to 39/s, a fixed window's budgets spent at that pace; within a
second of a resume, over the time since the resume (counted over the last second, the park's
silence in it, a sliding window's echo 0.2 s after a resume at 100/s read 19/s, under 1.5x a
stated 20/s, and the limit held the key for the rest of the run: 1.24x the floor). A throttle
with too few accepts before it to measure a burst (a wall's later refusal whose start a
background 429 hid, one just after a resume, a chance 429 at a few a second) leaves the burst as
it was: set to 0, it turned a stated limit into a spacing, and a window of 60 a minute stated at
1/s, with 10% of background, was crept through at the limit (1.25-1.55x the floor). A key that
resumed at its burst measures it over what it was let through since. Known limits: the first
wall costs about ten 429s (slow start opens at half of ``--rate``), a large share of a short run
at a quota of a few requests per second; a minute's bucket with a stated limit costs one resume
at the burst's pace (about ten 429s, once per key) before the limit caps it; background and a
wall together can hide a small overshoot.
"""

from __future__ import annotations

import math

from bulkcancel._answers import QuotaInfo
from bulkcancel._background import MAX_NOISE, Background, fell_beyond_chance, noise_margin
from bulkcancel._key_record import (
    CHECK_SAMPLES,
    CLEAN_SAMPLES,
    HISTORY,
    MIN_RATE,
    MIN_SAMPLES,
    PARK_SAMPLES,
    PROBE_STEP,
    SURE_WALL,
    WINDOW_BUDGET,
    PacerState,
    trim_history,
)
from bulkcancel._parking import Parking
from bulkcancel._peers import Peers
from bulkcancel._spacing import Spacing, spacing_bounds

#: turns without a send, nothing waiting: the key was idle (an idle stretch of its own, see
#: KeyPacer.reserve; a finished peer, see QuotaSharing._peers_gone)
IDLE_TURNS = 4.0
_QUICK_SAMPLES = 4  # fewer fresh answers than MIN_SAMPLES: none throttled, and half a second
_CLEAN_TIME = 0.5  # seconds of fresh answers that allow an increase, short of CLEAN_SAMPLES
_SLOW_CHECK = 4.0  # a cut on a sure wall is judged after this many seconds and 4 answers too
_PARK_SHARE = 0.9  # this share of PARK_SAMPLES fresh answers or more refused parks the key
_PARK_RUN = 5  # ... or this many refused in a row, none accepted since the first refusal
_SPENT_SHARE = 0.75  # ... or, this share of the last window's budget accepted since a resume,
_SPENT_RUN = 2  # ... this many refused in a row (one more with a background known)
_SPENT_MAX = 1.5  # ... and (under 32) not once this many came through: no window's budget
_EARLY_WALL = 0.6  # a cut on this share of few answers (PARK_SAMPLES; 3 refused after a resume)
_LEAD_CHANCE = 0.05  # accepts before a decision's first refusal this unlikely: a burst spent
_MEASURED_SHARE = 0.95  # a cut lands a little under what the server accepted
_DOUBLED_STEP = 0.15  # the probe step after a doubling walled at about the spotless rate
_LANDED_WALL = 0.2  # a wall's share after a landing on a spotless rate (a burst-1 bucket)
_TESTED_NOISE = 0.6  # the most background learned from a share that held at a rate 30% up
_FELL = 0.4  # after a cut, a wall's share falls below this share of the one before
_EPSILON = 1e-6  # seconds: a wait shorter than this is no wait
_CATCH_UP = 0.02  # seconds of late turns made up at the ceiling (the ceiling's own burst)
_MAKE_UP = 0.25  # ... and, elsewhere, turns of lateness made up
_SPACED_SHARE = 0.4  # a burst-1 bucket's spacing is read with at least this share refused
_SPACING_STEP = 0.15  # the first climb above the low bound, doubling per clean decision
_SPACING_ACCEPTS = 256  # accepts after which a spacing bound is forgotten (a quota may grow)


class KeyPacer(Background, Parking, Peers):
    """The adaptive rate of one quota key. Pure: every method takes ``now``.

    Requests are spaced ``1/rate`` apart (GCRA), nothing booked ahead: a waiter asks again when
    its turn may have come, at the rate in force then. At the ceiling too: grants never pile up
    behind the run's ``--rate`` limiter, where a cut could no longer hold them back; there, while
    no quota is known, a waiter woken late has its lateness made up within ``_CATCH_UP``, and
    elsewhere within a quarter of a turn (``_MAKE_UP``; never on a burst-1 bucket's spacing). Nor
    behind the in-flight slots: the governor grants a key's next turn only once the turn before
    is on the wire (:attr:`granted`), and a turn that waited past the next one's time spaces the
    next from its send (:meth:`went`).
    """

    __slots__ = ()

    # -- sending -----------------------------------------------------------------------------

    def reserve(self, now: float, *, woken: bool = False) -> tuple[float, bool]:
        """Claim a turn if one is free now: ``(0, is_probe)``; otherwise ``(wait, False)``:
        how long to wait before asking again, without claiming anything. ``woken``: the
        caller slept until the turn it was told to wait for (its lateness may be made up)."""
        if self.state is PacerState.PARKED:
            if self.probe_out or now < self.probe_at:
                wait = self.probe_gap if self.probe_out else self.probe_at - now
                return max(wait, 1e-3), False
            self.probe_out = True
            return 0.0, True
        if self.next_free - now > _EPSILON:  # (a float-sized wait would never end)
            return self.next_free - now, False
        if self._budget_spent(now):  # (before the turn: the wall is the budget's end)
            self._budget_park(now)
            return max(self.probe_at - now, 1e-3), False
        # (An idle key banks nothing: a waiter that did not sleep for its turn is spaced from now.
        # Turns that went unclaimed meanwhile, a few or more, were an idle stretch: see
        # _fresh_rate. A waiter held by the turn before it, or by a slot, comes after a send
        # that pushed the next turn on, and is never late here.)
        slack = self._late(now) if woken else 0.0
        if not woken and self.born is not None and now - self.next_free > IDLE_TURNS / self.rate:
            self.idle.append((self.next_free, now))
        self.next_free = max(self.next_free, now - slack) + 1.0 / self.rate
        return 0.0, False

    def _late(self, now: float) -> float:
        """How much of a woken waiter's lateness its turn may make up."""
        # A waiter that slept until its turn and woke late (a busy loop always wakes a little
        # late) has its lateness made up, up to _CATCH_UP, as the ceiling's own bucket allows:
        # strict spacing turned `--rate 200` into ~155/s on one key. Elsewhere (a quota
        # measured or stated, or a rate under the ceiling), up to a quarter of a turn:
        # lateness lost at every turn sent a stated 300/s limit 264/s, where a quarter turn
        # early is within any bucket's burst but a burst-1 bucket's, whose spacing (when
        # known) is kept strictly; a lateness under _EPSILON is float rounding, not lateness.
        if self.rate >= self.ceiling and self.estimate == math.inf and self.limit == math.inf:
            return _CATCH_UP
        if self.spacing is None and now - self.next_free > _EPSILON:
            return min(_CATCH_UP, _MAKE_UP / self.rate)
        return 0.0

    def went(self, now: float, *, sent: bool, waited: float = 0.0) -> None:
        """A turn this pacer granted is over: its request went on the wire now (``sent``), or
        was given back unsent. A request sent after the next turn's time (it waited for an
        in-flight slot or the run's ceiling that long) spaces the next turn from its send (why:
        the class docstring, and ``_limits``'s). So does any such wait (``waited``: seconds
        from the grant to the send, when the request waited for either) on a key held at a
        stated limit: there the server's spacing is 2% away, and two regions at a stated
        7.45/s (a bucket of one token) whose turns fell together had one request held 40 ms by
        the run's ceiling, the next turn 97 ms after it, refused, one turn in four (9.5% of
        429s where a key's turns were counted from its grants)."""
        self.granted -= 1
        if not sent or self.state is not PacerState.ACTIVE:
            return
        if now > self.next_free or (waited > _EPSILON and self._held_at_limit):
            self.next_free = max(self.next_free, now + 1.0 / self.rate)

    def sent(self, now: float) -> None:
        """A granted request goes on the wire now (after its slot and the run's ceiling)."""
        if self.born is None:
            self.born = now
        self.sent_total += 1
        self.sends.append(now)
        trim_history(self.sends, now)

    # -- evidence ----------------------------------------------------------------------------

    def on_answer(
        self,
        now: float,
        *,
        throttled: bool,
        sent_at: float,
        probe: bool = False,
        hint: float | None = None,
        quota: QuotaInfo | None = None,
    ) -> None:
        """One attempt's answer: ``throttled`` or capacity. ``sent_at`` is when it was granted."""
        self.refused_lately += 0.25 * (throttled - self.refused_lately)
        self._count_run(throttled)
        if throttled:
            onset = now - self.last_throttle > HISTORY or self.clean_since
            if onset and self.state is PacerState.ACTIVE:
                # A rate measured on a few accepts says nothing of a burst (at start-up, or
                # for a throttle with few before it for another reason: see the module
                # docstring): the burst measured before stands. A key that resumed at its
                # burst has a bigger sample in what it was let through since.
                rate = max(self.accepted_rate(now), self._rate_since_resume(now))
                seen = self._seen_a_second(now)
                enough = len(self.accepts) >= (_QUICK_SAMPLES if seen else MIN_SAMPLES)
                if not enough and self.at_burst:
                    through = self.accepted_total - self.resumed_total  # (since that resume)
                    if through >= MIN_SAMPLES:
                        rate, enough = through / max(now - self.resumed_at, HISTORY), True
                if enough:
                    self.burst = rate
                self.clean_since = False
            self.last_throttle = now
            self.refused_since_resume |= sent_at >= self.resumed_at
            per_second = quota.per_second if quota is not None else None
            if per_second is not None:
                first, before = self.limit == math.inf, self.rate
                # (capped, unless the server just let through far more than that: an average
                # over a window, not a spacing; the shares decide, and a spent window parks it)
                self.state_limit(per_second)
                if first and self.rate < before and self.state is PacerState.ACTIVE:
                    # The first limit stated lowers the rate: answers to what was sent before,
                    # faster, are news acted on (behind a distant server the refusals of slow
                    # start's sends, read as a wall met at the limit, parked the key).
                    self._new_epoch(now)
        else:
            self.accepted_total += 1
            self.accepts.append(now)
            trim_history(self.accepts, now)
        if self.state is PacerState.PARKED:
            self._while_parked(now, throttled=throttled, sent_at=sent_at, probe=probe)
        elif sent_at < self.decided_at:
            if sent_at >= self.late_from:
                self._late_news(now, sent_at, throttled, hint)
            # (else its news is already acted on)
        else:
            self._count(sent_at, throttled)
            self._decide(now, hint)
        if self.peer_gone:
            self.peer_left(now)  # owed since a peer finished while parked or judging a cut

    def _late_news(self, now: float, sent_at: float, throttled: bool, hint: float | None) -> None:
        """An answer to a request sent at slow start's rate before its last doubling (and
        after the decision before it), arriving after the doubling. Behind a distant server
        the doubling was decided on a burst's few answers, and the refusals of what went out
        at the old rate meanwhile come back a round trip later; a decision waiting for answers
        to the new rate waits a round trip more, at twice the rate. A wall those late answers
        show at the old rate (eight or more in send order from the first refusal on, 40% or
        more of them refused; or five refused in a row, a burst spent) is over the new one
        too: it is acted on now, judged on them."""
        self.late_answers.append((sent_at, throttled))
        if not throttled or not self._slow_start:
            # (judged at a refusal: the answers after the first then run from one refusal to
            # another, where a share counted up to an accept leans low; and not once a stated
            # limit ended slow start)
            return
        answers = sorted(self.late_answers)
        first = next(i for i, (_, refused) in enumerate(answers) if refused)
        onset = [refused for _, refused in answers[first:]]
        spent = self._refused_run(onset)
        if not spent and (
            len(onset) < PARK_SAMPLES or all(onset) or sum(onset) < SURE_WALL * len(onset)
        ):
            return
        # Judged on the answers after the first refusal, in send order (it was picked for
        # being one; those before it were the burst the doubling saw).
        self._new_epoch(self.decided_at)
        for at, refused in answers[first + 1 :]:
            self._count(at, refused)
        self.stepped_at = -math.inf  # (a wall met before the step, not the step's)
        if spent:
            self._park(now, hint)
        else:
            self._cut(now, self.fresh_throttled / self.fresh)

    def _count(self, sent_at: float, throttled: bool) -> None:
        """One answer joins the evidence for the next decision."""
        self.fresh += 1
        self.fresh_throttled += throttled
        self.fresh_answers.append((sent_at, throttled))
        self.fresh_first_sent = min(self.fresh_first_sent, sent_at)
        self.fresh_last_sent = max(self.fresh_last_sent, sent_at)

    def _decide(self, now: float, hint: float | None) -> None:
        n, t = self.fresh, self.fresh_throttled
        share = t / n
        onset = self._since_onset() if t else []  # (send order, from the first refusal on)
        # A burst spent within the decision: a lead of 8 accepts or more, then only refusals.
        # (Not on a pacer that took over two keys or more: one key's lull among the others'
        # accepts would read so; the merged pacer of eight regions' buckets parked every half
        # second. A project's pacer that paces one key's requests is that key's pacer.)
        led = (
            bool(onset)
            and all(onset)
            and self.burst > 0
            and n - len(onset) >= PARK_SAMPLES
            and not self.interleaved
        )
        if (
            (n >= PARK_SAMPLES and share >= _PARK_SHARE)
            or (
                (n >= PARK_SAMPLES or self.noise == 0)
                and (share >= _SPACED_SHARE or led)
                and self._refused_run(onset)
            )
            or self._window_spent()
        ):
            self._park(now, hint)
            return
        if led and len(onset) < _PARK_RUN and self.noise == 0:
            # Its share is small (3 of 16): a cut on it lands near the burst's pace, and the
            # refusals go on until a park. Wait for the fifth refusal, or an accept.
            return
        if (
            t >= 3
            and share >= _EARLY_WALL
            and not all(onset)
            and not self.interleaved
            and self._no_budget_back(now)
        ):
            # A resume that found no budget, a bucket's refill trickling through: cut to that
            # refill now (see _cut), not on the eighth answer. (All refused since the first:
            # the five-refusal park above takes it. Not on a pacer that took over two keys or
            # more: see the docstring.)
            self._cut(now, share)
            return
        if (
            n >= PARK_SAMPLES
            and share >= _SPACED_SHARE
            and self.walled
            and not self.interleaved
            and not self._held_at_limit
        ):
            # (Not on the wall that ends slow start: every key of a run meets it at once, and
            # keys of one quota interleave their requests as regularly as a spacing. Not for a
            # key alone in its project either: in simulation that read a bucket of one token at
            # 10/s as a spacing at once, but against the fake over loopback, timing blurred it
            # and 429s rose from 11.6% to 15.7% of a 100-name run. Nor on a pacer that took
            # over other keys: their requests interleave, and one key's spent window refusing
            # its turns among the others' accepts is as regular as a spacing. Nor on a key
            # held at its stated limit: a bucket of one token of that limit refuses nothing at
            # 98% of it, so refusals there are a background's chance run or a budget spent;
            # read as a spacing, a stated 25/s with 10% of 429s at random landed at 12/s.)
            bounds = spacing_bounds(self.fresh_answers)
            if bounds is not None:
                self._spaced_wall(now, *bounds)
                return
        if (
            n >= PARK_SAMPLES
            and share >= _SPACED_SHARE
            and self.checking is None
            and self.noise == 0
            and self.walls > 0
            and self.stepped_at == self.decided_at
            and self.rate > self.estimate
        ):
            # The key's own step past a quota it confirmed met a wall at once, 40% of 8
            # answers or more refused with no background known (a 10% background's chance
            # about once in 75 decisions, at any of the 8th to 15th answers): back to the
            # rate the step left, or to what the answers say if that is more. A bucket of
            # one token refuses every other request however small the overshoot, and waiting
            # for 16 answers doubled what each probe cost (two regions merged on one bucket
            # of 10/s probed every five seconds, eight refusals each). (Not under that rate:
            # a share of 8 is a rough measure, and a cut on it landed six regions of their
            # own at 124/s where 16 answers said 140/s.)
            self._cut(now, share, floor=self.stepped_from)
            return
        if (
            n >= PARK_SAMPLES
            and share >= _EARLY_WALL
            and self.checking is None
            and not self._chancy
        ):
            # Most of even a few answers refused: a wall whatever the background, no need to
            # wait for 16 (a run told far more than its quota). Not with a background known
            # (on a key alone in its project): 6 of 8 refused is a 20% background's chance
            # once in 800 tests, and a share of 8 answers is a rough measure of what the
            # server accepts (5 of 8 refused at a 30% wall cut a key to under half its quota).
            self._cut(now, share)
            return
        # A cut made on a sure wall, on a key so slow that 32 answers take more than a few
        # seconds, is judged on what four seconds brought, four answers or more: at 0.5/s
        # the 32 took a minute, the key growing not at all meanwhile (three regions on one
        # bucket of 4.6/s, bare 429s: one sat at 0.5/s for 60 s, 3.6x the floor). A cut on a
        # small share still waits for its answers (a background's chance cluster and its
        # lull are told apart on 32 or 64).
        slow = (
            self.checking is not None
            and n >= _QUICK_SAMPLES
            and now - self.decided_at >= _SLOW_CHECK
            and self.checking[0] >= SURE_WALL
        )
        if n < MIN_SAMPLES and not slow:
            # A slow key (after a park, or a small share of a quota) would wait many seconds
            # for 16 answers: a few answers with no throttle at all and some time suffice to
            # grow, so recovery takes about the same time at any rate.
            quiet = t == 0 and n >= _QUICK_SAMPLES and self.checking is None
            if quiet and now - self.decided_at >= _CLEAN_TIME:
                self._grow(now, clean=True)
            return
        if self.checking is not None and self._judged(now, self.checking, n, t, share, slow):
            return
        untested = self._test_ended(share)
        over = share - self.noise > noise_margin(n, self.noise)
        if over and self._chancy and n % MIN_SAMPLES:
            # With a background known (alone), a share is judged on 16, 32, 48 or 64 answers,
            # not at every answer between: tested 48 times over, a background share crosses its
            # margin twice as often. (With none known, a wall met within a decision is cut at
            # once; a chance cluster there is judged background after the cut.)
            return
        if over:
            if (
                self._slow_start
                and self.noise == 0
                and share < SURE_WALL
                and self.rate < self.ceiling
                and not untested
            ):
                # A small share before any wall is met: a quota just under this rate or a
                # background share. Doubling tells them apart at once (a wall's share jumps
                # past 40%, a background share stays), where a cut would need 32 answers at
                # the cut rate to be judged.
                self.testing = (share, self._fresh_rate())
                self._grow(now, clean=False)
                return
            if not self._suspect(now, share):
                self._cut(now, share)
        elif n >= CLEAN_SAMPLES or now - self.decided_at >= _CLEAN_TIME or self._slow_start:
            self._learn_noise(n, t)
            self._grow(now, clean=True)

    def _judged(
        self,
        now: float,
        checking: tuple[float, float, float],
        n: int,
        t: int,
        share: float,
        slow: bool,
    ) -> bool:
        """Judge the cut this decision's answers follow (``checking``): True when the decision
        ends here (too early to tell; a high share that held, tested at the rate before the
        cuts; a share that neither fell nor rose, background, the cuts undone; a landing on a
        spotless rate that did not clear the wall, cut again); False when the cut is confirmed
        as a wall, what it let through the quota, and the decision goes on."""
        before, rate_before, accepted = checking
        if n < CHECK_SAMPLES:
            if share < SURE_WALL and not slow:
                return True
            # Still 40% refused after a cut: judged on 16 answers when the share moved (a
            # wall the cut did not clear); one that stayed put may be a high background
            # share, which takes 32 answers to judge.
            if (
                self._may_hold()
                and abs(share - before) <= noise_margin(n, before)
                and self._nearer_background(share, before)
            ):
                return True
        if (
            n < 2 * CHECK_SAMPLES
            and self.walls == 0
            and before < SURE_WALL
            and not any(throttled for _, throttled in self.fresh_answers[:CHECK_SAMPLES])
        ):
            # Not one refusal in 32 answers since a first cut on a small share: a wall's
            # overshoot cleared, or a background's lull after its chance cluster (2 of 16
            # at 8%, then none of 32: one time in fifteen; confirmed, the key sat at half
            # its pace for seconds). The next 32 tell them apart (none of 64: one time in
            # two hundred), judged with them; the rate is the cut's meanwhile, right for a
            # wall.
            return True
        self.checking = None
        rose = share - before > noise_margin(n, before)
        fell = before - share > noise_margin(n, before)
        held = not rose and not fell and share < _PARK_SHARE
        if (
            held
            and self._may_hold()
            and before >= SURE_WALL
            and self._nearer_background(share, before)
        ):
            # A high share that stayed put, within its binomial margin, although the rate
            # was cut: a background share far above the usual, or a wall the cut did not
            # clear (its accepted rate measured high). Back to the rate before the cuts,
            # as a test: behind a wall the share jumps there, a background share stays
            # (see :meth:`_test_ended`), where calling it a wall at once spirals the rate
            # down at every chance 40% (30% of 429s at random cost 50x the floor). Only
            # for a key alone in its project: beside another key on one quota, a share
            # stays put when the other key's rate falls as this one's rises. And only for
            # a cut made on 16 answers or more: a share of 8 is too rough to hold to.
            self.rate = rate_before
            if self.before_cuts is not None:
                self.rate, self.estimate, self.walls = self.before_cuts
                self.before_cuts = None
            self.testing = (share, self._fresh_rate())
            self._new_epoch(now)
            return True
        if (
            before < SURE_WALL
            and share < SURE_WALL
            and not rose
            and (
                share >= before * _FELL
                or share - self.noise > noise_margin(n, self.noise) / 2
                or (self.walls == 0 and not fell_beyond_chance(before, self.checked_on, share, n))
            )
        ):
            if self.landed_clean and share >= _LANDED_WALL:
                # A landing on a spotless rate clears a burst-1 bucket's wall, down to a
                # few refusals of timing jitter. A fifth or more refused there says the
                # spotless rate was a small burst's, spent within its decision (two
                # regions of 69/s each, told 195/s: taken for a background that held, 30%
                # of requests refused all run): cut to what the server accepts.
                self._cut(now, share)
                return True
            # The share neither fell nor rose with the rate: background 429s, not a wall.
            # (A share that rose means the cut was too small, measured on a ramp: a wall.)
            # Undo every cut since the last growth: they were all taken on noise.
            share = self._plausible_noise(min(share, MAX_NOISE))
            self.noise = share if self.noise == 0 else (self.noise + share) / 2
            self._learn_noise(n, t)
            self.rate = rate_before
            if self.before_cuts is not None:
                self.rate, self.estimate, self.walls = self.before_cuts
                self.before_cuts = None
            self.clean_since = True
            self._new_epoch(now)
            return True
        self.walls += 1  # confirmed: a wall, and what it let through is the quota
        self.estimate = accepted
        return False

    def _test_ended(self, share: float) -> bool:
        """End the test of a faster rate this decision's answers follow (``testing``): a share
        that did not rise towards a wall's at the faster rate is background, learned. True
        when the test never sent faster, and so told nothing."""
        if self.testing is None:
            return False
        (before, sent_before), self.testing = self.testing, None
        sent_now = self._fresh_rate()
        # The test never sent faster: the key is held under its rate by the run's
        # ceiling (other keys take their part of --rate) or by its requests in flight,
        # so a faster rate cannot tell a wall from background here.
        untested = sent_now < 1.3 * sent_before
        # Behind a wall the accepted rate stays put, so the share would rise to this:
        wall_share = 1 - (1 - before) * sent_before / max(sent_now, 1e-9)
        if not untested and share < (before + wall_share) / 2:
            # A faster rate, the same share: background 429s, not a wall.
            self.noise = self._plausible_noise(
                min((before + share) / 2, _TESTED_NOISE if self.alone else MAX_NOISE)
            )
        return untested

    def _refused_run(self, onset: list[bool]) -> bool:
        """After a burst (the wall began after a second of accepts), every answer in
        ``onset`` (in send order, from the first refusal on) was refused, and at least
        ``_PARK_RUN`` were: a wall that refuses nearly everything (a minute's burst just
        spent), met within the decision, whose accepts before it dilute the share."""
        return len(onset) >= _PARK_RUN and all(onset) and self.burst > 0

    def _burst_spent_within(self, onset: list[bool], share: float) -> bool:
        """A key alone in its project met a wall within the decision: eight answers or more
        from the first refusal on (some accepted: a spent window refuses them all, and parks the
        key), after a lead of accepts that a background of this share shows one time in twenty
        or less. (Beside other keys of its project the lead may be another key's lull on a
        shared quota, and a cut on the answers after it starved one of two keys sharing one.)"""
        lead = self.fresh - len(onset)
        return (
            self.alone
            and len(onset) >= PARK_SAMPLES
            and not all(onset)
            and (1.0 - share) ** lead < _LEAD_CHANCE
        )

    def _window_spent(self) -> bool:
        """The budget the last window let through (8 or more) has come through again since
        the key resumed, three quarters of it at least (a budget under 32 not half again as
        much: then it was no window's, eight accepts before a start-up wall perhaps, and a key
        at a limit stated above what is enforced would park window after window), and the
        fresh answers end, in send order, in two refusals (three with a background known: a
        background refusal earlier in the decision must not hide the run): the next window
        spent. Parked at once, it costs the refusals still in flight, not five or eight more.
        (Budgets of 8 to 31 were left to the five-refusal rule until short runs at 5-20/s
        showed windows of 20-30 paying five refusals each, and probes.)"""
        run = _SPENT_RUN + (self.noise > 0)
        if self.window_budget < PARK_SAMPLES or self.fresh_throttled < run:
            return False
        budget, through = self.window_budget, self.accepted_total - self.resumed_total
        if through < _SPENT_SHARE * budget:
            return False
        if budget < WINDOW_BUDGET and through > _SPENT_MAX * budget:
            return False
        last = sorted(self.fresh_answers)[-run:]
        return all(throttled for _, throttled in last)

    def _cut(self, now: float, share: float, *, floor: float = 0.0) -> None:
        """Cut the rate to 95% of what the server accepted (see the module docstring for
        how that is measured), never under 95% of ``floor``, and judge the cut later."""
        cap = self._cap()
        # Held at its stated limit: under it, and (before any wall) at it. A key that meets its
        # first wall well under a stated limit spent no budget at the limit: the server
        # enforces less than it states (stated 160/s, refused at 100/s: parked to resume at
        # 157/s, 12% of a 250-name run's requests refused, 6% cut as any wall).
        held = cap < math.inf and self.rate <= cap * 1.001
        held = held and (self.walls > 0 or self.rate >= cap * _MEASURED_SHARE)
        if share >= SURE_WALL and held and not self.limit_parked:
            # The first sure wall of a key held at its stated limit: a budget spent, not a
            # pace too high. Park, and resume at the limit.
            self.limit_parked = True
            self._park(now, None)
            return
        set_aside = self._limit_set_aside
        self._wall_met(now)
        sent = self._fresh_rate()
        accepted = sent * (1.0 - share)
        onset = self._since_onset()  # (in send order, from the first refusal on)
        if self._burst_spent_within(onset, share):
            # The wall began within the decision, after a run of accepts a background of this
            # share would hardly show: a burst spent (a minute's bucket, told 50/s at a quota of
            # 10/s: 5 of 16 accepted before the first refusal, 2 of the 11 after). What the
            # server accepts is what it accepted from the first refusal on; over the whole
            # decision it was twice the quota, the cut landed there, and the next 32 answers
            # at 21/s were half refused: 27% of a 100-name run's requests.
            accepted = min(accepted, sent * (1.0 - sum(onset) / len(onset)))
        if self.fresh < MIN_SAMPLES and self._seen_a_second(now):
            # A share of a few answers is a rough measure of what the server accepts (1 of 8
            # accepted says 12% +- 12%): what it accepted over the last second is a bigger
            # sample. (Cut too little, the next decision cuts again; cut too deep, a slow key
            # waits 32 answers at that rate to have the cut judged: 13 s at 2.6/s, where a
            # window of 12.6/s was spent at 57/s.)
            accepted = max(accepted, min(sent, self.accepted_rate(now)))
        if self.spacing is not None and self.spacing.bisecting:
            # A wall while bisecting a spacing that is not one: a bigger bucket (sent to at
            # twice its quota it shows the same spacing), whose burst hid the overshoot of a
            # climb. Only the accepts' spacing was a measurement: land under it. (Not once the
            # bounds are close and the key holds at the low one: a wall there says that rate
            # was over the quota after all, a hair, hidden by a burst of a token and a bit;
            # landing at the accepts' spacing halved a key of 10.6/s for six seconds.)
            accepted = min(accepted, self.spacing.measured)
        if self._no_budget_back(now):
            # (The fresh answers' accepts are the tokens the park let a bucket save.)
            accepted = min(accepted, self._budget_back(now))
        clean = self.clean_rate
        stepped = self.stepped_at == self.decided_at  # (this key's own step met the wall)
        self.landed_clean = (
            stepped and clean > 0.0 and sent <= 1.25 * clean and accepted < 0.8 * clean
        )
        if self.landed_clean:
            # A wall just after a small step up from a rate sent at without a single refusal,
            # accepting far less than that rate: a burst-1 bucket whose refusals timing
            # jitter made irregular (see spacing_bounds), not a drained burst (which accepts
            # about the quota, close to any clean rate it hid). Land a little under the clean
            # rate, not at half of it.
            accepted = clean
        accepted = max(accepted, floor)
        if self.before_cuts is None:
            self.before_cuts = (self.rate, self.estimate, self.walls)
        self.checking = (share, self.rate, accepted)
        self.checked_on, self.checked_sent = self.fresh, sent
        # (the share refused counted in send order from the first refusal)
        self.checked_onset = sum(onset) / max(len(onset), 1)
        # Slow start's doubling from a spotless rate met a wall in its first decision that
        # accepted about that rate: the quota lies between the two (a bucket of one token
        # accepts every other request at up to twice its quota), so what was accepted is no
        # measure of it, and the climb back starts at 15%, not at the 5% that creeps near a
        # measured quota (two regions on one bucket of one token at 10/s, merged: the merged
        # pacer doubled from 5.7/s, was cut to 5.4/s and took 9 s at 5-8/s to climb back).
        doubled = stepped and clean > 0.0 and sent >= 1.8 * clean and accepted <= 1.2 * clean
        self.step = _DOUBLED_STEP if doubled and self._slow_start else PROBE_STEP
        self.spacing, self.clean_rate = None, 0.0
        if set_aside and not all(onset):
            # A stated limit set aside because the server let a burst through (until this
            # wall: one met within 32 accepts of a resume at the burst ends it, see _wall_met),
            # and now a wall that still accepts some after its first refusal (a spent window
            # refuses all from there, and parks the key): a bucket refilling at the stated
            # rate. The limit caps the key from here, and is where it lands (what a few answers
            # after a burst say it accepts is no measure; nor what a park let it save, over
            # the park's time: a sliding window of 1 s at 188/s, stated, giving back what its
            # first sends spent, was cut so to 15/s, 1.40x the floor; 1.08x now).
            self.windowed = False
            accepted = max(accepted, self.limit)
        target = min(accepted * _MEASURED_SHARE, self._cap())
        self.rate = max(MIN_RATE, min(self.rate, target))
        self.cut_at = now
        self._new_epoch(now)

    def _grow(self, now: float, *, clean: bool) -> None:
        # (clean: within the background share; spotless: not one refusal, all a burst-1
        # bucket under its quota ever says)
        spotless = clean and self.fresh_throttled == 0 and self.fresh >= _QUICK_SAMPLES
        if spotless:
            self.clean_rate = self._fresh_rate()
        if self.spacing is not None and (
            self.accepted_total - self.spacing.since >= _SPACING_ACCEPTS or not spotless
        ):
            # Forgotten (probing above it again costs a short wall), or refusals that are
            # not a burst-1 bucket's: back to the last spotless rate, grown as at any wall.
            self.rate = min(self.rate, self.spacing.low)
            self.spacing, self.step = None, PROBE_STEP
            self._new_epoch(now)
            return
        if self.spacing is not None:
            # A burst-1 bucket: a rate it took without a refusal is under its quota. Climb from
            # there towards the spacing it refused, by 15% first and twice as far per clean
            # decision, never past the (geometric) middle, until the two are close. (Not
            # straight to the middle: a bigger bucket sent to at exactly twice its quota
            # shows the same spacing, its quota at the low end, and a small step finds that
            # out with a small wall, measured as any other.)
            low, high = self.spacing.low, self.spacing.high
            if low < self.clean_rate < high:
                low = self.estimate = self.clean_rate
                self.spacing = self.spacing._replace(low=low)
            probe = low
            if self.spacing.bisecting:
                probe = min(math.sqrt(low * high), low * (1 + self.step))
                self.step *= 2
            elif self.spaced < 2 and not self.alone:
                # Close, but on one spacing wall only, beside other keys of its project: the
                # regular spacing may have been another key's requests interleaved with this
                # one's on a shared quota, which must not hold this key under its share. Grow
                # as after any wall; a lone burst-1 bucket shows its spacing again at once, and
                # then the key holds. (A key alone in its project holds at once: the second
                # wall cost four refusals more, 3.5% of a 100-name run at 10/s.)
                self.spacing, self.step = None, PROBE_STEP
                probe = self.rate * (1 + self.step)
        elif self._slow_start:
            probe = self.rate * 2  # slow start
        else:
            known = min(self.estimate * _MEASURED_SHARE, self._cap())
            probe = max(self.rate * (1 + self.step), min(known, self.ceiling))
            probe = min(probe, self._cap())
            # Near the measured quota the probe stays small (CUBIC's plateau); once the rate is
            # clean well above it, the estimate was stale (background 429s taken for a wall,
            # or a quota that grew) and each clean decision probes twice as far.
            if self.rate > self.estimate * 1.1:
                self.step = min(0.5, self.step * 2)
        self.before_cuts = None
        # AWS's cap: never more than twice what the key really sent lately.
        trim_history(self.sends, now)
        span = now - self.sends[0] if len(self.sends) > 1 else HISTORY
        sent = len(self.sends) / max(span, 0.1)
        grown = min(self.ceiling, probe, max(2 * sent, MIN_RATE))
        # (No background known: a wall among the late answers is then one to act on. Its own
        # answers first: the accepts before a first refusal are the burst it saw.)
        doubled = (
            clean and self._slow_start and not self.walled and not self.noise and grown > self.rate
        )
        late = (self.decided_at, list(self.fresh_answers)) if doubled else None
        if grown > self.rate:
            self.stepped_from, self.rate = self.rate, grown
            self.stepped_at = now
        self.clean_since = True
        self._new_epoch(now)
        if late is not None:
            self.late_from, self.late_answers = late

    # -- a burst-1 bucket ---------------------------------------------------------------------

    def _spaced_wall(self, now: float, low: float, high: float) -> None:
        """A burst-1 bucket's spacing: its quota lies in ``[low, high)``. Cutting to 95% of
        the accepted rate, as at other walls, would land at half the quota (and, growing back
        over it, halve it again: a sawtooth at ~1.6x the floor). Instead the key lands on the
        rate it last sent at without a refusal when that lies in the range (a burst-1 bucket
        hides no overshoot: clean there means under the quota), else on 95% of ``low``, and
        bisects from there (:meth:`_grow`); a second spacing wall narrows the range."""
        self._wall_met(now)
        measured = low
        known = self.spacing
        narrowed = known is not None and known.low < high and low < known.high
        if known is not None and narrowed:
            low, high = max(low, known.low), min(high, known.high)
            measured = max(measured, known.measured)
        landing = low * _MEASURED_SHARE
        if low <= self.clean_rate < high:
            low = landing = self.clean_rate
            self.stepped_at = now
        self.spacing = Spacing(low, high, measured, self.accepted_total)
        self.spaced += 1
        self.walls += 1  # a wall beyond doubt: no judging, nothing to undo
        self.estimate = low
        self.checking = self.testing = self.before_cuts = None
        self.step = _SPACING_STEP
        rate = max(MIN_RATE, min(self.rate, landing, self._cap()))
        # The next turn too keeps the new spacing from the last grant: one at the old spacing
        # would be refused, and a refusal in the next decision delays it by 16 answers.
        self.next_free += 1.0 / rate - 1.0 / self.rate
        self.rate = rate
        if not narrowed:
            # (A wall the governor sees: walls of several keys that coincide may be one
            # quota. The walls of a bisection are its own probes: keys with quotas of their
            # own probe in lockstep, and must not be merged for it.)
            self.cut_at = now
        self._new_epoch(now)
