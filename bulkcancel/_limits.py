"""Request pacing: a hard ceiling for the whole run, and an adaptive pacer per quota key.

Two layers, because they answer different questions:

* ``--rate`` is a promise to the user: never more than R requests per second, all calls of the run
  together. An aiolimiter leaky bucket enforces it, built as ``AsyncLimiter(burst, burst / rate)``
  with a burst of 20 ms worth, so the server never sees much more than R in any one-second window.
* The server's quota is a fact we learn. Google meters per project and region by default, so each
  quota key (``projects/P/locations/L``) gets its own pacer; when a throttle answer's ErrorInfo
  says the quota is project-wide (``quota_location: global``, or a limit name without a region),
  the key's requests are paced by one shared pacer for the project from then on. A request waits
  for its key's turn in a FIFO queue of that key *before* it takes an in-flight slot, so a
  throttled region never holds a slot a free region could use. A key's next turn is granted
  only once the turn before is on the wire (or given back), ``1/rate`` after that send when it
  waited past the next turn's time: turns granted while every slot was taken went out together
  when answers that came back together freed the slots together (a distant server, all 32 in
  flight), a burst a small bucket refused round after round, however low the key's rate. On a
  key held at a stated limit, any wait after the grant counts so (a bucket of one token
  refuses a turn brought early by the ceiling's wait for the one before).
* Which keys share one quota, when nothing says so (walls that coincide, a key starved beside
  another, trials that confirm or undo a merge, a finished key's peers back to slow start), is
  :class:`bulkcancel._sharing.QuotaSharing`'s: this governor asks it which pacer paces a key and
  tells it every answer.

The adaptive pacer of one key, and how it tells a quota wall from background noise, is
:class:`bulkcancel._pacer.KeyPacer` (its module docstring says what was borrowed from AWS's
adaptive retry, the SRE book and gRPC's retry throttling, and why). This module is the async
side: queues, grants, naps, hints, the ceiling and the stop.

Every waiting request is woken at once by :meth:`RateGovernor.stop`. Everything reads the running
loop's clock (or an injected one), so tests drive it on virtual time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from bulkcancel._answers import QuotaInfo
from bulkcancel._key_record import PacerState
from bulkcancel._metering import READS
from bulkcancel._pacer import KeyPacer
from bulkcancel._sharing import QuotaSharing

__all__ = ["Grant", "KeyExhaustedError", "RateGovernor", "Sleep"]

_HELD = 0.1  # seconds: a waiter held back by a granted turn not yet sent asks again (the
# send wakes it first: this only bounds a wake that never comes)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class Grant:
    """Permission to send one request, and what its answer must be reported against."""

    pacer: KeyPacer
    sent_at: float  # when granted, then when sent
    probe: bool = False
    #: counted in its pacer's ``granted`` until sent or given back (a grant the governor made)
    pending: bool = False

    @property
    def stale(self) -> bool:
        """The key parked or cut its rate after this (non-probe) grant, or its pacer was
        absorbed by its project's: it must wait its turn again, at the rate in force now (a
        pacer at the ceiling grants freely, and the grants queue for the ceiling)."""
        pacer = self.pacer
        return not self.probe and (
            pacer.state is PacerState.PARKED
            or pacer.parked_at > self.sent_at
            or pacer.cut_at > self.sent_at
            or pacer.merged_into is not None
        )


class KeyExhaustedError(Exception):
    """The key refused everything for its whole throttle budget (internal signal)."""


class RateGovernor:
    """Paces every request of a run: the ``--rate`` ceiling plus one adaptive pacer per quota key.

    Build it inside the running event loop (the leaky bucket binds to the loop on first use).
    ``clock`` defaults to the running loop's clock, so a test loop with virtual time drives the
    whole governor (aiolimiter reads ``loop.time()`` too). ``sleep`` replaces the interruptible
    waits (tests of the pure logic); with it, :meth:`stop` cannot cut a wait short.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Sleep | None = None,
        throttle_budget: float = 120.0,
        hint_cap: float = 60.0,
    ) -> None:
        if not rate > 0 or math.isinf(rate) or math.isnan(rate):
            raise ValueError("rate must be a positive number")
        self.ceiling = rate
        self.throttle_budget = throttle_budget
        self.hint_cap = hint_cap
        burst = max(1.0, rate / 50.0)  # 20 ms worth: smooth, and a small first burst
        self._limiter = _Ceiling(burst, burst / rate)
        self._clock = clock
        self._sleep = sleep
        self._pacers: dict[str, KeyPacer] = {}
        #: which keys of a project share one quota (their requests paced by one pacer)
        self.sharing = QuotaSharing(self, self._pacers)
        #: key -> its requests waiting for a turn (in :meth:`acquire_key`)
        self._queued: dict[str, int] = {}
        self._turns: dict[int, asyncio.Lock] = {}  # per pacer: one waiter at a time, FIFO
        self._naps: set[asyncio.Future[None]] = set()
        self._hint_waits: dict[int, set[asyncio.Future[None]]] = {}
        self._turn_naps: dict[int, set[asyncio.Future[None]]] = {}
        self._stopped = False

    def now(self) -> float:
        clock = self._clock
        if clock is None:
            # The loop's clock, looked up once: the governor lives in one loop (see above).
            clock = self._clock = asyncio.get_running_loop().time
        return clock()

    def pacer(self, key: str) -> KeyPacer:
        """The pacer that paces ``key``: its own, or its project's when they share a quota."""
        key = self.sharing.paced_by(key)
        pacer = self._pacers.get(key)
        if pacer is None:
            pacer = self._pacers[key] = self.new_pacer()
            self.sharing.not_alone(key)
        return pacer

    def key_for(self, key: str, *, read: bool) -> str:
        """The key a request asks its turn of: its quota key, or for a read the key's reads'
        own once they proved metered apart from its cancels (see :class:`QuotaSharing`)."""
        return self.sharing.key_for(key, read=read)

    def new_pacer(self, *, rate: float = 0.0, alone: bool = True) -> KeyPacer:
        """A key's pacer, at this run's ceiling, budget and hint cap (``rate`` 0: slow start)."""
        return KeyPacer(
            self.ceiling,
            rate=rate,
            throttle_budget=self.throttle_budget,
            hint_cap=self.hint_cap,
            alone=alone,
        )

    def waiting(self, pacer: KeyPacer) -> bool:
        """A request is waiting for ``pacer``'s turn."""
        turn = self._turns.get(id(pacer))
        return turn is not None and turn.locked()

    def queued(self, key: str) -> int:
        """Requests of ``key`` waiting for a turn (in :meth:`acquire_key`)."""
        return self._queued.get(key, 0)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Wake every waiter at once; from now on :meth:`acquire` grants nothing."""
        self._stopped = True
        for nap in list(self._naps):
            if not nap.done():
                nap.set_result(None)
        for waits in self._hint_waits.values():
            for nap in waits:
                if not nap.done():
                    nap.set_result(None)

    async def nap(self, seconds: float) -> None:
        """Sleep ``seconds`` unless stopped first: a stop wakes every nap at once."""
        if self._sleep is not None:
            await self._sleep(seconds)
            return
        if self._stopped or seconds <= 0:
            return
        await self._wait(seconds, self._naps)

    @staticmethod
    async def _wait(seconds: float, *groups: set[asyncio.Future[None]]) -> None:
        """Sleep ``seconds`` on the loop, or until whoever holds one of ``groups`` wakes us."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(seconds, _settle, fut)
        for group in groups:
            group.add(fut)
        try:
            await fut
        finally:
            handle.cancel()
            for group in groups:
                group.discard(fut)

    def try_acquire_key(self, key: str) -> Grant | None:
        """``key``'s turn if it is free now (nobody queued for it, no turn of it waiting to be
        sent, and its pacer grants at once): the fast path of :meth:`acquire_key`, with no
        await, so a caller needs no cancel scope around it. None: ask :meth:`acquire_key`
        (stopped, queued, held, paced or parked)."""
        if self._stopped:
            return None
        pacer = self.pacer(key)
        if self.waiting(pacer) or self._held(pacer):
            return None
        now = self.now()
        wait, probe = pacer.reserve(now)
        return self._grant(pacer, now, probe) if wait <= 0 else None

    async def acquire_key(
        self, key: str, deadline: float = math.inf, *, read: bool = False
    ) -> Grant | None:
        """Wait for ``key``'s turn (FIFO among its waiters), or for a read (``read``) the turn
        of the key its reads ask (:meth:`key_for`, asked again while it waits: reads paced apart
        while they waited at the key's pacer leave its queue for their own). None when stopped
        or when ``deadline`` (clock time) passes first. Raises :class:`KeyExhaustedError` when
        the key has refused everything for its throttle budget and no probe is due."""
        asked = self.key_for(key, read=read)
        grant = self.try_acquire_key(asked)
        if grant is not None or self._stopped:
            return grant
        self._queued[asked] = self._queued.get(asked, 0) + 1  # (a key with work left: trials)
        try:
            return await self._wait_turn(key, asked, deadline, read)
        finally:
            self._queued[asked] -= 1

    async def _wait_turn(self, key: str, asked: str, deadline: float, read: bool) -> Grant | None:
        """:meth:`acquire_key` when the turn is not free at once (``asked``: the key its turn is
        asked of now, ``key_for(key, read=read)``)."""
        pacer = self.pacer(asked)
        turn = self._turns.get(id(pacer))
        if turn is None:
            turn = self._turns[id(pacer)] = asyncio.Lock()
        async with turn:
            woken = False
            while self.pacer(self.key_for(key, read=read)) is pacer:
                if self._stopped:
                    return None
                now = self.now()
                if self._held(pacer) and pacer.next_free - now <= 0:
                    # The turn before is granted and not yet on the wire: its send (or its
                    # return) wakes us, and the spacing counts from that send. (Always a
                    # wakeable wait, even with an injected sleep.)
                    if now >= deadline:
                        return None
                    pacer.held = True
                    naps = self._turn_naps.setdefault(id(pacer), set())
                    await self._wait(min(_HELD, deadline - now), self._naps, naps)
                    woken = False
                    continue
                wait, probe = pacer.reserve(now, woken=woken)
                if wait <= 0:
                    return self._grant(pacer, now, probe)
                if pacer.exhausted(now):
                    raise KeyExhaustedError(asked)
                if now + wait > deadline:
                    if deadline > now:
                        await self.nap(deadline - now)
                    return None
                await self._turn_nap(pacer, wait)
                woken = True
        # The key's pacer was absorbed by its project's while this request waited (queue there),
        # or the project's pacer it queued at was split back into the keys' own, or the key's
        # reads were paced apart from its cancels (queue there).
        return await self.acquire_key(key, deadline, read=read)

    @staticmethod
    def _held(pacer: KeyPacer) -> bool:
        """A turn of ``pacer`` is granted and not yet sent: the next waits for it (a parked
        key's probe is one at a time anyway, and a turn granted before the park goes back)."""
        return pacer.granted > 0 and pacer.state is PacerState.ACTIVE

    @staticmethod
    def _grant(pacer: KeyPacer, now: float, probe: bool) -> Grant:
        pacer.granted += 1
        return Grant(pacer, now, probe, pending=True)

    def _went(self, grant: Grant, now: float, *, sent: bool, waited: float = 0.0) -> None:
        """``grant``'s turn is over: sent now, or given back. Wakes a waiter it held back."""
        if not grant.pending:
            return
        grant.pending = False
        pacer = grant.pacer
        pacer.went(now, sent=sent, waited=waited)
        if pacer.held:
            pacer.held = False
            self.wake_turns(pacer)

    async def _turn_nap(self, pacer: KeyPacer, seconds: float) -> None:
        """A nap until ``pacer``'s next turn, cut short by a stop or by a merge of the pacer
        into its project's (its waiters then queue there at once)."""
        if self._sleep is not None:
            await self._sleep(seconds)
            return
        await self._wait(seconds, self._naps, self._turn_naps.setdefault(id(pacer), set()))

    def try_ceiling(self) -> bool:
        """One unit of the run's ``--rate`` if the bucket has room now (no await); False when
        it has none or the run is stopped: then :meth:`acquire_ceiling`."""
        return not self._stopped and self._limiter.try_take()

    async def acquire_ceiling(self) -> bool:
        """One unit of the run's ``--rate``; False when stopped first."""
        if self._stopped:
            return False
        if self._limiter.try_take():
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acquire = asyncio.ensure_future(self._limiter.acquire())
        acquire.add_done_callback(lambda _: _settle(waiter))
        self._naps.add(waiter)
        try:
            await waiter
        finally:
            self._naps.discard(waiter)
            if not acquire.done():
                acquire.cancel()  # a stop: give the bucket's place back
        return not self._stopped

    def unused_ceiling(self) -> None:
        """A unit of the run's ``--rate`` taken for a request that goes back to its key's
        queue (its grant went stale while it waited): the next request in line may have it.
        Without this, a cut key's requests queued at the ceiling spent their units unsent:
        a hole of up to ``concurrency / --rate`` seconds in which nothing went out."""
        self._limiter.give_back()

    def sent(self, grant: Grant, *, waited: bool = False) -> None:
        """The granted request goes on the wire now: its evidence dates from this moment.
        ``waited``: it waited for an in-flight slot or the run's ceiling since its grant."""
        granted_at, grant.sent_at = grant.sent_at, self.now()
        now = grant.sent_at
        self._went(grant, now, sent=True, waited=now - granted_at if waited else 0.0)
        grant.pacer.current().sent(now)

    def release(self, grant: Grant) -> None:
        """A granted request that was never sent (stopped, cancelled, or its grant went
        stale): a probe is due again, and the key's next turn may be granted."""
        if grant.probe:
            grant.pacer.probe_out = False
        self._went(grant, self.now(), sent=False)

    async def acquire(self, key: str) -> Grant | None:
        """Wait for ``key``'s turn, then the run's ceiling (tests and simple callers)."""
        grant = await self.acquire_key(key)
        if grant is None:
            return None
        waited = not self.try_ceiling()
        if waited and not await self.acquire_ceiling():
            self.release(grant)
            return None
        self.sent(grant, waited=waited)
        return grant

    def report(
        self,
        grant: Grant,
        *,
        throttled: bool,
        hint: float | None = None,
        quota: QuotaInfo | None = None,
        key: str | None = None,
        read: bool = False,
    ) -> None:
        """The answer to a granted request, exactly once per attempt (``read``: a GET or a list
        page, not a cancel)."""
        if throttled and quota is not None and key is not None:
            self.sharing.told(key, quota, grant.pacer.current(), read=read)
        # A grant of a key whose pacer was since absorbed by its project's: the news is about
        # the shared quota, so the project's pacer hears it (a probe only counts where it was
        # granted).
        pacer = grant.pacer.current()
        if read and key is not None and not key.endswith(READS):
            apart = self.key_for(key, read=True)
            if apart != key:
                # A read granted before its key's reads were paced apart (by this answer, or
                # earlier): news of the reads' quota and its stated value, not the cancels'
                # (counted there, a read's 429s in flight cut the cancels too: writes at 60/s
                # and reads at 20/s, 1.35x the floor).
                key, pacer = apart, self.pacer(apart)
        was_parked = pacer.state is PacerState.PARKED
        onset = max(pacer.cut_at, pacer.parked_at)
        # Never cut nor parked yet: a wall now ends the key's slow start.
        slow_start = pacer.cut_at == -math.inf and pacer.parked_at == 0.0
        since = min(pacer.fresh_first_sent, grant.sent_at)  # (the evidence's first send)
        pacer.on_answer(
            self.now(),
            throttled=throttled,
            sent_at=grant.sent_at,
            probe=grant.probe and pacer is grant.pacer,
            hint=hint,
            quota=quota,
        )
        if grant.probe and pacer is not grant.pacer:
            grant.pacer.probe_out = False
        if key is not None and self.sharing.answered(
            key,
            grant,
            pacer,
            throttled=throttled,
            onset=onset,
            since=since,
            slow_start=slow_start,
            read=read,
        ):
            return  # (joined its project's pacer)
        resumed = was_parked and pacer.state is PacerState.ACTIVE
        if resumed:
            # Waiters of a parked key sleep a probe gap (up to a second) at a time: the key
            # sends again now, so they ask again now.
            self.wake_turns(pacer)
        if not throttled or resumed:
            self._wake_hints(pacer)
            if pacer is not grant.pacer:
                self._wake_hints(grant.pacer)

    async def hint_wait(self, grant: Grant, seconds: float) -> None:
        """Wait out a server's hint for one request: ``seconds`` (the caller caps it), or until
        the key accepts a request again, or a stop, whichever comes first."""
        if self._stopped or seconds <= 0:
            return
        if self._sleep is not None:
            await self._sleep(seconds)
            return
        await self._wait(seconds, self._hint_waits.setdefault(id(grant.pacer), set()))

    def _wake_hints(self, pacer: KeyPacer) -> None:
        for fut in self._hint_waits.get(id(pacer), ()):
            _settle(fut)

    def wake_turns(self, pacer: KeyPacer) -> None:
        """Wake the waiters napping for ``pacer``'s turn: they ask again at once."""
        for fut in self._turn_naps.get(id(pacer), ()):
            _settle(fut)

    def rates(self) -> dict[str, float]:
        """Current rate per quota key, for the report."""
        return {key: round(p.rate, 3) for key, p in self._pacers.items()}


class _Ceiling(AsyncLimiter):
    """aiolimiter's leaky bucket, with a synchronous take for when it has room.

    ``acquire()`` is a coroutine even when the bucket has room, and checks the room twice (two
    leaks): at thousands of requests a second that is measurable. ``try_take`` is what
    ``acquire`` does when it does not wait (aiolimiter 1.x: ``has_capacity``, then the level
    rises by the amount); with no room the caller awaits ``acquire()`` as before."""

    __slots__ = ()

    def try_take(self) -> bool:
        if not self.has_capacity():
            return False
        self._level += 1
        return True

    def give_back(self) -> None:
        """Return a unit taken for a request that is not sent after all; the next waiter, if
        the bucket now has room for it, goes at once (as after any leak)."""
        self._leak()
        self._level = max(0.0, self._level - 1)
        self._wake_next()


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
