"""The first look after an accepted cancel waits as long as the server needs, learnt per run.

Against a server whose cancels settle at once, first GETs come within tens of milliseconds and
the run does not end ``poll_initial`` after its last cancel. Against one whose cancels take
longer than ``poll_initial``, the delay stays at ``poll_initial``: the same GETs as ever.

The names arrive at 100 a second (a slow input): with the client's slots or the rate busy
throughout, GETs wait their turn behind cancels whatever the delay, and the run ends when the
work is done either way; the delay shows where capacity is to spare.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import anyio

from bulkcancel._engine import ReconcileMode
from bulkcancel._models import Target
from bulkcancel._reconcile import FirstLook
from bulkcancel.testing import MemoryOperations
from bulkcancel.testing._model import Behavior
from tests._support import FAST, Recorder, make_client, make_engine, now, op, virtual

LATENCY = 0.005  # every request takes 5 ms (virtual)
ARRIVAL = 0.01  # seconds between names from the input
POLL_INITIAL = 0.5
OPTIONS = replace(
    FAST,
    concurrency=8,
    deadline=60.0,
    poll_initial=POLL_INITIAL,
    poll_max=2.0,
    reconcile=ReconcileMode.GET,
)


class Settling:
    """``count`` operations that are cancelled ``cancel_delay`` seconds after the cancel lands;
    records when each cancel was answered and when each GET was sent."""

    def __init__(self, count: int, *, cancel_delay: float) -> None:
        self.mem = MemoryOperations(clock=now)
        self.names = [op(i) for i in range(count)]
        for name in self.names:
            self.mem.operations[name] = self.mem.model.add_operation(
                name, Behavior.CANCELS, cancel_delay=cancel_delay
            )
        self.answered: dict[str, float] = {}
        self.gets: list[tuple[float, str]] = []
        self.mem.hook = self._hook

    async def _hook(self, method: str, name: str, kind: str) -> None:
        if kind == "get":
            self.gets.append((now(), name))
        await anyio.sleep(LATENCY)
        if kind == "cancel":
            self.answered[name] = now()

    async def run(self) -> Recorder:
        client = make_client(self.mem, concurrency=OPTIONS.concurrency)
        engine = make_engine(client, OPTIONS)
        recorder = Recorder()
        await engine.run(self._arriving(), recorder)
        self.end = now()
        return recorder

    async def _arriving(self) -> AsyncIterator[Target]:
        for name in self.names:
            yield Target(name)
            await anyio.sleep(ARRIVAL)

    def first_gets(self) -> dict[str, float]:
        """name -> seconds from its cancel's answer to its first GET."""
        first: dict[str, float] = {}
        for sent, name in self.gets:
            first.setdefault(name, sent - self.answered[name])
        return first


@virtual
async def test_cancels_that_settle_at_once_are_looked_at_early() -> None:
    # 200 names over 2 s: the delay has time to learn.
    world = Settling(200, cancel_delay=0.0)
    recorder = await world.run()
    assert set(recorder.outcomes().values()) == {"cancelled"}
    assert Counter(name for _, name in world.gets) == Counter(world.names)  # one GET each
    waits = world.first_gets()
    late = sorted(waits[name] for name in world.names[100:])  # once the delay has learnt
    assert late[len(late) // 2] < 0.05, late
    # The run ends soon after its last cancel, not poll_initial after it.
    assert world.end - max(world.answered.values()) < 0.1


@virtual
async def test_cancels_that_settle_slowly_keep_the_delay_and_the_requests() -> None:
    # Done 1 s after the cancel lands: the look at +0.5 s finds it running, the next done.
    world = Settling(200, cancel_delay=1.0)
    recorder = await world.run()
    assert set(recorder.outcomes().values()) == {"cancelled"}
    waits = world.first_gets()
    assert min(waits.values()) >= POLL_INITIAL
    # What a fixed delay makes: a look 0.5 s after the cancel, the next 0.75 s after that.
    assert Counter(Counter(name for _, name in world.gets).values()) == {2: 200}


@virtual
async def test_cancels_that_settle_after_a_while_are_looked_at_about_then() -> None:
    # Done 0.1 s after the cancel lands: the delay comes down towards it and no further.
    world = Settling(200, cancel_delay=0.1)
    recorder = await world.run()
    assert set(recorder.outcomes().values()) == {"cancelled"}
    waits = world.first_gets()
    late = sorted(waits[name] for name in world.names[100:])
    assert 0.05 < late[len(late) // 2] < 0.3, late
    assert len(world.gets) <= 1.25 * len(world.names)


def test_first_look_delay_stays_between_its_floor_and_poll_initial() -> None:
    look = FirstLook(0.5)
    look.found(done=False)
    assert look.delay == 0.5  # never past poll_initial
    for _ in range(200):
        look.found(done=True)
    assert look.delay == 0.5 / 50  # never below a fiftieth of it
    # Seven done for every one still running: the delay holds where it is.
    look = FirstLook(0.5)
    look.delay = 0.1
    for _ in range(20):
        for _ in range(7):
            look.found(done=True)
        look.found(done=False)
    assert abs(look.delay - 0.1) < 1e-9
