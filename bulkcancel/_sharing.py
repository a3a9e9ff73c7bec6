"""Which quota keys of a project share one quota.

Google meters per project and region by default, so each quota key gets a pacer of its own
(:class:`bulkcancel._limits.RateGovernor`); a throttle whose ErrorInfo says the quota is
project-wide moves the key to its project's pacer at once (:meth:`QuotaSharing.told`). Which
requests of one key share its quota (its cancels and its reads, together or apart) is
:mod:`bulkcancel._metering`'s to tell; a key whose reads ErrorInfo showed metered apart is
never merged, nor are its reads (their walls are their own quotas'). The rest is learned from
how the keys' walls behave:

* Without ErrorInfo, a shared quota shows as walls that coincide: two keys of one project meet
  walls within a second of each other, twice (the walls that end slow start do not count: all
  keys start together; a slow key's wall, shown by answers to sends 2.5 s apart or more, began
  anywhere within them, and coincides with any wall found within a second of that span). So
  does a key starved beside another (:meth:`QuotaSharing._starved`: 40% or more of its fresh
  answers refused, at a quarter of the other key's rate or less, seen again a second later;
  on one bucket of one token two keys' requests collide, the slow key is refused at any rate
  and decides once in many seconds, and its walls never coincided twice with the other's);
  and so does a key parked for a second or more whose probe is refused again while another key
  of its project is accepted at a request a second or more (:meth:`QuotaSharing._parked_beside`:
  a bucket of its own would have given an idle key its token back).
  Then every key of the project that met a wall is merged into the project's pacer, on trial. One
  quota refuses all keys alike and accepts as much merged as apart; separate quotas that merely
  grew in lockstep do neither (one key is refused like a wall while another is spared, or one
  refused steadily, three times as often as another or more and 3.5 standard errors apart, on
  32 answers each or more, or the
  merged keys accept under 70% of what they did apart: what the trial's answers accepted since
  the merge, 64 per key or more, against what each key was let through per second since its
  first wall (since its first send, a minute's bucket's start-up burst counted: two regions on
  one bucket of 15/s with 2 s of burst read 23/s apart, and the merge was undone), and not once
  the merged pacer parked, since a spent window accepts nothing for a while, shared or not).
  Then the keys are split again, each at the rate it had apart, for good: no new trial starts
  for that project, and requests queued at its pacer queue at their keys' own. Independent
  pacers on one quota would split it by where they started (their increases are
  multiplicative, so AIMD's fairness does not hold) and starve one key; the merged pacer
  serves the keys' waiters in one FIFO, so each key gets the quota in proportion to its
  backlog. A key whose throttles' ErrorInfo names a regional limit (a region in
  ``quota_location``, or a limit name with a region, location or zone) is never merged so:
  synchronized windows (Compute's per-minute windows turn for every region at once) make
  separate regional quotas coincide window after window, and the merge held three such regions
  to one region's stated limit without a refusal to undo it by (3.6x the floor).
* Keys of one quota that were never merged (their walls did not coincide twice) each measured
  their share of it; when one of them finishes its work (nothing sent for four of its turns, a
  quarter of a second at least and a second at most, nobody waiting for its turn), every other
  key of the project that met a wall goes back to slow start from its rate (from half its
  share of the finished key's rate if that is more), once per finished key
  (:meth:`QuotaSharing._peers_gone`): the survivor of two regions on a 100/s quota crept up
  from its 40/s share by 5% steps for two seconds. (A second of silence was the rule until
  session 33: three regions on one quota of 40/s, the first done at 1.25 s, left a fifth of the
  quota unused for two seconds.) Where the quotas were separate after all, that costs one more
  wall's few 429s. A key that was starved (most of its recent answers refused, at a rate under
  its share of the finished key's: on one bucket of one token the other key took every token)
  takes that share at once, where slow start from its own rate, under a request a second, waited
  four answers, seconds, per doubling (two regions on one 10/s bucket with bare 429s, real, 8
  rounds: median 1.94x -> 1.48x). A key refused no more than its own quota refuses (a region at
  5/s beside a free one) is not starved, and jumping it to the free region's whole rate cost a
  wall of 429s; it starts from half its share, which costs a few (a key cut deep beside the
  other, every answer accepted, crept back from 2/s by slow start for 5 s: see
  :meth:`KeyPacer.peer_left`).
* A key's pacer is *alone* while no other key of its project has a pacer: only then may it take
  a high throttle share that holds when its rate changes for background (see
  :mod:`bulkcancel._pacer`), since beside another key on one quota a share holds when the other
  key's rate falls as this one's rises. The project's pacer of a quota ErrorInfo calls
  project-wide is alone once every key of the project that has a pacer joined it
  (:meth:`QuotaSharing._sole`): it then paces all the quota's traffic the run sends (a merge on
  trial never is: its quotas may yet prove separate).
* A merge hands the key's pacer over whole: the project's pacer takes its history of sends and
  accepts and what it learned (limit, estimate), requests queued at the key's pacer are woken
  and move to the project's queue, and answers to requests the key's pacer granted inform the
  project's pacer, so the shared pacer neither starts blind nor paces on half the news.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bulkcancel._answers import QuotaInfo
from bulkcancel._key_record import PacerState
from bulkcancel._metering import READS, Metering
from bulkcancel._pacer import IDLE_TURNS, KeyPacer

if TYPE_CHECKING:
    from bulkcancel._limits import Grant, RateGovernor

__all__ = ["QuotaSharing"]

_COINCIDE = 1.0  # seconds: two keys' wall onsets this close are one event
_COINCIDENCES = 2  # ... and this many such events merge the keys into one project pacer
_SLOW_WALL = 2.5  # seconds: a wall shown by sends spread wider than this began within them,
_SLOW_SPAN = 4.0  # ... within the last this many seconds of them
_TRIAL_SAMPLES = 32  # answers per key before a merge on coinciding walls is judged
_TRIAL_GONE = 8  # answers of the others since a key's last, with none of it waiting: done
_TRIAL_EARLY = 16  # ... but two keys of this many, one refused like a wall, one spared, split it
_SPARED_Z = 3.5  # ... or, on 32 or more each, shares this many standard errors apart
_SPARED_RATIO = 3.0  # ... and one this many times the other: separate quotas
_TRIAL_WORSE = 0.7  # a merge that accepts less than this share of what the keys did apart
_STARVED_SHARE = 0.4  # a key refused this share of its fresh answers (sure: a wall) ...
_STARVED_SAMPLES = 4  # ... of this many or more,
_STARVED_GAP = 4.0  # ... at under 1/this of the rate of another key of its project,
_STARVED_AFTER = 1.0  # ... both past their first walls by this many seconds,
_STARVED_FOR = 1.0  # ... seen again this many seconds on, or more: starved
_PARKED_BESIDE = 1.0  # seconds parked, a probe refused again, beside a key of its project ...
_PARKED_PEER = 1.0  # ... accepted at this many requests/s or more: starved beside it
_IDLE = 1.0  # seconds without a send or a waiter: a key whose work is done (a trial's) ...
# ... or a peer's: IDLE_TURNS of its turns, _IDLE_CHECK at least, _IDLE at most
_IDLE_CHECK = 0.25  # seconds between a pacer's looks at its project's other keys


class QuotaSharing:
    """The keys of each project, which share a pacer, and the trials of merges on probation.

    One per :class:`~bulkcancel._limits.RateGovernor`, which asks it which pacer paces a key
    (:meth:`paced_by`) and tells it every answer (:meth:`answered`); it shares the governor's
    pacers, and asks the governor for the clock, new pacers and who is waiting."""

    def __init__(self, governor: RateGovernor, pacers: dict[str, KeyPacer]) -> None:
        self._governor = governor
        self._pacers = pacers  # (the governor's own: key -> its pacer)
        #: project -> keys with a pacer of their own, in the order they got one (a dict, not a
        #: set: a set of strings iterates in an order the interpreter's hash seed picks, and the
        #: order finished peers are found in moved the pacing sweeps' figures run to run)
        self._project_keys: dict[str, dict[str, None]] = {}
        self._route: dict[str, str] = {}  # key -> the key whose pacer paces it (shared quota)
        #: key -> when its own pacer last met a wall (the span of sends that showed it: see
        #: :meth:`_wall_onset`), and whether that ended its slow start
        self._onsets: dict[str, tuple[float, float, bool]] = {}
        self._coincided: dict[str, tuple[int, float]] = {}  # project -> (events, last one)
        self._merged_at: dict[str, float] = {}  # project -> when merged on coinciding walls
        self._before_merge: dict[str, dict[str, float]] = {}  # project -> key -> accepts/s
        #: project -> when one of its keys was first seen starved beside another, and last
        self._starved_since: dict[str, tuple[float, float]] = {}
        self._separate: set[str] = set()  # projects whose keys' quotas proved separate
        #: keys whose throttles' ErrorInfo says the quota is the region's own: never merged
        self._regional: set[str] = set()
        #: project -> key -> [answers, throttled] since a merge on coinciding walls, until the
        #: merge is confirmed or undone
        self._trial: dict[str, dict[str, list[int]]] = {}
        #: project -> key -> when its last answer on trial came, and the trial's answers then
        self._trial_seen: dict[str, dict[str, tuple[float, int]]] = {}
        #: its keys' cancels and reads, paced together or apart
        self._metering = Metering(governor)

    def told(self, key: str, quota: QuotaInfo, pacer: KeyPacer, *, read: bool) -> None:
        """A throttle's ErrorInfo says where ``key``'s quota lives: the project's (pace the key
        with its project's pacer from now on) or the region's own (never merged); and which
        quota it is (see :meth:`Metering.told`: a key whose reads it paces apart is never
        merged either, nor are its reads)."""
        if quota.project_wide:
            self._share_project(key, pacer)
            self._sole(_project_of(key))
        elif quota.regional:
            self._regional.add(key)
        if self._metering.told(key, quota, pacer, read=read):
            base = key.removesuffix(READS)
            self._regional.update((base, base + READS))

    def paced_by(self, key: str) -> str:
        """The key whose pacer paces ``key``: its own, or its project's."""
        return self._route.get(key, key)

    def key_for(self, key: str, *, read: bool) -> str:
        """The key a request of ``key`` asks its turn of: ``key`` itself, or for a read (a GET
        or a list page) ``key + READS`` once its reads and cancels proved metered apart."""
        return self._metering.key_for(key, read=read)

    def answered(
        self,
        key: str,
        grant: Grant,
        pacer: KeyPacer,
        *,
        throttled: bool,
        onset: float,
        since: float,
        slow_start: bool,
        read: bool = False,
    ) -> bool:
        """The answer to ``grant`` (``key``'s), told to ``pacer`` (the one pacing the key now);
        ``onset``: when that pacer was last cut or parked before it; ``since``: the first send
        of the evidence it decided on; ``slow_start``: never cut nor parked before; ``read``: a
        GET or a list page. True when the key joined its project's pacer (the answer is then
        told no further)."""
        if self._route.get(key) is None:
            self._metering.answered(key, pacer, read=read, throttled=throttled)
        if max(pacer.cut_at, pacer.parked_at) > onset and self._route.get(key) is None:
            project = _project_of(key)
            if (
                project in self._merged_at
                and project not in self._separate
                and key not in self._regional
            ):
                self._join(key)  # its project's keys were found to share one quota
                return True
            self._wall_onset(key, since, self._governor.now(), slow_start=slow_start)
        elif self._trial:  # (a merge on trial is rare: no key parsing per answer without)
            project = _project_of(key)
            on_trial = key in self._trial.get(project, {})
            if on_trial and grant.sent_at >= self._merged_at.get(project, math.inf):
                self._judge_trial(key, throttled)
        if (
            throttled
            and not pacer.alone
            and pacer.noise == 0
            and pacer.limit == math.inf
            and self._route.get(key) is None
            and key not in self._regional
        ):
            # Refused beside other keys of its project, paced on its own, no background known
            # and no limit stated: it may be starved beside another on one quota.
            if (
                pacer.state is PacerState.ACTIVE
                and pacer.fresh >= _STARVED_SAMPLES
                and pacer.fresh_throttled >= _STARVED_SHARE * pacer.fresh
            ):
                self._starved(key, pacer)
            elif (
                pacer.state is PacerState.PARKED
                and grant.probe
                and self._governor.now() - pacer.parked_at >= _PARKED_BESIDE
            ):
                self._parked_beside(key)
        # (A wall met, confirmed or not yet judged: a key starved beside another on one quota
        # has every answer refused and its cuts never confirmed.)
        if not pacer.alone and (pacer.walls or pacer.walled) and key not in self._regional:
            self._peers_gone(key, pacer)
        return False

    def not_alone(self, key: str) -> None:
        """A new pacer: when its project now has more than one, none of them is alone (a
        share that stays put may be another key's traffic on one quota: see KeyPacer.alone)."""
        project = _project_of(key)
        keys = self._project_keys.setdefault(project, {})
        keys[key] = None
        if len(keys) > 1:
            for other in keys:
                if other in self._pacers:
                    self._pacers[other].alone = False

    def _starved(self, key: str, pacer: KeyPacer) -> None:
        """``key``'s pacer, beside other keys of its project, has 40% or more of its fresh
        answers refused (four or more: its rate is no help), with no background known and no
        limit stated. When another key of the project that met a wall too sends four times
        as fast or more, both past their first walls by a second, and that is so again a
        second later or more (not more than four of the slow key's turns apart: a key cut
        deep on a wall of its own shows it for a moment), the slow key is starved beside the
        other on one quota: merge the project's keys on trial, as walls that coincide twice
        do. The trial undoes a merge of separate quotas (the slow key's own, refusing it
        alone).

        On one bucket of one token two keys' requests collide: the slow key is refused at
        any rate, its decisions take many seconds, and its walls never coincided twice with
        the other's. Two regions on one bucket of 10/s, told 50/s: one key sat at 0.5-1.5/s,
        the other at 5-9/s, until the faster one finished (real, 1.31-2.18x the floor)."""
        project = _project_of(key)
        if not self._may_merge(project, key):
            return
        now = self._governor.now()
        if pacer.first_wall is None or now - pacer.first_wall[0] < _STARVED_AFTER:
            return
        for peer, walled_at in self._walled_peers(project, key):
            if now - walled_at < _STARVED_AFTER or peer.rate < _STARVED_GAP * pacer.rate:
                continue
            if project in self._merged_at:
                self._join(key)  # (its project's keys were found to share one quota)
                return
            first, last = self._starved_since.get(project, (now, now))
            if now - last > max(_STARVED_FOR, _STARVED_SAMPLES / pacer.rate):
                first = now  # (seen before, not since, over four of its turns: a moment)
            self._starved_since[project] = (first, now)
            if now - first >= _STARVED_FOR:
                self._merge_on_trial(project, now)
            return

    def _parked_beside(self, key: str) -> None:
        """``key``'s pacer has been parked for a second or more (no background known, no limit
        stated) and a probe of it was refused again, while another key of its project, past
        a wall of its own and active, is accepted at a request a second or more: the parked
        key is probably starved beside the other on one quota (a bucket refilling at a
        request a second or more gives a key idle for a second its token back; only a spent
        window of its own refuses it that long). Merge the project's keys on trial (or join
        the project's pacer if a merge already stands): the trial undoes a merge of separate
        quotas, the parked key refused beside the other spared.

        Two regions on one bucket of one token at 10/s, told 50/s, bare 429s: one key parked
        at its first wall, and its probes collided with the other key's requests for seconds;
        resumed, the two fought over the token, each cut on the other's traffic, until their
        walls coincided after 9-12 s (simulated, answers of 5 ms, jitter 0.3: 1.31x the
        floor, 24% of 429s; merged on trial at the third probe, 1.75 s parked, with the climb
        back after a doubling of KeyPacer._cut: 1.14-1.18x, 14-16%; at answers of 2 ms and
        200 names a trade: 1.15x and 20% before, 1.14-1.33x and 15-16% after)."""
        project = _project_of(key)
        if not self._may_merge(project, key):
            return
        now = self._governor.now()
        for peer, _ in self._walled_peers(project, key):
            if peer.accepted_rate(now) < _PARKED_PEER:
                continue
            if project in self._merged_at:
                self._join(key)
                return
            self._merge_on_trial(project, now)
            return

    def _may_merge(self, project: str, key: str) -> bool:
        """``key`` (a region's, of a real project) may yet be merged with its project's other
        keys on trial: no trial runs for the project, and none found its quotas separate."""
        return (
            project not in self._separate
            and project not in self._trial
            and key != project
            and project.startswith("projects/")
        )

    def _walled_peers(self, project: str, key: str) -> Iterator[tuple[KeyPacer, float]]:
        """The pacers of ``project``'s other keys that are paced on their own, active, not
        finished, past a wall of their own (and when they first met one), and not known to
        have a regional quota."""
        for other in self._project_keys.get(project, ()):
            peer = self._pacers.get(other)
            if (
                other == key
                or peer is None
                or peer.first_wall is None
                or self._route.get(other) is not None
                or other in self._regional
                or peer.finished
                or peer.state is not PacerState.ACTIVE
            ):
                continue
            yield peer, peer.first_wall[0]

    def _peers_gone(self, key: str, pacer: KeyPacer) -> None:
        """A key beside others of its project, with a wall met: when one of the others has
        finished its work (nothing sent for four of its turns, a quarter of a second at
        least and a second at most, nobody waiting for its turn), what the project's keys
        measured while it sent may have been their shares of one quota (two regions without
        ErrorInfo, never merged: the survivor crept up from its share by 5% steps for
        seconds). Every other key of the project goes back to slow start from its rate (or
        half its share of the finished key's, if more) (:meth:`KeyPacer.peer_left`), once per
        finished key; a key starved beside it (most of its recent answers refused) takes its
        share of the finished key's rate at once."""
        now = self._governor.now()
        if now < pacer.peers_checked_at:
            return
        pacer.peers_checked_at = now + _IDLE_CHECK
        project = _project_of(key)
        keys = [k for k in self._project_keys.get(project, ()) if k not in self._route]
        live = [self._pacers[k] for k in keys if k in self._pacers]
        for peer in live:
            if peer.finished or peer is pacer or peer.state is not PacerState.ACTIVE:
                continue
            waiting = self._governor.waiting(peer)
            idle = min(_IDLE, max(_IDLE_CHECK, IDLE_TURNS / max(peer.rate, 1e-9)))
            if waiting or not peer.sends or now - peer.sends[-1] < idle:
                continue
            peer.finished = True
            rest = [other for other in live if not other.finished]
            for other in rest:
                other.peer_left(now, freed=peer.rate / len(rest))

    def _share_project(self, key: str, pacer: KeyPacer) -> None:
        """The quota is project-wide (ErrorInfo says so, or the walls coincide): pace this key
        with its project's pacer from now on."""
        project = _project_of(key)
        if not project.startswith("projects/") or self._route.get(key) == project:
            return
        first = project not in self._pacers
        shared = self._governor.pacer(project)
        if shared is not pacer and key != project:
            shared.absorb(pacer, self._governor.now(), first=first)
            self._route[key] = project
            self._governor.wake_turns(pacer)
        self._trial.pop(project, None)  # told: no trial needed

    def _sole(self, project: str) -> None:
        """ErrorInfo said ``project``'s quota is project-wide: its pacer is alone when no other
        key of the project is paced on its own (every key that sent has joined it), since it
        then paces all the quota's traffic this run sends (see KeyPacer.alone)."""
        shared = self._pacers.get(project)
        if shared is None:
            return
        shared.alone = not any(
            other != project and other not in self._route and other in self._pacers
            for other in self._project_keys.get(project, ())
        )

    def _wall_onset(self, key: str, since: float, now: float, *, slow_start: bool) -> None:
        """``key``'s own pacer just met a wall. When another key of its project met one at
        about the same time, and that happened before, the keys probably share one quota: they
        are merged into the project's pacer on trial (:meth:`_judge_trial`). The walls that end
        slow start do not count: every key of a run starts at once and meets its first wall
        at about the same time, whatever its quota.

        A slow key's wall is found seconds after it began (its decision takes 16 answers or
        more), so two slow keys on one quota find their walls seconds apart, never within the
        second that makes them one event (three regions on one quota of 10-30/s, bare 429s,
        each at a few requests a second: merged late or never). A wall whose answers were
        sent over ``_SLOW_WALL`` seconds or more (``since`` to ``now``) began somewhere within
        them (the last ``_SLOW_SPAN`` seconds of them): two such spans that overlap, or come
        within ``_COINCIDE`` of each other, coincide. A faster key's wall is the moment it was
        found, as before (with spans counted from 1.5-2 s on, four regions on one quota of
        50/s drew 14% of 429s in simulation, 6.7% before; from 2.5 s on, 6.5%)."""
        project = _project_of(key)
        if key == project or project in self._separate or not project.startswith("projects/"):
            return
        if key in self._regional:
            return  # ErrorInfo says the quota is this region's own
        since = max(since, now - _SLOW_SPAN)
        if now - since < _SLOW_WALL:
            since = now
        self._onsets[key] = (since, now, slow_start)
        others = [
            other
            for other, (start, end, _) in self._onsets.items()
            if other != key
            and _project_of(other) == project
            and self._route.get(other) is None
            and max(since, start) - min(now, end) <= _COINCIDE
        ]
        if not others or all(self._onsets[k][2] for k in (key, *others)):
            return
        events, last = self._coincided.get(project, (0, -math.inf))
        if now - last > _COINCIDE:  # several keys meeting one wall are one event
            events += 1
        self._coincided[project] = (events, now)
        if events < _COINCIDENCES:
            return
        self._merge_on_trial(project, now)

    def _merge_on_trial(self, project: str, now: float) -> None:
        """Merge every key of ``project`` that met a wall into the project's pacer, on trial
        (:meth:`_judge_trial`)."""
        self._trial[project] = {}
        self._trial_seen[project] = {}
        self._merged_at[project] = now
        members = [k for k in self._onsets if _project_of(k) == project]
        # (What each key was let through since its first wall, not over the last second:
        # walls coincide when a window is spent, and the second before holds the window's
        # budget, up to three times the quota's average: two regions on one window of 117/s,
        # every 3 s, read 352/s apart, and every merge on it was undone. Nor since its first
        # send: that holds the burst a bucket saved before the run. See sustained_rate.)
        self._before_merge[project] = {
            k: self._governor.pacer(k).sustained_rate(now) for k in members
        }
        # Every key of the project that met a wall joins, not only the two that coincided.
        for member in members:
            self._join(member)

    def _join(self, key: str) -> None:
        """Pace ``key`` with its project's pacer, on trial while the merge is judged."""
        project = _project_of(key)
        trial = self._trial.get(project)
        self._share_project(key, self._governor.pacer(key))
        if trial is not None:
            self._trial[project] = trial
            trial.setdefault(key, [0, 0])

    def _judge_trial(self, key: str, throttled: bool) -> None:
        """Keys merged on coinciding walls: a shared quota refuses every key alike and
        accepts as much merged as apart; separate quotas refuse the key over its own limit and
        spare the other, and one pacer for both accepts less (it cannot hold each key just
        under its own quota). Undo the merge (for good) when the keys' throttle shares differ
        clearly (:meth:`_spared`: judged on every key with 16 answers since the merge or more,
        not waiting for the others) or the merged keys, refused, accept under 70% of what they
        did apart; confirm it after 128 answers per key otherwise (the keys still sending:
        one whose work is done is judged no more, see :meth:`_still_on_trial`; with one key
        left the trial ends there). (What the keys did apart: each one's
        :meth:`KeyPacer.sustained_rate` at the merge; what they accept merged: the trial's
        own answers since the merge, judged from 64 per key and not once the merged pacer
        parked.)

        Until session 23 the shares were judged once every key had 32 answers: six regions
        with windows of their own turning together were merged, the merged pacer (refused by
        the spent regions whatever its rate) cut to 3.7/s, and the trial waited 26 s for the
        slowest key's answers (4.07x the floor; 1.47x now)."""
        project = _project_of(key)
        trial = self._trial[project]
        counts = trial.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += throttled
        active = self._still_on_trial(project, key)
        if len(active) < 2:
            # The others' work is done: nothing left to judge, and the project's pacer paces
            # the key left alone. What it measured beside the others may have been a share
            # of one quota, or their quotas and not this key's: back to slow start from its
            # rate, as for any key whose peer finished (see KeyPacer.peer_left).
            del self._trial[project]
            self._pacers[project].peer_left(self._governor.now())
            return
        fewest = min(trial[k][0] for k in active)
        judged = [(t / n, n) for n, t in (trial[k] for k in active) if n >= _TRIAL_EARLY]
        if len(judged) < 2:
            return
        answered = sum(trial[k][0] for k in active)
        refused = sum(trial[k][1] for k in active)
        pooled = max(0.01, refused / answered)
        merged_at = self._merged_at[project]
        apart = self._before_merge[project]
        if self._spared(judged, pooled):
            self._split(project)
        elif fewest < _TRIAL_SAMPLES:
            return
        elif (
            pooled > 0.02
            and fewest >= 2 * _TRIAL_SAMPLES
            and self._pacers[project].parked_at < merged_at
            and (answered - refused) / max(self._governor.now() - merged_at, 1.0)
            < _TRIAL_WORSE * sum(apart.get(k, 0.0) for k in active)
        ):
            # Refused as one, yet accepted far less than the keys did apart: their quotas are
            # separate (one pacer cannot keep each key just under its own). Judged on what the
            # trial's answers accepted since the merge, 64 per key or more (what the last second
            # accepted just after the merge's first cut is no measure), and not once the merged
            # pacer parked (a spent window accepts nothing for a while, shared or not).
            self._split(project)
        elif fewest >= 4 * _TRIAL_SAMPLES:
            del self._trial[project]  # one quota: keep the project's pacer

    def _still_on_trial(self, project: str, key: str) -> list[str]:
        """The keys of ``project``'s trial still sending (``key`` just answered): a key on
        trial whose last answer came a second ago or more, none of its requests waiting for a
        turn, while the others were answered eight times or more since (the merged pacer
        grants its turns in order of asking: a key with work left would have had some), has
        finished its work, and is judged no more. Until session 29 the trial waited for its
        answers: never confirmed nor undone, and the project's pacer never went back to slow
        start for it, as a key paced apart does when its peer finishes (:meth:`_peers_gone`)."""
        now = self._governor.now()
        trial = self._trial[project]
        answers = sum(n for n, _ in trial.values())
        seen = self._trial_seen[project]  # (begun with the trial: _merge_on_trial)
        seen[key] = (now, answers)
        start = (self._merged_at[project], 0)
        active = []
        for member in trial:
            last, then = seen.get(member, start)
            gone = (
                member != key
                and now - last >= _IDLE
                and answers - then >= _TRIAL_GONE
                and not self._governor.queued(member)
            )
            if not gone:
                active.append(member)
        return active

    @staticmethod
    def _spared(judged: list[tuple[float, int]], pooled: float) -> bool:
        """Of the trial's keys with enough answers (their throttle shares and counts), one is
        refused like a wall (40%+) beside one hardly refused, clearly beyond chance: separate
        quotas. (Only then: the keys of one shared quota see unequal shares too, from timing
        alone: 10 of one key's 17 answers refused and 1 of the other's 16 on one minute's
        bucket. Under 32 answers a key, the shares must differ by 3.5 standard errors, not
        2.5.) From 32 answers each, a key refused steadily under 40% is enough too when its
        share is three times the other's or more, 3.5 standard errors apart: a merged pacer of
        two quotas, 61/s and 31/s, sent each key 57/s, one refused on 34 of 126 answers and
        the other on none, and the merge was confirmed (19% of 429s; 7% split). In the pacing
        sweeps no trial of one shared quota came near that (365 checks of such trials, at 32,
        64 and 96 answers each: none even 2.5 standard errors apart with one share twice the
        other)."""
        (low, n_low), (high, n_high) = min(judged), max(judged)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / n_low + 1 / n_high))
        z = 2.5 if min(n_low, n_high) >= _TRIAL_SAMPLES else 3.5
        if high - low > 0.03 + z * spread and high >= 0.4 and high > 4 * low:
            return True
        return (
            min(n_low, n_high) >= _TRIAL_SAMPLES
            and high - low > 0.03 + _SPARED_Z * spread
            and high > _SPARED_RATIO * low
        )

    def _split(self, project: str) -> None:
        """The merged keys have separate quotas: each gets its own pacer again, at 95% of
        what it was let through apart (or its share of the project pacer's rate), for good:
        no new trial starts for this project, and a split key's later walls are its own.
        Requests queued at the project's pacer queue at their keys' own at once.

        Until session 20 a split key rejoined the project's pacer at its next wall, for good
        and without a trial: three regions with buckets of one token at 37/s each, walls in
        step, were merged, split, rejoined and held to about one region's quota (1.76x the
        floor). Keeping them apart had been tried in session 7 and was worse then (separate
        quotas of 100 and 20 per second: 1.05x -> 1.65x; of 60, 20 and 10: 1.63x -> 4.4x: a
        split key's fresh pacer was cut to under a request a second and waited 32 answers
        to have the cut judged); simulated again at this change, those cases take 1.02x and
        1.17x with the rejoin and without (no merge of theirs is undone). The rejoin also
        repaired merges of one quota that the trial undid (the second before a merge held a
        spent window's budget, up to three times the quota's rate): the trial now judges
        what its own answers accepted (see :meth:`_judge_trial`)."""
        trial = self._trial.pop(project)
        self._separate.add(project)
        shared = self._pacers[project]
        self._governor.wake_turns(shared)  # its waiters queue at their keys' own pacers again
        apart = self._before_merge.get(project, {})
        for key in trial:
            if self._route.get(key) != project:
                continue
            del self._route[key]
            # What the key had apart, or an even share of the project's rate (a key that
            # joined later).
            rate = apart.get(key, 0.0) * 0.95 or shared.rate / len(trial)
            self._pacers[key] = self._governor.new_pacer(rate=max(rate, 1.0), alone=False)


def _project_of(key: str) -> str:
    """The group of ``key``'s peers: its project (``projects/P``), or for a key's reads paced
    apart its project's reads (``projects/P|reads``): a key's reads on a quota of their own
    are never a peer of its cancels, nor of another region's cancels."""
    base = key.removesuffix(READS)
    return "/".join(base.split("/")[:2]) + key[len(base) :]
