"""Resume re-reconciles: what a stop wrote is not final, and a rerun reports true outcomes.

The rules are in ``bulkcancel._journal_format``'s docstring; these tests pin them on records
written one by one, on a journal file captured from a real interrupted run (so journals that
are already on users' disks keep resuming the same way), and end to end: a run stopped while
slow cancels were still running, then resumed through the library once they finished.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

import bulkcancel
from bulkcancel._engine import Engine, ReconcileMode
from bulkcancel._journal import Journal, Status, read_journal, settles
from bulkcancel._models import OperationResult, Outcome, StopReason, Target
from bulkcancel._transport import RawResponse
from bulkcancel.testing import MemoryOperations
from tests._support import FAST, Recorder, make_client, op

ID = {"endpoint": "http://mem.invalid", "api_version": "v1"}
CANCELLED = {"error_code": 1, "error_message": "Operation cancelled by user."}


# Each row: the records a run wrote for one name, and what a resume must do with it.
RULES: list[tuple[str, tuple[Any, ...], Status]] = [
    ("never reached", (("o", Outcome.NOT_ATTEMPTED, {"reason": "interrupted"}),), "new"),
    (
        "sent, never answered",
        ("i", ("o", Outcome.NOT_ATTEMPTED, {"reason": "interrupted", "cancel_in_flight": True})),
        "in_flight",
    ),
    (
        "accepted, settled when the stop came",
        ("i", ("a", True), ("o", Outcome.STILL_RUNNING, {"interrupted": True})),
        "accepted",
    ),
    (
        "accepted, still running when the grace or the run's own deadline ended",
        ("i", ("a", True), ("o", Outcome.STILL_RUNNING, {"deadline_passed": True})),
        "accepted",
    ),
    (
        "accepted, the last GET failed when the stop came",
        ("i", ("a", True), ("o", Outcome.ERROR, {"get_error": "503", "interrupted": True})),
        "accepted",
    ),
    (
        "accepted earlier, resumed, stopped again before reconciling",
        ("i", ("a", True), ("o", Outcome.NOT_ATTEMPTED, {"reason": "journal_failed"})),
        "accepted",
    ),
    (
        "refused while the endpoint was unreachable",
        ("i", ("a", False), ("o", Outcome.ERROR, {"reason": "unreachable"})),
        "rejected",
    ),
    (
        "a stop's still_running without earlier records still means accepted",
        (("o", Outcome.STILL_RUNNING, {"interrupted": True}),),
        "accepted",
    ),
    (
        "a final outcome is never overridden by a stop's placeholder",
        (("o", Outcome.CANCELLED, CANCELLED), ("o", Outcome.STILL_RUNNING, {"interrupted": True})),
        "done",
    ),
    ("cancelled is final", ("i", ("a", True), ("o", Outcome.CANCELLED, CANCELLED)), "done"),
    (
        "denied is final",
        ("i", ("a", False), ("o", Outcome.PERMISSION_DENIED, {"cancel_error": "403"})),
        "done",
    ),
    ("an error with no stop is final", ("i", ("a", False), ("o", Outcome.ERROR, {})), "done"),
]


@pytest.mark.parametrize(("why", "records", "status"), RULES, ids=[row[0] for row in RULES])
async def test_resume_rule(tmp_path: Path, why: str, records: tuple[Any, ...], status: str) -> None:
    path = tmp_path / "j.jsonl"
    name = op(1)
    async with Journal.open(path, ID) as journal:
        for record in records:
            if record == "i":
                await journal.intent(name)
            elif record[0] == "a":
                journal.answer(name, record[1], None if record[1] else {"code": 14})
            else:
                journal.outcome(OperationResult(name, record[1], dict(record[2])))
    assert read_journal(path)[1].status(name) == status
    async with Journal.open(path, ID) as journal:  # what a rerun sees, through the writer
        assert journal.state.status(name) == status


@pytest.mark.parametrize("outcome", list(Outcome))
def test_settles_is_false_only_for_what_a_stop_or_a_watch_made_up(outcome: Outcome) -> None:
    watch_ended = outcome in (Outcome.NOT_ATTEMPTED, Outcome.STILL_RUNNING)
    assert settles(OperationResult(op(1), outcome)) is not watch_ended
    assert not settles(OperationResult(op(1), outcome, {"interrupted": True}))
    for reason in StopReason:
        assert not settles(OperationResult(op(1), outcome, {"reason": reason.value}))
    assert settles(OperationResult(op(1), outcome, {"interrupted": False})) is not watch_ended


# -- a journal file from a real run ----------------------------------------------------------

#: Lines bulkcancel's engine wrote (journal version 1) in two interrupted runs against the
#: in-memory fake: an abort while cancels were in flight and slow cancels were being polled,
#: and a graceful stop with a 0 s grace while slow cancels were still running. One name of each
#: kind was kept and renamed op-00000..op-00004; every line is otherwise verbatim, so journals
#: already on users' disks keep resuming the same way.
CAPTURED = """\
{"journal":"bulkcancel","version":1,"identity":{"endpoint":"http://mem.invalid","api_version":"v1"}}
{"i":"projects/p/locations/l/operations/op-00000"}
{"a":"projects/p/locations/l/operations/op-00000","ok":true}
{"i":"projects/p/locations/l/operations/op-00002"}
{"a":"projects/p/locations/l/operations/op-00002","ok":true}
{"o":{"name":"projects/p/locations/l/operations/op-00000","outcome":"cancelled","error_code":1,"error_message":"Operation cancelled by user.","requests":2}}
{"i":"projects/p/locations/l/operations/op-00003"}
{"o":{"name":"projects/p/locations/l/operations/op-00003","outcome":"not_attempted","reason":"interrupted","cancel_in_flight":true}}
{"o":{"name":"projects/p/locations/l/operations/op-00004","outcome":"not_attempted","reason":"interrupted"}}
{"o":{"name":"projects/p/locations/l/operations/op-00002","outcome":"still_running","deadline_passed":false,"interrupted":true,"requests":2}}
{"i":"projects/p/locations/l/operations/op-00001"}
{"a":"projects/p/locations/l/operations/op-00001","ok":true}
{"o":{"name":"projects/p/locations/l/operations/op-00001","outcome":"still_running","deadline_passed":true,"requests":2}}
"""  # noqa: E501 - journal lines are as long as the run wrote them


async def test_a_captured_interrupted_journal_resumes_by_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    path.write_text(CAPTURED, encoding="ascii")
    identity, state = read_journal(path)
    assert identity == ID
    assert {name: state.status(name) for name in (op(i) for i in range(5))} == {
        op(0): "done",  # cancelled: reported from the journal
        op(1): "accepted",  # still running when the grace ended: reconcile, never re-send
        op(2): "accepted",  # settled by the stop itself: reconcile, never re-send
        op(3): "in_flight",  # sent, never answered: may be sent again
        op(4): "new",  # never reached: fresh
    }

    mem = MemoryOperations()
    for i in range(5):
        mem.add(op(i), "cancels")
    for i in (0, 1, 2):  # the server saw these cancels and has finished them since
        mem.operations[op(i)].accepted = 1
    report = await _resume(mem, [op(i) for i in range(5)], path)
    outcomes = {r.name: r for r in report.operations}
    assert {name: r.outcome for name, r in outcomes.items()} == dict.fromkeys(
        (op(i) for i in range(5)), Outcome.CANCELLED
    )
    assert outcomes[op(0)].details.get("from_journal") is True
    assert outcomes[op(1)].details.get("resumed") is True
    assert outcomes[op(2)].details.get("resumed") is True
    assert [mem.operations[op(i)].accepted for i in range(5)] == [1, 1, 1, 1, 1]
    assert mem.calls["cancel"] == 2  # only op-3 (in flight) and op-4 (fresh)


# -- end to end: stop with slow cancels running, then resume ---------------------------------


async def _resume(mem: MemoryOperations, names: list[str], journal: Path) -> bulkcancel.Report:
    return await bulkcancel.cancel_operations(
        names,
        endpoint=ID["endpoint"],
        anonymous=True,
        transport=mem.transport,
        journal=str(journal),
        rate=100_000,
        concurrency=8,
        deadline=5,
        reconcile="get",
        poll_initial=0.005,
        poll_max=0.02,
    )


async def test_stopped_with_slow_cancels_running_then_resume_reports_true_outcomes(
    tmp_path: Path,
) -> None:
    """The issue's case: Ctrl-C, the grace ends with accepted cancels still running; they were
    journalled still_running. Once the server has finished them, the rerun with the same
    journal reports them cancelled, without sending their cancels again."""
    path = tmp_path / "run.journal"
    mem = MemoryOperations()
    names = [op(i) for i in range(120)]
    for name in names:
        mem.add(name, "cancels", polls=10**9)  # accepted, then running for as long as we look

    options = replace(FAST, concurrency=4, grace=0.0, reconcile=ReconcileMode.GET)
    recorder = Recorder()
    async with Journal.open(path, ID) as journal:
        engine = Engine(make_client(mem, concurrency=4), options, journal=journal)

        async def stop_after_40_cancels(method: str, name: str, kind: str) -> RawResponse | None:
            if kind == "cancel" and mem.calls["cancel"] == 40:
                engine.stop()
            return None

        mem.hook = stop_after_40_cancels
        await engine.run([Target(n) for n in names], recorder)
    first = recorder.outcomes()
    assert set(first) == set(names)
    running = {n for n, o in first.items() if o == "still_running"}
    untouched = {n for n in names if not mem.operations[n].accepted}
    assert running and untouched, f"the stop did not land mid-run: {first}"

    _, state = read_journal(path)
    assert {n for n in names if state.status(n) == "accepted"} == running
    assert not state.outcomes  # nothing final: every record the stop wrote is provisional
    assert all(state.status(n) in ("new", "in_flight") for n in untouched)

    for name in names:  # the slow cancels finish on the server
        mem.operations[name].polls = 0
    accepted_before = {n: mem.operations[n].accepted for n in names}
    mem.hook = None
    report = await _resume(mem, names, path)
    outcomes = {r.name: r for r in report.operations}
    assert len(report.operations) == len(names) and set(outcomes) == set(names)
    assert {r.outcome for r in outcomes.values()} == {Outcome.CANCELLED}
    for name in running:
        assert mem.operations[name].accepted == accepted_before[name] == 1  # not re-sent
        assert outcomes[name].details.get("resumed") is True
    assert read_journal(path)[1].outcomes.keys() == set(names)  # final now


async def test_a_resume_interrupted_again_keeps_accepted_cancels_accepted(
    tmp_path: Path,
) -> None:
    """Two stops in a row: the second run's placeholders do not lose the first run's answers."""
    path = tmp_path / "run.journal"
    mem = MemoryOperations()
    names = [op(i) for i in range(10)]
    for name in names:
        mem.add(name, "cancels", polls=10**9)
    async with Journal.open(path, ID) as journal:
        for name in names:
            await journal.intent(name)
            journal.answer(name, True)
            journal.outcome(OperationResult(name, Outcome.STILL_RUNNING, {"interrupted": True}))
    async with Journal.open(path, ID) as journal:  # the rerun stops before reconciling anything
        for name in names:
            assert journal.state.status(name) == "accepted"
            journal.outcome(OperationResult(name, Outcome.NOT_ATTEMPTED, {"reason": "interrupted"}))
    assert {read_journal(path)[1].status(n) for n in names} == {"accepted"}
    with anyio.fail_after(30):
        for name in names:
            mem.operations[name].accepted = 1
            mem.operations[name].polls = 0
        report = await _resume(mem, names, path)
    assert {r.outcome for r in report.operations} == {Outcome.CANCELLED}
    assert mem.calls["cancel"] == 0
