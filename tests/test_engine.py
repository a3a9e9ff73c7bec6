"""The engine against the in-memory fake: outcomes, reconciliation modes, stops, faults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkcancel._engine import ReconcileMode
from bulkcancel._models import OperationResult, Outcome, StopReason, Target
from bulkcancel._transport import RawResponse, TransportError
from bulkcancel.testing import MemoryOperations
from tests._support import (
    FAST,
    PARENT,
    Recorder,
    make_client,
    make_engine,
    op,
    run_engine,
    run_virtual,
    virtual,
)

EXPECTED = {
    "cancels": "cancelled",
    "completes": "completed_anyway",
    "never": "still_running",
    "already_done": "completed_anyway",
    "unsupported": "unsupported",
    "denied": "permission_denied",
    "missing": "not_found",
}


@pytest.mark.parametrize("mode", list(ReconcileMode))
@virtual
async def test_each_behaviour_gets_its_outcome(mode: ReconcileMode) -> None:
    mem = MemoryOperations()
    expected: dict[str, str] = {}
    for i, (behaviour, outcome) in enumerate(EXPECTED.items()):
        for j in range(3):
            name = op(i * 10 + j)
            if behaviour != "missing":
                mem.add(name, behaviour, polls=j)
            expected[name] = outcome
    _, rec = await run_engine(mem, expected, replace(FAST, reconcile=mode, list_threshold=2))
    assert rec.outcomes() == expected
    assert all(o.accepted <= 1 for o in mem.operations.values())


@virtual
async def test_polls_until_done_and_counts_requests() -> None:
    mem = MemoryOperations()
    mem.add(op(1), "cancels", polls=3)
    _, rec = await run_engine(mem, [op(1)], replace(FAST, reconcile=ReconcileMode.GET))
    result = rec.results[op(1)]
    assert result.outcome is Outcome.CANCELLED
    assert result.details["error_code"] == 1
    assert result.details["requests"] == 1 + 4  # one cancel, four GETs


@virtual
async def test_list_reconciliation_spends_fewer_calls() -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(400)]
    for name in names:
        mem.add(name, "cancels")
    options = replace(FAST, reconcile=ReconcileMode.LIST, list_page_size=100, sweep_gap=0.05)
    engine, rec = await run_engine(mem, names, options)
    assert set(rec.outcomes().values()) == {"cancelled"}
    total = sum(mem.calls.values())
    assert mem.calls["cancel"] == 400
    assert total / 400 <= 1.3, mem.calls
    assert engine.stats.sweeps >= 1


@virtual
async def test_auto_mode_uses_get_for_scattered_targets() -> None:
    mem = MemoryOperations()
    names = [op(0, f"projects/p/locations/l{i}") for i in range(5)]
    for name in names:
        mem.add(name, "cancels")
    await run_engine(mem, names, replace(FAST, list_threshold=8))
    assert mem.calls["list"] == 0
    assert mem.calls["get"] == 5


@virtual
async def test_list_unsupported_falls_back_to_get() -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(20)]
    for name in names:
        mem.add(name, "cancels", polls=1)

    async def no_list(method: str, name: str, kind: str) -> RawResponse | None:
        if kind == "list":
            body = b'{"error": {"code": 501, "status": "UNIMPLEMENTED", "message": "no"}}'
            return RawResponse(501, body, "application/json")
        return None

    mem.hook = no_list
    engine, rec = await run_engine(mem, names, replace(FAST, reconcile=ReconcileMode.LIST))
    assert set(rec.outcomes().values()) == {"cancelled"}
    assert engine.stats.list_disabled == [PARENT]
    assert mem.calls["get"] >= 20


@virtual
async def test_listing_that_omits_a_target_falls_back_to_get() -> None:
    mem = MemoryOperations(default="cancels")  # unstored names are not in the listing
    stored = [op(i) for i in range(10)]
    for name in stored:
        mem.add(name, "never")
    ghost = op(99)
    options = replace(FAST, reconcile=ReconcileMode.LIST, deadline=0.1)
    _, rec = await run_engine(mem, [*stored, ghost], options)
    assert rec.results[ghost].outcome is Outcome.CANCELLED
    assert {rec.results[n].outcome for n in stored} == {Outcome.STILL_RUNNING}


@virtual
async def test_transient_failures_are_retried_then_recorded() -> None:
    mem = MemoryOperations()
    mem.add(op(1), "cancels")
    mem.add(op(2), "cancels")
    failures = {op(1): 2}

    async def flaky(method: str, name: str, kind: str) -> RawResponse | None:
        if name == op(2):
            raise TransportError("ServerDisconnectedError: reset")
        if failures.get(name, 0) > 0 and kind == "cancel":
            failures[name] -= 1
            return RawResponse(503, b"<html>busy</html>", "text/html")
        return None

    mem.hook = flaky
    _, rec = await run_engine(mem, [op(1), op(2)])
    assert rec.results[op(1)].outcome is Outcome.CANCELLED
    lost = rec.results[op(2)]
    assert lost.outcome is Outcome.ERROR
    assert lost.details["cancel_error"]["kind"] == "transport"
    assert "reset" in lost.details["cancel_error"]["message"]
    assert lost.details["requests"] == 4  # bounded: max_attempts


@virtual
async def test_known_results_and_listed_done_operations_cost_nothing() -> None:
    mem = MemoryOperations()
    earlier = OperationResult(op(1), Outcome.CANCELLED, {"from_journal": True})
    listed = {"name": op(2), "done": True, "response": {}}
    targets = [Target(op(1), result=earlier), Target(op(2), listed=listed)]
    _, rec = await run_engine(mem, targets)
    assert rec.results[op(1)] is earlier
    assert rec.results[op(2)].outcome is Outcome.COMPLETED_ANYWAY
    assert rec.results[op(2)].details["found_done"] is True
    assert sum(mem.calls.values()) == 0


@virtual
async def test_accepted_before_is_reconciled_not_cancelled_again() -> None:
    mem = MemoryOperations()
    mem.add(op(1), "cancels").accepted = 1
    _, rec = await run_engine(mem, [Target(op(1), accepted_before=True)])
    assert mem.calls["cancel"] == 0
    assert rec.results[op(1)].outcome is Outcome.CANCELLED
    assert rec.results[op(1)].details["resumed"] is True


class Journal:
    def __init__(self, mem: MemoryOperations) -> None:
        self.intents: list[str] = []
        self.answers: dict[str, bool] = {}
        self.outcomes: list[str] = []
        self.mem = mem

    async def intent(self, name: str) -> None:
        self.intents.append(name)

    def answer(self, name: str, accepted: bool, detail: Mapping[str, object] | None = None) -> None:
        self.answers[name] = accepted

    def outcome(self, result: OperationResult) -> None:
        self.outcomes.append(result.name)


@virtual
async def test_journal_sees_intent_before_every_cancel() -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(30)]
    for name in names:
        mem.add(name, "cancels")
    journal = Journal(mem)

    async def check(method: str, name: str, kind: str) -> RawResponse | None:
        if kind == "cancel":
            assert name in journal.intents
        return None

    mem.hook = check
    await run_engine(mem, names, journal=journal)
    assert sorted(journal.intents) == names
    assert all(journal.answers[n] for n in names)
    assert sorted(journal.outcomes) == names


@virtual
async def test_graceful_stop_reports_every_target_once() -> None:
    """After stop() no new cancel goes out; accepted ones are reconciled within the grace."""
    mem = MemoryOperations()
    names = [op(i) for i in range(200)]
    for name in names:
        mem.add(name, "cancels")
    client = make_client(mem, concurrency=4)
    engine = make_engine(client, replace(FAST, concurrency=4, grace=0.5))

    async def stop_at_the_20th_cancel(method: str, name: str, kind: str) -> RawResponse | None:
        if kind == "cancel" and mem.calls["cancel"] == 20:
            engine.stop()
        return None

    mem.hook = stop_at_the_20th_cancel
    recorder = Recorder()
    await engine.run([Target(n) for n in names], recorder)
    outcomes = recorder.outcomes()
    assert set(outcomes) == set(names)
    # Not one attempt starts after the stop; the three others on the wire (4 slots) finish.
    assert 20 <= mem.calls["cancel"] <= 23
    attempted = [n for n in names if mem.operations[n].accepted]
    assert len(attempted) == mem.calls["cancel"]
    assert all(outcomes[n] == "cancelled" for n in attempted)
    assert all(outcomes[n] == "not_attempted" for n in names if n not in attempted)
    assert engine.stop_reason is StopReason.INTERRUPTED


@virtual
async def test_abort_still_reports_everything() -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(100)]
    for name in names:
        mem.add(name, "never")
    client = make_client(mem, concurrency=8)
    engine = make_engine(client, replace(FAST, deadline=30.0))
    recorder = Recorder()

    async def slow(method: str, name: str, kind: str) -> RawResponse | None:
        await anyio.sleep(0.001)
        return None

    mem.hook = slow
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, [Target(n) for n in names], recorder)
        await anyio.sleep(0.05)
        engine.abort()
    outcomes = recorder.outcomes()
    assert set(outcomes) == set(names)
    accepted = {n for n in names if mem.operations[n].accepted}
    assert accepted
    for name in names:
        if name in accepted:
            assert outcomes[name] in ("still_running", "not_attempted")
        else:
            assert outcomes[name] == "not_attempted"


@virtual
async def test_all_unauthenticated_stops_early() -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(300)]

    async def unauthenticated(method: str, name: str, kind: str) -> RawResponse | None:
        body = b'{"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "bad token"}}'
        return RawResponse(401, body, "application/json")

    mem.hook = unauthenticated
    engine, rec = await run_engine(mem, names)
    assert engine.stop_reason == "unauthenticated"
    outcomes = list(rec.outcomes().values())
    assert len(outcomes) == 300
    assert outcomes.count("not_attempted") > 250
    assert mem.calls["cancel"] < 40


behaviours = st.sampled_from(sorted(EXPECTED))
faults = st.lists(st.sampled_from(["ok", "ok", "ok", "503", "reset", "429", "html502"]), max_size=8)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=st.lists(st.tuples(behaviours, st.integers(0, 2)), min_size=1, max_size=25),
    fault_plan=faults,
    mode=st.sampled_from(list(ReconcileMode)),
)
def test_every_input_ends_in_exactly_one_outcome(
    plan: list[tuple[str, int]], fault_plan: list[str], mode: ReconcileMode
) -> None:
    """Whatever the interleaving of answers and faults: one outcome per target, totals add up,
    and with faults that eventually clear, the outcome is the scripted one."""
    mem = MemoryOperations()
    names = []
    for i, (behaviour, polls) in enumerate(plan):
        name = op(i)
        if behaviour != "missing":
            mem.add(name, behaviour, polls=polls)
        names.append(name)
    queue = list(fault_plan)

    async def faulty(method: str, name: str, kind: str) -> RawResponse | None:
        fault = queue.pop(0) if queue else "ok"
        if fault == "503":
            return RawResponse(503, b'{"error":{"code":503,"status":"UNAVAILABLE"}}', "json")
        if fault == "html502":
            return RawResponse(502, b"<html>bad gateway</html>", "text/html")
        if fault == "429":
            return RawResponse(429, b'{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}', "j")
        if fault == "reset":
            raise TransportError("reset")
        return None

    mem.hook = faulty
    # Virtual time: a deadline well past any retry pause (a 429 waits up to 0.25 s) costs nothing.
    options = replace(FAST, reconcile=mode, list_threshold=3, deadline=5.0)

    async def main() -> Recorder:
        client = make_client(mem, attempts=10)
        recorder = Recorder()
        await make_engine(client, options).run([Target(n) for n in names], recorder)
        return recorder

    recorder = run_virtual(main)
    assert set(recorder.results) == set(names)
    for i, (behaviour, _) in enumerate(plan):
        assert recorder.results[op(i)].outcome.value == EXPECTED[behaviour]
    assert all(o.accepted <= 1 for o in mem.operations.values())


@virtual
async def test_backpressure_bounds_the_operations_between_cancel_and_outcome() -> None:
    """A slow reconciler makes the cancel pool wait: memory stays flat however long the input."""
    mem = MemoryOperations()
    names = [op(i) for i in range(120)]
    for name in names:
        mem.add(name, "cancels", polls=2)
    peak = 0
    options = replace(FAST, max_pending=10, reconcile=ReconcileMode.GET, poll_initial=0.01)

    async def watch(method: str, name: str, kind: str) -> RawResponse | None:
        nonlocal peak
        peak = max(peak, len(engine._pending) + len(engine._in_cancel))
        return None

    mem.hook = watch
    engine = make_engine(make_client(mem, concurrency=8), options)
    recorder = Recorder()
    await engine.run([Target(n) for n in names], recorder)
    assert recorder.outcomes() == dict.fromkeys(names, "cancelled")
    assert 0 < peak <= 10


@pytest.mark.parametrize("mode", [ReconcileMode.GET, ReconcileMode.LIST])
@virtual
async def test_a_malformed_operation_settles_at_once_as_error(mode: ReconcileMode) -> None:
    """``done: "true"`` cannot be read as an Operation: one look settles it as ``error``
    instead of polling it until the deadline."""
    mem = MemoryOperations()
    names = [op(i) for i in range(4)]
    for name in names:
        mem.add(name, "never")
    bad = b'{"name": "%s", "done": "true"}'

    async def malformed_get(method: str, name: str, kind: str) -> RawResponse | None:
        if kind == "get":
            return RawResponse(200, bad % name.encode(), "application/json")
        if kind == "list":
            ops = ",".join((bad % n.encode()).decode() for n in names)
            return RawResponse(200, b'{"operations": [%s]}' % ops.encode(), "application/json")
        return None

    mem.hook = malformed_get
    options = replace(FAST, reconcile=mode, deadline=30.0, list_threshold=2)
    started = anyio.current_time()  # virtual time: the loop's clock
    _, rec = await run_engine(mem, names, options)
    assert anyio.current_time() - started < 5.0  # settled by the first look, not the deadline
    for name in names:
        result = rec.results[name]
        assert result.outcome is Outcome.ERROR
        assert "done" in result.details["malformed_operation"]
        assert result.details["requests"] == (2 if mode is ReconcileMode.GET else 1)
