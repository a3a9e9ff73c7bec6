"""The end of a run: a page is a fresh look at every operation of ours it shows.

A page that shows an operation whose cancel was refused (one look is all it needs), or one due
by now, settles it; one still running and not due is not looked at again before an interval
has passed. So no GET follows a page that just showed the operation, and a listing that showed
everything is not repeated for each handful that comes due after it. The last few operations
are not reached by walking the whole listing again.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import anyio

from bulkcancel._models import Target
from bulkcancel.testing import MemoryOperations
from bulkcancel.testing._model import Behavior
from tests._support import FAST, Recorder, capped, make_client, make_engine, now, op, virtual

LATENCY = 0.005  # every request takes 5 ms (virtual), unless a list page is said to take more
OPTIONS = replace(FAST, concurrency=32, deadline=60.0, poll_initial=0.5, list_page_size=500)


class Clocked:
    """A world of ``count`` operations in one parent (one list page holds them all), every
    ``refused_every``-th one not cancellable (cancel answers 400 FAILED_PRECONDITION and it
    keeps running), the rest cancelled ``cancel_delay`` seconds after the cancel lands. Records
    when each cancel was answered, each GET sent and each list page rendered."""

    def __init__(
        self, count: int, *, refused_every: int, cancel_delay: float, page_latency: float = LATENCY
    ) -> None:
        self.mem = MemoryOperations(clock=now)
        self.page_latency = page_latency
        self.names = [op(i) for i in range(count)]
        for i, name in enumerate(self.names):
            refused = i % refused_every == refused_every - 1
            behaviour = Behavior.NOT_CANCELLABLE if refused else Behavior.CANCELS
            self.mem.operations[name] = self.mem.model.add_operation(
                name, behaviour, cancel_delay=cancel_delay
            )
        self.answered: dict[str, float] = {}
        self.gets: list[tuple[float, str]] = []
        self.pages: list[float] = []
        self.mem.hook = self._hook

    async def _hook(self, method: str, name: str, kind: str) -> None:
        if kind == "get":
            self.gets.append((now(), name))
        await anyio.sleep(self.page_latency if kind == "list" else LATENCY)
        # The answer is rendered right after this returns, at this virtual instant.
        if kind == "cancel":
            self.answered[name] = now()
        elif kind == "list":
            self.pages.append(now())

    async def run(self, rate: float, *, page_cap: int | None = None) -> Recorder:
        transport = self.mem.transport if page_cap is None else capped(self.mem, page_cap)
        client = make_client(transport=transport, concurrency=OPTIONS.concurrency, rate=rate)
        engine = make_engine(client, OPTIONS)
        recorder = Recorder()
        await engine.run([Target(n) for n in self.names], recorder)
        self.end = now()
        return recorder


@virtual
async def test_no_get_follows_a_page_that_showed_the_operation_after_its_cancel() -> None:
    # The cancels take 1.5 s at 200/s; sweeps run meanwhile, and refused cancels keep arriving
    # while a sweep is on the wire: its page shows them, and must settle them.
    world = Clocked(300, refused_every=10, cancel_delay=0.0)
    recorder = await world.run(rate=200.0)
    assert recorder.outcomes() == {
        name: "unsupported" if i % 10 == 9 else "cancelled" for i, name in enumerate(world.names)
    }
    for sent, name in world.gets:
        shown = [t for t in world.pages if world.answered[name] < t < sent]
        assert not shown, f"GET {name} at {sent:.3f} after pages at {shown} showed it"
    # Every look settles in this world: nothing waits for a first poll after the last cancel.
    last_cancel = max(world.answered.values())
    assert world.end < last_cancel + OPTIONS.poll_initial, (world.end, last_cancel)
    assert sum(world.mem.calls.values()) <= 1.1 * len(world.names), world.mem.calls


@virtual
async def test_a_listing_that_showed_everything_is_not_repeated_for_each_handful_due() -> None:
    # Cancels are carried out 0.3 s after they land: the listing after the last cancel shows
    # the latest ones still running, and they come due one handful at a time after it.
    world = Clocked(300, refused_every=10, cancel_delay=0.3)
    recorder = await world.run(rate=200.0)
    assert set(recorder.outcomes().values()) == {"cancelled", "unsupported"}
    last_cancel = max(world.answered.values())
    after = [t for t in world.pages if t > last_cancel]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    # Each page showed every operation of ours: the next look at those it showed running is
    # an interval away, so the next listing is too.
    assert all(gap >= OPTIONS.poll_initial for gap in gaps), after
    assert world.gets == [] or all(t < last_cancel for t, _ in world.gets), world.gets
    assert sum(world.mem.calls.values()) <= 1.1 * len(world.names), world.mem.calls


@virtual
async def test_the_last_stragglers_are_not_reached_by_a_pass_from_the_first_page() -> None:
    # 10,000 operations on 20 pages of 500, rate out of the way, a page three times as slow as
    # a GET. The listing's order is the input's: a pass completes when the cancels reach its
    # last page, and the cancels answered after a sweep passed their page are left. A new pass
    # from the first page would walk all 20 pages one after another to reach them; it starts
    # at the page that listed them instead (or GETs take them, when that is quicker).
    world = Clocked(10_000, refused_every=10_001, cancel_delay=0.0, page_latency=3 * LATENCY)
    recorder = await world.run(rate=100_000.0, page_cap=1000)
    assert set(recorder.outcomes().values()) == {"cancelled"}
    full_pass = 10_000 // OPTIONS.list_page_size * world.page_latency
    tail = world.end - max(world.answered.values())
    assert tail < full_pass / 2, (tail, full_pass)
    assert sum(world.mem.calls.values()) <= 1.1 * len(world.names), world.mem.calls


@virtual
async def test_a_cancel_answered_not_found_gets_its_get_at_once_not_after_a_pass() -> None:
    # The missing names come last in the input, as they do when a list of names has gone
    # stale; no listing can show them, so their confirming GET must not wait for one.
    world = Clocked(300, refused_every=10, cancel_delay=0.0)
    missing = [f"{op(0).rsplit('/', 1)[0]}/gone-{i}" for i in range(20)]
    world.names += missing
    recorder = await world.run(rate=200.0)
    outcomes = recorder.outcomes()
    assert all(outcomes[name] == "not_found" for name in missing)
    for name in missing:
        (sent,) = [t for t, got in world.gets if got == name]
        # at once: behind at most the 20 cancels queued before it at 200/s (0.1 s), not after
        # a pass and a poll interval (0.5 s and more before)
        assert sent - world.answered[name] <= 0.11, (name, sent, world.answered[name])
