"""The engine's input as an async iterable (what a drain feeds as re-listings find targets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from bulkcancel._models import Outcome, Target
from bulkcancel.testing import MemoryOperations
from tests._support import FAST, Recorder, make_client, make_engine, now, op, virtual


@virtual
async def test_an_async_feed_is_read_to_its_end_and_every_target_settles() -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(60)]
    for name in names:
        mem.add(name, "cancels")
    fed: list[str] = []

    async def feed() -> AsyncIterator[Target]:
        for batch in range(3):  # three re-listings, a second apart
            await anyio.sleep(1.0)
            for name in names[batch * 20 : (batch + 1) * 20]:
                fed.append(name)
                yield Target(name)

    client = make_client(mem, concurrency=FAST.concurrency)
    engine = make_engine(client)
    rec = Recorder()
    await engine.run(feed(), rec)
    assert fed == names
    assert rec.outcomes() == dict.fromkeys(names, "cancelled")
    assert mem.calls["cancel"] == len(names)
    assert now() >= 3.0  # the run waited for the feed's end, not for its first pause


@virtual
async def test_a_stop_ends_the_reading_of_an_async_feed_and_reports_what_was_taken() -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(1000)]
    for name in names:
        mem.add(name, "cancels")
    taken: list[str] = []
    client = make_client(mem, concurrency=FAST.concurrency)
    engine = make_engine(client)

    async def feed() -> AsyncIterator[Target]:
        for i, name in enumerate(names):
            if i == 50:
                engine.stop()
            taken.append(name)
            yield Target(name)
            await anyio.sleep(0.001)

    rec = Recorder()
    await engine.run(feed(), rec)
    # Not read past the stop: one target after it at most (the one handed over with the stop).
    assert len(taken) <= 51
    assert set(rec.results) == set(taken)
    assert rec.results[taken[-1]].outcome is Outcome.NOT_ATTEMPTED
    assert mem.calls["cancel"] <= 50


@virtual
async def test_an_abort_while_the_feed_waits_reports_what_was_taken() -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(30)]
    for name in names:
        mem.add(name, "never")
    client = make_client(mem, concurrency=FAST.concurrency)
    engine = make_engine(client)

    async def feed() -> AsyncIterator[Target]:
        for name in names:
            yield Target(name)
        await anyio.sleep_forever()  # a drain waiting for the next re-listing

    rec = Recorder()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, feed(), rec)
        await anyio.sleep(0.05)
        engine.abort()
    assert set(rec.results) == set(names)
