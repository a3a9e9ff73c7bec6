"""Shared test helpers: an engine wired to the in-memory Operations fake."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from bulkcancel._client import OperationsClient
from bulkcancel._engine import Engine, EngineOptions
from bulkcancel._limits import RateGovernor
from bulkcancel._models import OperationResult, Target
from bulkcancel._retry import Backoff
from bulkcancel.testing import MemoryOperations

PARENT = "projects/p/locations/l"


def op(i: int, parent: str = PARENT) -> str:
    return f"{parent}/operations/op-{i:05d}"


class NoAuth:
    sends_credentials = False

    async def headers(self) -> Mapping[str, str]:
        return {}

    async def invalidate(self, used: Mapping[str, str]) -> bool:
        return False


def make_client(
    mem: MemoryOperations, *, concurrency: int = 8, rate: float = 100_000.0, attempts: int = 4
) -> OperationsClient:
    return OperationsClient(
        mem.transport,
        endpoint="http://mem.invalid",
        api_version="v1",
        tokens=NoAuth(),
        governor=RateGovernor(rate),
        concurrency=concurrency,
        backoff=Backoff(base=0.0005, cap=0.002, max_attempts=attempts),
        rng=random.Random(0),
    )


FAST = EngineOptions(concurrency=8, deadline=0.3, poll_initial=0.005, poll_max=0.02, sweep_gap=0.01)


class Recorder:
    """Collects results and asserts nothing is reported twice."""

    def __init__(self) -> None:
        self.results: dict[str, OperationResult] = {}

    async def __call__(self, result: OperationResult) -> None:
        assert result.name not in self.results, f"{result.name} reported twice"
        self.results[result.name] = result

    def outcomes(self) -> dict[str, str]:
        return {name: r.outcome.value for name, r in self.results.items()}


async def run_engine(
    mem: MemoryOperations,
    targets: Iterable[Target | str],
    options: EngineOptions = FAST,
    **engine_kw: Any,
) -> tuple[Engine, Recorder]:
    client = make_client(mem, concurrency=options.concurrency)
    engine = Engine(client, options, **engine_kw)
    recorder = Recorder()
    items = [t if isinstance(t, Target) else Target(t) for t in targets]
    await engine.run(items, recorder)
    return engine, recorder
