"""Quota keys do not hold each other up in the cancel pool (issue 8 item 3, the engine side)."""

from __future__ import annotations

import json
from dataclasses import replace

import anyio

from bulkcancel._models import OperationResult, Target
from bulkcancel._transport import RawResponse
from bulkcancel.testing import MemoryOperations
from tests._support import FAST, Recorder, make_client, make_engine, now, op, run_virtual

FREE = "projects/p/locations/free"
SLOW = "projects/p/locations/slow"
LATENCY = 0.01  # every request takes 10 ms (virtual)
SLOW_RATE = 2.0  # the throttled region admits 2 requests/s; the rest are answered 429
_REFUSED = json.dumps(
    {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded."}}
).encode()


def world(names: list[str]) -> MemoryOperations:
    mem = MemoryOperations()
    for name in names:
        mem.add(name, "cancels")
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


def free_region_finish(names: list[str]) -> float:
    """Virtual seconds until the last free-region result is reported."""
    options = replace(FAST, deadline=5.0)
    finished: list[float] = []

    async def main() -> None:
        mem = world(names)
        client = make_client(mem, concurrency=options.concurrency)
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
