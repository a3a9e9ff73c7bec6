"""The reconciler: from an answered cancel to a settled operation, by GET or by sweeping listings.

A heap of operations by next poll time; a loop that wakes when the earliest is due (or a parent
is ready for a sweep), turns what is due into jobs (``_plan``: a GET each, or one sweep of a
parent's listing, chosen by ``_reconcile.prefer_list``) and hands them to ``concurrency``
workers. Sweeps start while cancels are still going out and settle operations page by page; a
sweep that reaches the cancels still on the wire pauses there and resumes from the same page
later (see ``_reconcile.Parent``). A sweep has a page budget and obeys the deadline, then its
parent goes to GET.

A page is a fresh look at every operation of ours it shows (``_take_page``). A new pass starts
at the earliest page that listed the operations left while their cancels were unanswered, when
the last complete pass listed them all so, not at the first page (``_rewind``). Once every
cancel of a parent is answered and the input is done (``_parent_answered``; other parents'
cancels may still be going out), the parent's sweep no longer rests between passes and GETs
take its operations left instead when that ends sooner (``_tail_by_get``).

Where GETs do the looking (``--reconcile get``, or a parent whose listing was given up), the
first GET after an accepted cancel waits a delay learnt per run (``_reconcile.FirstLook``): it
starts at ``poll_initial`` and shrinks while first looks find the operation done, grows back
(never past ``poll_initial``) while they find it still running, so that about 7 in 8 find it
done. Against a server whose cancels settle at once the run does not end ``poll_initial`` after
its last cancel; against a slow one the looks, and the requests, are those of a fixed delay.
Later looks back off from ``poll_initial`` by ``poll_factor`` up to ``poll_max``.

``Reconciler`` is the engine's base class: ``Engine`` (``_engine.py``) adds the input, the
cancel pool, the journal and the stops, and says how a result is reported (``_finish``) and
how the input is let go on (``_release``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._classify import Verdict, classify, is_done, is_not_found, malformed
from bulkcancel._client import OperationsClient
from bulkcancel._engine_options import EngineOptions, EngineStats, ReconcileMode
from bulkcancel._handoff import Handoff
from bulkcancel._names import in_our_spelling, parent_of
from bulkcancel._reconcile import Costs, FirstLook, Parent, Pending, prefer_list


@dataclass(eq=False, slots=True)
class _Sweep:
    parent: Parent
    due: list[Pending]


TAKEN, SENT = False, True  # values of Reconciler._in_cancel
#: ``Pending.ticket`` of an operation taken off the heap for a job (a GET or a sweep's due)
_TAKEN_OFF = -1


class Reconciler:
    """The reconciling half of one run (see the module docstring); ``Engine`` is the whole."""

    def __init__(
        self, client: OperationsClient, options: EngineOptions, clock: Callable[[], float]
    ) -> None:
        self._client = client
        self._opt = options
        self._clock = clock
        self.stats = EngineStats()
        self._stopping = False
        self._clip = math.inf  # after a graceful stop: reconcile no later than this
        #: Handed to the cancel pool, not yet answered: name -> whether its cancel was sent.
        self._in_cancel: dict[str, bool] = {}
        #: per parent, cancels taken from the input and not answered yet (the engine counts)
        self._unanswered: dict[str, int] = {}
        self._pending: dict[str, Pending] = {}
        self._parents: dict[str, Parent] = {}
        self._heap: list[tuple[float, int, Pending]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        #: when the sleeping reconciler will wake by itself (-inf while it is awake)
        self._wake_at = -math.inf
        #: parents whose sweep should (re)start now, not at the next due time
        self._ready: set[str] = set()
        self._input_done = False
        self._cancels_done = False
        self._reconciling = 0
        self._costs = Costs()
        self._first_look = FirstLook(options.poll_initial)
        self._rate_window = (0.0, 0)  # (when, client requests then): the rate actually reached
        self._rate_binds = False

    # -- what the engine provides ------------------------------------------------------------

    def _release(self) -> None:
        """An operation left the reconciler: the input may go on."""
        raise NotImplementedError

    def _end_grace(self) -> None:
        """The grace is over: no more calls."""
        raise NotImplementedError

    async def _finish(
        self, name: str, outcome: Any, details: dict[str, Any], calls: int = 0
    ) -> None:
        """Report one result."""
        raise NotImplementedError

    # -- the reconciler ----------------------------------------------------------------------

    def _schedule(self, name: str, cancel: Answer | None, *, accepted: bool, calls: int) -> None:
        now = self._clock()
        opt = self._opt
        key = sys.intern(parent_of(name))
        parent = self._parents.get(key)
        if parent is None:
            parent = self._parents[key] = Parent(key)
        # A refused cancel needs one GET, now; an accepted one is polled until the deadline,
        # first after the delay learnt from the server where GETs do the looking
        # (``FirstLook``). Where sweeps may, the due times weigh sweeps against GETs
        # (``_plan``): they keep ``poll_initial``.
        deadline_at = now + opt.deadline if accepted else now
        by_get = parent.no_list or opt.reconcile is ReconcileMode.GET
        delay = self._first_look.delay if by_get else opt.poll_initial
        first = min(now + delay, deadline_at) if accepted else now
        pending = Pending(name, key, cancel, accepted, deadline_at, opt.poll_initial, first, calls)
        pending.joined_pass = parent.pass_no
        # (A cancel accepted in an earlier run is no measure of how soon cancels settle.)
        pending.first_look = accepted and cancel is not None
        # A cancel answered NOT_FOUND names an operation no listing will show: its one GET
        # goes now, not after a pass that cannot find it.
        pending.force_get = cancel is not None and is_not_found(cancel)
        if parent.wire_pages:
            pending.wire_page = parent.wire_pages.pop(name, None)
        self._pending[name] = pending
        parent.members[name] = pending
        parent.joined += 1
        self._push(pending)
        if parent.joined >= self._sweep_trigger(parent) and self._listing(parent):
            self._ready.add(key)
            if self._wake_at > now:
                self._wake.set()

    def _sweep_trigger(self, parent: Parent) -> int:
        """How many operations joining a parent are worth a sweep before anyone is due: about a
        page of them, so a sweep following the cancels fetches each page about once."""
        per_page = parent.page_entries or self._opt.list_page_size or 50
        return max(self._opt.list_threshold, min(int(per_page), self._opt.max_pending // 4))

    def _push(self, pending: Pending, at: float | None = None) -> None:
        """(Re)schedule a look at ``pending.due``, or at ``at`` when it is deferred. Its
        earlier heap entry, if any, goes stale (the ticket)."""
        when = pending.due if at is None else at
        pending.ticket = ticket = next(self._seq)
        heapq.heappush(self._heap, (when, ticket, pending))
        if when < self._wake_at:  # only when the reconciler would otherwise sleep past it
            self._wake.set()

    async def _reconciler(self) -> None:
        jobs = Handoff[Pending | _Sweep]()
        async with anyio.create_task_group() as tg:
            for _ in range(self._opt.concurrency):
                tg.start_soon(self._reconcile_worker, jobs)
            try:
                while True:
                    now = self._clock()
                    if now >= self._clip:
                        self._end_grace()
                        return
                    heap = self._heap
                    while heap and _stale(heap[0]):
                        heapq.heappop(heap)
                    if not heap:
                        if self._cancels_done and not self._reconciling:
                            return
                        await self._wait(None if math.isinf(self._clip) else self._clip - now)
                        continue
                    due_at = min(heap[0][0], self._clip)
                    if due_at > now and not self._ready:
                        # Wake a little late so that one wake-up gathers everything due close
                        # together (polls are half a second apart at least: nobody notices).
                        await self._wait(due_at - now + _COALESCE)
                        continue
                    due: list[Pending] = []
                    while heap and heap[0][0] <= now:
                        entry = heapq.heappop(heap)
                        if not _stale(entry):
                            entry[2].ticket = _TAKEN_OFF  # a job now, not in the heap
                            due.append(entry[2])
                    for job in self._plan(due, now):
                        self._reconciling += 1
                        await jobs.put(job)
            finally:
                jobs.close()

    async def _wait(self, delay: float | None) -> None:
        self._wake_at = math.inf if delay is None else self._clock() + delay
        with anyio.move_on_after(delay):
            await self._wake.wait()
        self._wake_at = -math.inf  # awake: nobody needs to ring
        self._wake = anyio.Event()

    def _plan(self, due: list[Pending], now: float) -> list[Pending | _Sweep]:
        """Turn due operations (and parents ready for a sweep) into jobs."""
        jobs: list[Pending | _Sweep] = []
        groups: dict[str, list[Pending]] = {key: [] for key in self._ready}
        self._ready.clear()
        self._measure_rate(now)
        for pending in due:
            if pending.force_get or self._opt.reconcile is ReconcileMode.GET:
                jobs.append(pending)
            else:
                groups.setdefault(pending.parent, []).append(pending)
        for key, members in groups.items():
            parent = self._parents.get(key)
            if parent is None or not parent.members:
                continue
            if not parent.sweeping:
                self._rewind(parent)  # so that the pages a new pass needs are counted right
            if not members and not parent.sweeping and self._tail_by_get(parent):
                self._hand_to_gets(parent, now)
                continue
            if not self._listing(parent) or not self._list_pays(parent, members):
                jobs.extend(members)
                continue
            # A pass that just ended rests ``sweep_gap`` while the parent's cancels still go
            # out (the next one would find little new). Once they are all answered nothing new
            # joins: a rest would only be a tail, and the members due are worth a pass by the
            # cost model. (Per parent: a throttled region's cancels do not hold a free one's.)
            resting = not parent.in_pass and now < parent.next_sweep and not self._answered(parent)
            if parent.sweeping or resting:
                # A sweep is running or the listing rests: these wait for the next pass.
                # They stay due: a page of the running (or next) pass that shows one settles it.
                retry_at = max(parent.next_sweep, now + self._opt.poll_initial)
                for pending in members:
                    self._push(pending, at=retry_at)
                continue
            parent.sweeping = True
            parent.joined = 0
            jobs.append(_Sweep(parent, members))
        return jobs

    def _answered(self, parent: Parent) -> bool:
        """Nothing more joins ``parent``: the input is done and its cancels are answered
        (other parents' cancels may still be going out)."""
        return self._input_done and parent.name not in self._unanswered

    def _parent_answered(self, key: str) -> None:
        """The engine, once per parent: it is now ``_answered``. Its operations left are
        swept (or handed to GETs) now, not at their due times: a free region does not wait
        for a throttled one's cancels."""
        if key in self._parents:
            self._ready.add(key)
            if self._wake_at > self._clock():
                self._wake.set()

    def _tail_by_get(self, parent: Parent) -> bool:
        """The parent's cancels are all answered (nothing joins any more): would GETs for all
        the operations left, now, end sooner than the pages left to walk one after another? (A
        pass that restarts from its first page to reach a few stragglers is a serial tail.)"""
        if not self._answered(parent) or self._opt.reconcile is not ReconcileMode.AUTO:
            return False
        left = len(parent.members)
        return left > 0 and not prefer_list(
            parent,
            left,
            rate_binds=self._rate_binds,
            cancels_pending=False,
            concurrency=self._opt.concurrency,
            costs=self._costs,
        )

    def _hand_to_gets(self, parent: Parent, now: float) -> None:
        """Every operation left of ``parent`` gets a GET now, but those already on a job."""
        for pending in parent.members.values():
            if pending.ticket != _TAKEN_OFF:
                pending.force_get = True
                pending.due = now
                self._push(pending)

    def _listing(self, parent: Parent) -> bool:
        if parent.no_list or self._stopping or self._opt.reconcile is ReconcileMode.GET:
            # While stopping, the grace is short: one GET each is the bounded way.
            return False
        if self._opt.reconcile is ReconcileMode.LIST:
            return True
        return len(parent.members) >= self._opt.list_threshold or parent.in_pass

    def _list_pays(self, parent: Parent, due: list[Pending]) -> bool:
        if self._opt.reconcile is ReconcileMode.LIST:
            return True
        if not due:  # an early sweep, ahead of any due time: costs nothing GETs would not
            return True
        return prefer_list(
            parent,
            len(due),
            rate_binds=self._rate_binds,
            cancels_pending=not self._cancels_done,
            concurrency=self._opt.concurrency,
            costs=self._costs,
        )

    def _measure_rate(self, now: float) -> None:
        """Does the ``--rate`` bind? Compare the request rate reached with the pacer's."""
        since, count = self._rate_window
        elapsed = now - since
        if elapsed < 0.5:
            return
        total = self._client.stats.total
        self._rate_window = (now, total)
        reached = (total - count) / elapsed
        rates = self._client.rates()
        ceiling = min(rates.values()) if rates else math.inf
        self._rate_binds = self._client.stats.throttled > 0 or reached >= 0.7 * ceiling

    async def _reconcile_worker(self, jobs: Handoff[Pending | _Sweep]) -> None:
        while (job := await jobs.get()) is not None:
            try:
                if isinstance(job, _Sweep):
                    await self._sweep(job)
                else:
                    await self._poll(job)
            finally:
                self._reconciling -= 1
                if self._reconciling == 0 or isinstance(job, _Sweep):
                    self._wake.set()  # the end may be reached, or a parent is free again

    async def _poll(self, pending: Pending) -> None:
        if pending.settled:
            return
        started = self._clock()
        answer = await self._client.get(pending.name)
        self._costs.record_get(self._clock() - started)
        pending.calls += answer.attempts
        pending.force_get = False
        if pending.first_look and answer.ok and answer.body is not None:
            pending.first_look = False
            self._first_look.found(done=is_done(answer.body))
        if pending.settled:  # a sweep may have settled it meanwhile
            return
        if answer.kind is AnswerKind.STOPPED:
            # The run is ending: settle from what was last seen rather than call again.
            verdict = classify(pending.cancel, pending.last_get, accepted=pending.accepted)
            verdict.details["interrupted"] = True
            await self._settle(pending, verdict)
            return
        await self._observe(pending, answer)

    async def _observe(self, pending: Pending, answer: Answer) -> bool:
        """Settle or reschedule after a GET (or a listing entry); True when it settled."""
        pending.last_get = answer
        now = self._clock()
        body = answer.body
        # A malformed Operation is final too: polling it again until the deadline tells nothing.
        running = answer.ok and body is not None and not is_done(body) and malformed(body) is None
        final = not running or not pending.accepted or now >= min(pending.deadline_at, self._clip)
        if final:
            passed = running and pending.accepted
            verdict = classify(
                pending.cancel, answer, accepted=pending.accepted, deadline_passed=passed
            )
            await self._settle(pending, verdict)
            return True
        pending.interval = min(pending.interval * self._opt.poll_factor, self._opt.poll_max)
        pending.due = min(now + pending.interval, pending.deadline_at)
        self._push(pending)
        return False

    async def _sweep(self, sweep: _Sweep) -> None:
        """Walk the parent's listing from where its pass stands; settle what the pages show.

        Ends at the end of the listing, at the cancels still on the wire (the pass resumes
        there later), at the page budget or the deadline, or when the run stops."""
        parent = sweep.parent
        answered = self._answered(parent)
        self.stats.sweeps += 1
        due = {p.name: p for p in sweep.due}
        self._rewind(parent)
        if not parent.in_pass:
            parent.in_pass, parent.cursor, parent.pass_pages = True, None, 0
            parent.pass_no += 1
        pages = 0
        failed = complete = to_gets = False
        tokens_seen: set[str] = set()
        horizon = min(self._clip, max((p.deadline_at for p in parent.members.values()), default=0))
        try:
            while not self._stopping:
                token = parent.cursor
                started = self._clock()
                answer = await self._client.list_page(
                    parent.name, page_size=self._opt.list_page_size, page_token=token
                )
                now = self._clock()
                pages += 1
                parent.pages += 1
                parent.pass_pages += 1
                self.stats.sweep_pages += 1
                if not answer.ok or answer.body is None:
                    failed = answer.kind is not AnswerKind.STOPPED
                    break
                operations = answer.body.get("operations")
                entries = operations if isinstance(operations, list) else []
                parent.record_page(now - started, len(entries))
                ours, on_the_wire = await self._take_page(parent, entries, due, token)
                next_token = answer.body.get("nextPageToken")
                if not isinstance(next_token, str) or not next_token:
                    complete = True
                    break
                if next_token in tokens_seen or next_token == token:
                    failed = True  # a server that repeats itself would page forever
                    break
                tokens_seen.add(next_token)
                ahead = on_the_wire or (ours == 0 and not self._input_done)
                if ahead and parent.paused_at != token:
                    # The cancels have not got this far: resume from this page later, once.
                    parent.paused_at = token
                    parent.pass_pages -= 1  # fetched again then: a pass counts its pages once
                    break
                parent.cursor = next_token
                if pages >= self._opt.sweep_page_budget or now >= horizon:
                    failed = True  # this listing costs more than it settles: GETs from here
                    break
                if self._opt.reconcile is ReconcileMode.AUTO and parent.wasteful():
                    failed = True
                    break
                if self._tail_by_get(parent):
                    to_gets = True  # the pass stays where it is
                    break
        finally:
            parent.sweeping = False
        if complete:
            self._pass_complete(parent)
        wasteful = self._opt.reconcile is ReconcileMode.AUTO and parent.wasteful()
        if (failed or wasteful) and not parent.no_list:
            parent.no_list = True
            self.stats.list_disabled.append(parent.name)
        now = self._clock()
        if to_gets:
            self._hand_to_gets(parent, now)
        for pending in due.values():  # due and not on the pages walked
            if pending.settled or pending.force_get:  # (_pass_complete queued its GET)
                continue
            if parent.no_list or to_gets:
                pending.force_get = True
                pending.due = now
                self._push(pending)
            else:  # on a page the paused pass has not reached yet: the pass resumes for it
                self._push(pending, at=now + pending.interval)
        if not (answered or to_gets or parent.no_list) and self._answered(parent):
            # The last cancels were answered during this sweep (the signal found it busy): the
            # operations its pages did not show are looked at now, not at their due times.
            unseen = (p.seen_pass != parent.pass_no for p in parent.members.values())
            if any(unseen):
                self._ready.add(parent.name)
                self._wake.set()

    async def _take_page(
        self, parent: Parent, entries: list[Any], due: dict[str, Pending], token: str | None
    ) -> tuple[int, bool]:
        """Settle from one page; returns how many of ours it showed, and whether any of them
        still has its cancel on the wire.

        A page is a fresh look at every member it shows, due or not: one finished, refused
        (its cancel was refused: one look is all it needs) or due by now is observed as a GET
        would be; one still running and not due yet is not looked at again sooner than an
        interval from now (so no GET, nor another pass, follows a look just taken)."""
        members = parent.members
        now = self._clock()
        ours = 0
        on_the_wire = False
        for operation in entries:
            name = operation.get("name") if isinstance(operation, dict) else None
            if not isinstance(name, str):
                continue
            name = in_our_spelling(name, parent.name)  # (a project listed by its number)
            pending = members.get(name)
            if pending is None:
                sent = self._in_cancel.get(name)
                if sent is not None:  # taken, its cancel not answered yet: it joins later
                    parent.wire_pages[name] = (parent.pass_no, parent.pass_pages - 1, token)
                    if sent is SENT:
                        on_the_wire = True
                        ours += 1
                continue
            ours += 1
            pending.seen_pass = parent.pass_no
            pending.first_look = False  # a page's look comes whenever the sweep does
            if pending.settled:
                continue
            listed = Answer(AnswerKind.OK, 200, body=operation)
            due.pop(name, None)
            finished = is_done(operation) or malformed(operation) is not None
            parent.record_look(finished)
            if finished or not pending.accepted or pending.due <= now:
                if await self._observe(pending, listed):
                    self.stats.settled_by_list += 1
                continue
            pending.last_get = listed  # the latest look: what a stop would settle from
            later = min(now + pending.interval, pending.deadline_at)
            if later > pending.due:
                pending.due = later
                self._push(pending)
        parent.found += ours
        return ours, on_the_wire

    def _pass_complete(self, parent: Parent) -> None:
        parent.full_pass_pages = parent.pass_pages
        parent.in_pass, parent.cursor, parent.paused_at = False, None, None
        parent.next_sweep = self._clock() + self._opt.sweep_gap
        now = self._clock()
        for pending in parent.members.values():
            covered = pending.joined_pass < parent.pass_no  # this pass had to list it
            if covered and not pending.settled and pending.seen_pass != parent.pass_no:
                pending.force_get = True  # not in the listing: ask directly
                pending.due = now
                self._push(pending)

    def _rewind(self, parent: Parent) -> None:
        """Before a new pass: when every operation left was listed by the last complete pass
        while its cancel was not answered yet, the new pass starts at the earliest of those
        pages, not at the first page (the pages before it showed nothing that is left)."""
        if parent.in_pass:
            return
        marks = []
        for pending in parent.members.values():
            if pending.settled or pending.force_get:
                continue
            mark = pending.wire_page
            if mark is None or mark[0] != parent.pass_no:
                return
            marks.append(mark)
        if not marks:
            return
        _, index, token = min(marks, key=lambda mark: mark[1])
        parent.in_pass, parent.cursor, parent.pass_pages = True, token, index
        parent.pass_no += 1

    async def _settle(self, pending: Pending, verdict: Verdict) -> None:
        pending.settled = True
        self._pending.pop(pending.name, None)
        self._release()
        parent = self._parents.get(pending.parent)
        if parent is not None:
            parent.members.pop(pending.name, None)
            idle = not (parent.members or parent.in_pass or parent.sweeping or parent.pages)
            if idle and not parent.no_list:  # nothing learnt worth keeping
                del self._parents[pending.parent]
        details = verdict.details  # classify builds a fresh dict for every verdict
        if pending.accepted and pending.cancel is None:
            details["resumed"] = True
        await self._finish(pending.name, verdict.outcome, details, pending.calls)


def _stale(entry: tuple[float, int, Pending]) -> bool:
    """A heap entry that no longer stands for a look: settled, or rescheduled since."""
    pending = entry[2]
    return pending.settled or pending.ticket != entry[1]


#: seconds the reconciler may wake late so that operations due together go out together
_COALESCE = 0.01
