"""Quota keys do not hold each other up in the cancel pool (issue 8 item 3, the engine side)."""

from __future__ import annotations

import json
from dataclasses import replace

import anyio
import pytest

from bulkcancel._engine import EngineOptions
from bulkcancel._models import OperationResult, Target
from bulkcancel._transport import RawResponse
from bulkcancel.testing import MemoryOperations
from bulkcancel.testing._model import Behavior
from tests._support import FAST, Recorder, make_client, make_engine, now, op, run_virtual

FREE = "projects/p/locations/free"
SLOW = "projects/p/locations/slow"
LATENCY = 0.01  # every request takes 10 ms (virtual)
SLOW_RATE = 2.0  # the throttled region admits 2 requests/s; the rest are answered 429
_REFUSED = json.dumps(
    {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded."}}
).encode()


def world(names: list[str], cancel_delay: float = 0.0) -> MemoryOperations:
    mem = MemoryOperations(clock=now)
    for name in names:
        mem.operations[name] = mem.model.add_operation(
            name, Behavior.CANCELS, cancel_delay=cancel_delay
        )
    allowance = {"tokens": 1.0, "at": 0.0}

    async def hook(method: str, name: str, kind: str) -> RawResponse | None:
        await anyio.sleep(LATENCY)
        if not name.startswith(SLOW):
            return None
        t = now()  # a token bucket, burst 1, on the virtual clock
        allowance["tokens"] = min(1.0, allowance["tokens"] + (t - allowance["at"]) * SLOW_RATE)
        allowance["at"] = t
        if allowance["tokens"] >= 1.0:
            allowance["tokens"] -= 1.0
            return None
        return RawResponse(429, _REFUSED, "application/json")

    mem.hook = hook
    return mem


#: the defaults users run with: a first look half a second after a cancel, sweeps that rest
#: a second between passes while cancels go out (FAST shrinks these away)
REAL = EngineOptions(concurrency=32, deadline=60.0)
QUICK = replace(FAST, deadline=5.0)


def free_region_finish(
    names: list[str],
    options: EngineOptions = QUICK,
    rate: float = 1e5,
    cancel_delay: float = 0.0,
) -> float:
    """Virtual seconds until the last free-region result is reported."""
    finished: list[float] = []

    async def main() -> None:
        mem = world(names, cancel_delay)
        client = make_client(mem, concurrency=options.concurrency, rate=rate)
        engine = make_engine(client, options)
        rec = Recorder()

        async def emit(result: OperationResult) -> None:
            await rec(result)
            if result.name.startswith(FREE):
                finished.append(now())
            if all(rec.results.get(n) for n in names if n.startswith(FREE)):
                engine.stop()  # the throttled region's crawl is not what is measured

        await engine.run([Target(n) for n in names], emit)
        free = [n for n in names if n.startswith(FREE)]
        assert {rec.results[n].outcome.value for n in free} == {"cancelled"}

    run_virtual(main)
    return max(finished)


def test_a_throttled_region_does_not_hold_the_cancel_workers_a_free_one_needs() -> None:
    free = [op(i, FREE) for i in range(400)]
    slow = [op(i, SLOW) for i in range(400)]
    alone = free_region_finish(free)
    # The throttled region's backlog comes first in the input: the worst order for a pool that
    # takes targets in input order.
    beside = free_region_finish(slow + free)
    assert beside <= 1.2 * alone, (beside, alone)


@pytest.mark.parametrize("cancel_delay", [0.0, 0.3])
@pytest.mark.parametrize("slow_first", [True, False])
def test_a_free_region_is_reconciled_to_its_end_while_a_throttled_one_still_cancels(
    cancel_delay: float, slow_first: bool
) -> None:
    # With the options users run with, the free region's last cancels are answered while the
    # throttled region's cancels go on for minutes. Its operations left are looked at once
    # its own cancels are all answered, as they are when it is alone (the end of all cancels),
    # not at their first-look time, up to half a second later. (Issue 8 asks for 1.2x its time
    # alone; in a run this short that half second alone was 1.17-1.3x, so the bound here is
    # the mechanism's: what is left is the throttled region's share of the client's pace.)
    free = [op(i, FREE) for i in range(300)]
    slow = [op(i, SLOW) for i in range(300)]
    alone = free_region_finish(free, REAL, rate=200.0, cancel_delay=cancel_delay)
    names = slow + free if slow_first else free + slow
    beside = free_region_finish(names, REAL, rate=200.0, cancel_delay=cancel_delay)
    assert beside <= 1.05 * alone, (beside, alone)
