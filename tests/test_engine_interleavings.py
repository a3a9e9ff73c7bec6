"""A stateful property test: hypothesis decides the order in which the server answers.

Every request the engine sends is parked; a driver lets hypothesis pick which parked request is
answered next, whether that answer is a fault (only in the first 25 answers, so that bounded
retries always get through in the end), and when the run is asked to stop. Whatever the
interleaving: every input ends in exactly one outcome, the totals add up, no operation receives
two accepted cancels, and without a stop each outcome is the scripted one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkcancel._models import Outcome, Target
from bulkcancel._transport import CallableTransport, RawResponse, TransportError
from bulkcancel.testing import MemoryOperations
from tests._support import FAST, Recorder, make_client, make_engine, op, run_virtual

EXPECTED = {
    "cancels": "cancelled",
    "completes": "completed_anyway",
    "already_done": "completed_anyway",
    "unsupported": "unsupported",
    "denied": "permission_denied",
    "missing": "not_found",
}
FAULTS: dict[str, RawResponse] = {
    "503": RawResponse(503, b'{"error":{"code":503,"status":"UNAVAILABLE"}}', "application/json"),
    "429": RawResponse(
        429, b'{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}', "application/json"
    ),
    "502": RawResponse(502, b"<html>bad gateway</html>", "text/html"),
}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    schedule=st.lists(st.integers(0, 1 << 16), min_size=1, max_size=64),
    faults=st.lists(st.sampled_from([None, None, None, "503", "429", "502", "reset"]), max_size=25),
    plan=st.lists(
        st.tuples(st.sampled_from(sorted(EXPECTED)), st.integers(0, 2)), min_size=1, max_size=16
    ),
    parents=st.integers(1, 3),
    list_threshold=st.integers(1, 6),
    stop_at=st.one_of(st.none(), st.integers(1, 40)),
)
def test_any_interleaving_gives_one_outcome_per_input(
    schedule: list[int],
    faults: list[str | None],
    plan: list[tuple[str, int]],
    parents: int,
    list_threshold: int,
    stop_at: int | None,
) -> None:
    mem = MemoryOperations()
    names: list[str] = []
    for i, (behaviour, polls) in enumerate(plan):
        name = op(i, f"projects/p/locations/l{i % parents}")
        if behaviour != "missing":
            mem.add(name, behaviour, polls=polls)
        names.append(name)
    parked: list[tuple[anyio.Event, list[str | None]]] = []

    async def handler(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        released = anyio.Event()
        box: list[str | None] = []
        parked.append((released, box))
        await released.wait()
        fault = box[0]
        if fault == "reset":
            raise TransportError("ServerDisconnectedError: reset")
        if fault is not None:
            return FAULTS[fault]
        return await mem.transport.request(method, url, headers, body)

    stopped = False

    async def main() -> Recorder:
        nonlocal stopped
        client = make_client(transport=CallableTransport(handler), attempts=12)
        options = replace(FAST, list_threshold=list_threshold, deadline=30.0, grace=30.0)
        engine = make_engine(client, options)
        recorder = Recorder()
        finished = anyio.Event()

        async def drive() -> None:
            nonlocal stopped
            steps = 0
            while not finished.is_set():
                if not parked:
                    await anyio.sleep(0.0005)
                    continue
                for _ in range(3):  # let the engine park whatever else it is about to send
                    await anyio.sleep(0)
                # The schedule is drawn up front (drawing here would depend on timing).
                index = schedule[steps % len(schedule)] % len(parked)
                fault = faults[steps] if steps < len(faults) else None
                released, box = parked.pop(index)
                box.append(fault)
                released.set()
                steps += 1
                if stop_at is not None and steps == stop_at:
                    stopped = True
                    engine.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            with anyio.fail_after(60):
                await engine.run([Target(n) for n in names], recorder)
            finished.set()
        return recorder

    recorder = run_virtual(main)

    assert sorted(recorder.results) == sorted(names)  # Recorder itself refuses duplicates
    totals = Counter(r.outcome for r in recorder.results.values())
    assert sum(totals.values()) == len(names)
    assert all(o.accepted <= 1 for o in mem.operations.values())
    for i, (behaviour, _) in enumerate(plan):
        got = recorder.results[names[i]].outcome
        if not stopped:
            assert got.value == EXPECTED[behaviour], (names[i], behaviour)
        else:
            # A stop may leave work undone, but never invents a result the server did not give.
            assert got in {
                Outcome(EXPECTED[behaviour]),
                Outcome.NOT_ATTEMPTED,
                Outcome.STILL_RUNNING,
            }
