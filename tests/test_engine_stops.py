"""Stops that keep their promises, on virtual time: aborts, the grace as a bound, servers that
never answer or page forever, a journal that fails, and the options that would spin."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkcancel._engine import EngineOptions, ReconcileMode
from bulkcancel._errors import JournalError
from bulkcancel._models import OperationResult, Outcome, StopReason, Target
from bulkcancel._transport import CallableTransport, RawResponse
from bulkcancel.testing import MemoryOperations
from tests._support import (
    FAST,
    PARENT,
    Recorder,
    capped,
    make_client,
    make_engine,
    now,
    op,
    run_virtual,
    virtual,
)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_a_poll_interval_that_would_spin_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="poll_initial"):
        EngineOptions(poll_initial=value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(1, 60),
    max_pending=st.integers(1, 12),
    abort_after=st.floats(0.0, 0.05),
    accepted_before=st.sets(st.integers(0, 59)),
    mode=st.sampled_from(list(ReconcileMode)),
)
def test_an_abort_at_any_point_reports_every_target_exactly_once(
    count: int,
    max_pending: int,
    abort_after: float,
    accepted_before: set[int],
    mode: ReconcileMode,
) -> None:
    """Including a target the input was holding while it waited for room (backpressure)."""
    mem = MemoryOperations()
    names = [op(i) for i in range(count)]
    for name in names:
        mem.add(name, "cancels", polls=3)

    async def slow(method: str, name: str, kind: str) -> RawResponse | None:
        await anyio.sleep(0.002)
        return None

    mem.hook = slow

    async def main() -> Recorder:
        options = replace(FAST, max_pending=max_pending, reconcile=mode, list_threshold=2)
        engine = make_engine(make_client(mem), options)
        recorder = Recorder()
        targets = [Target(n, accepted_before=i in accepted_before) for i, n in enumerate(names)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, targets, recorder)
            await anyio.sleep(abort_after)
            engine.abort()
        return recorder

    recorder = run_virtual(main)
    assert sorted(recorder.results) == names  # the Recorder refuses duplicates itself


def _never_answers() -> CallableTransport:
    async def hang(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    return CallableTransport(hang)


@virtual
async def test_a_graceful_stop_ends_within_the_grace_against_a_server_that_never_answers() -> None:
    names = [op(i) for i in range(50)]
    client = make_client(transport=_never_answers(), concurrency=8)
    engine = make_engine(client, replace(FAST, deadline=600.0, grace=2.0))
    recorder = Recorder()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, [Target(n) for n in names], recorder)
        await anyio.sleep(30.0)
        stopped_at = now()
        engine.stop()
    assert now() <= stopped_at + 2.0 + 0.05
    assert sorted(recorder.results) == names
    on_the_wire = [r for r in recorder.results.values() if r.details.get("cancel_in_flight")]
    assert len(on_the_wire) == 8  # the concurrency: nothing else was ever sent
    assert {r.outcome for r in recorder.results.values()} == {Outcome.NOT_ATTEMPTED}


@virtual
async def test_the_grace_is_a_bound_not_one_more_get_each() -> None:
    """200 accepted cancels pending at --rate 40 with a 0.5 s grace: the run ends at the grace
    and settles the rest from what was last seen (the old engine took 5.7 s and 217 GETs)."""
    mem = MemoryOperations()
    names = [op(i, f"projects/p/locations/l{i}") for i in range(200)]  # one per parent: GETs
    for name in names:
        mem.add(name, "never")
    client = make_client(mem, rate=40.0, concurrency=32)
    options = replace(FAST, concurrency=32, deadline=600.0, poll_initial=0.5, poll_max=5.0)
    engine = make_engine(client, replace(options, grace=0.5))
    recorder = Recorder()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, [Target(n) for n in names], recorder)
        while mem.calls["cancel"] < 200:
            await anyio.sleep(0.1)
        stopped_at = now()
        gets_before = mem.calls["get"]
        engine.stop()
    assert now() <= stopped_at + 0.5 + 0.05
    assert mem.calls["get"] - gets_before <= 0.5 * 40 + 32  # the rate for the grace + in flight
    assert sorted(recorder.results) == sorted(names)
    assert {r.outcome for r in recorder.results.values()} == {Outcome.STILL_RUNNING}


@virtual
async def test_a_server_paging_forever_cannot_keep_a_sweep_past_the_deadline() -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(20)]
    for name in names:
        mem.add(name, "never")
    pages = 0

    async def endless(method: str, name: str, kind: str) -> RawResponse | None:
        nonlocal pages
        if kind != "list":
            return None
        pages += 1
        await anyio.sleep(0.01)
        body = json.dumps({"operations": [], "nextPageToken": f"t{pages}"}).encode()
        return RawResponse(200, body, "application/json")

    mem.hook = endless
    options = replace(FAST, reconcile=ReconcileMode.LIST, deadline=10.0, poll_initial=0.5)
    engine = make_engine(make_client(mem), options)
    recorder = Recorder()
    started = now()
    await engine.run([Target(n) for n in names], recorder)
    assert now() - started <= 10.0 + 1.0
    assert engine.stats.list_disabled == [PARENT]
    assert {r.outcome for r in recorder.results.values()} == {Outcome.STILL_RUNNING}
    assert mem.calls["get"] >= 20  # fell back to GET


class FailingJournal:
    """A journal whose disk fills after ``room`` writes."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.writes = 0
        self.after_failure = 0

    def _write(self) -> None:
        if self.writes >= self.room:
            self.after_failure += 1
            raise JournalError("journal: No space left on device")
        self.writes += 1

    async def intent(self, name: str) -> None:
        self._write()

    def answer(self, name: str, accepted: bool, detail: Mapping[str, object] | None = None) -> None:
        self._write()

    def outcome(self, result: OperationResult) -> None:
        self._write()


@settings(max_examples=30, deadline=None)
@given(room=st.integers(0, 150), count=st.integers(1, 50))
def test_a_journal_that_fails_leaves_every_result_and_its_reason(room: int, count: int) -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(count)]
    for name in names:
        mem.add(name, "cancels", polls=1)
    journal = FailingJournal(room)

    async def main() -> tuple[Recorder, StopReason | None]:
        client = make_client(mem)
        engine = make_engine(client, FAST, journal=journal)
        recorder = Recorder()
        await engine.run([Target(n) for n in names], recorder)
        return recorder, engine.stop_reason

    recorder, reason = run_virtual(main)
    assert sorted(recorder.results) == names
    assert journal.after_failure <= 1  # not called again after the first failure
    if journal.after_failure:
        assert reason is StopReason.JOURNAL_FAILED
        # A cancel whose intent was not recorded was never sent.
        assert mem.calls["cancel"] <= journal.room
    else:
        assert reason is None
        assert {r.outcome for r in recorder.results.values()} == {Outcome.CANCELLED}


@pytest.mark.parametrize("cap", [50, 100, 1000])
@virtual
async def test_capped_pages_settle_with_few_calls_and_count_every_listed_settle(cap: int) -> None:
    mem = MemoryOperations()
    names = [op(i) for i in range(3000)]
    for name in names:
        mem.add(name, "cancels")
    client = make_client(transport=capped(mem, cap), concurrency=32, rate=2000.0)
    options = replace(FAST, concurrency=32, deadline=60.0, poll_initial=0.5, list_page_size=500)
    engine = make_engine(client, options)
    recorder = Recorder()
    await engine.run([Target(n) for n in names], recorder)
    assert set(recorder.outcomes().values()) == {"cancelled"}
    assert sum(mem.calls.values()) / len(names) <= 1.1, mem.calls
    settled_by_get = mem.calls["get"]
    assert engine.stats.settled_by_list == len(names) - settled_by_get
