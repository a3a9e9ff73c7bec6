"""Use bulkcancel as a library: cancel, stream results, and decide what to do with each.

Run it against the built-in fake (no account, no network)::

    python examples/library_example.py

Against Google, drop ``endpoint``/``anonymous`` and let Application Default Credentials apply
(or pass ``token=`` / ``credentials=``).
"""

from __future__ import annotations

import asyncio

import bulkcancel
from bulkcancel.testing import Behavior, FakeOperationsServer


async def main() -> int:
    fake = FakeOperationsServer()
    parent = "projects/example/locations/us-central1"
    names = [f"{parent}/operations/op-{i}" for i in range(20)]
    for i, name in enumerate(names):
        fake.add_operation(name, Behavior.COMPLETES_ANYWAY if i % 5 == 0 else Behavior.CANCELS)

    async with fake.serve() as endpoint:
        # 1. The whole job in one call: a report with totals and one record per operation.
        report = await bulkcancel.cancel_operations(
            names, endpoint=endpoint, anonymous=True, rate=100, deadline=10
        )
        print("totals:", {k: v for k, v in report.totals.items() if v})
        print("requests per operation:", report.meta["requests"]["per_operation"])

        # 2. The streaming form: act on each result as it settles.
        async with bulkcancel.stream_operations(
            [f"{parent}/operations/missing-{i}" for i in range(3)],
            endpoint=endpoint,
            anonymous=True,
        ) as results:
            async for result in results:
                print(f"{result.outcome.value:>16}  {result.name}")
    return 0 if report.ok else 3


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
