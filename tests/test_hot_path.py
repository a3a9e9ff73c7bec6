"""The per-request fast paths: each does without an await what its slow path does with one.

In-flight slots taken without an await when free (and handed FIFO when not), a quota key's
turn and a unit of ``--rate`` granted synchronously when they are free, the URL joined to a
parsed origin, JSON decoded as UTF-8, the report's places counted as targets are taken. Each
must behave exactly like the path it shortcuts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from yarl import URL

import bulkcancel
from bulkcancel._answers import AnswerKind, interpret
from bulkcancel._limits import RateGovernor
from bulkcancel._slots import Slots
from bulkcancel._transport import AiohttpTransport, RawResponse
from bulkcancel.testing import MemoryOperations
from tests._support import op

KEY = "projects/p/locations/l"


# -- in-flight slots ---------------------------------------------------------------------------


async def test_free_slots_are_taken_without_waiting_and_the_rest_wait_in_order() -> None:
    slots = Slots(2)
    assert slots.take_now() and slots.take_now()
    assert not slots.take_now()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await slots.take()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert order == []
    slots.give()  # handed to the first waiter, not left for a newcomer
    assert not slots.take_now()
    await asyncio.sleep(0)
    assert order == [0]
    slots.give()
    slots.give()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    slots.give()  # waiters 1 and 2 hold the two slots: give them back
    slots.give()
    assert slots.take_now() and slots.take_now() and not slots.take_now()


async def test_a_cancelled_waiter_gives_up_its_place_and_a_slot_handed_to_it_goes_on() -> None:
    slots = Slots(1)
    assert slots.take_now()
    skipped = asyncio.create_task(slots.take())
    handed = asyncio.create_task(slots.take())
    last = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    skipped.cancel()  # cancelled while it waits: its place is skipped
    await asyncio.sleep(0)
    slots.give()  # -> handed
    handed.cancel()  # cancelled after it was handed the slot, before it ran: it passes it on
    await asyncio.sleep(0)
    await asyncio.wait_for(last, 1)
    assert skipped.cancelled() and handed.cancelled()
    assert not slots.take_now()  # the one slot is held by `last`
    slots.give()
    assert slots.take_now()


# -- the governor's synchronous grants ---------------------------------------------------------


async def test_a_free_turn_is_granted_at_once_and_a_paced_one_is_left_to_acquire_key() -> None:
    governor = RateGovernor(1000.0)
    pacer = governor.pacer(KEY)
    pacer.rate = 10.0  # one request per 100 ms
    first = governor.try_acquire_key(KEY)
    assert first is not None and first.pacer is pacer
    governor.sent(first)
    assert governor.try_acquire_key(KEY) is None  # the next turn is 100 ms away: wait for it
    started = governor.now()
    second = await governor.acquire_key(KEY)
    assert second is not None
    assert governor.now() - started == pytest.approx(0.1, abs=0.05)
    governor.sent(second)
    governor.stop()
    assert governor.try_acquire_key(KEY) is None
    assert await governor.acquire_key(KEY) is None


async def test_a_queued_key_grants_nothing_out_of_turn() -> None:
    governor = RateGovernor(1000.0)
    governor.pacer(KEY).rate = 10.0
    first = governor.try_acquire_key(KEY)
    assert first is not None
    governor.sent(first)
    waiting = asyncio.create_task(governor.acquire_key(KEY))
    await asyncio.sleep(0)  # it holds the key's turn, napping until it is due
    governor.pacer(KEY).next_free = governor.now()  # due now, but someone is queued first
    assert governor.try_acquire_key(KEY) is None
    assert await asyncio.wait_for(waiting, 1) is not None


async def test_the_ceiling_grants_its_burst_at_once_then_paces() -> None:
    governor = RateGovernor(100.0)  # a burst of one: 20 ms worth of 100/s is 2, at least 1
    burst = max(1.0, 100.0 / 50.0)
    granted = 0
    while governor.try_ceiling():
        granted += 1
    assert granted == burst
    started = governor.now()
    assert await governor.acquire_ceiling()
    assert governor.now() - started > 0  # waited for the bucket to leak
    governor.stop()
    assert not governor.try_ceiling()


async def test_a_unit_given_back_goes_to_the_next_waiter_at_once() -> None:
    """A request whose grant went stale while it waited for the ceiling goes back to its key's
    queue unsent: its unit of ``--rate`` is the next waiter's, not a second of nothing."""
    governor = RateGovernor(1.0)  # one unit a second
    assert governor.try_ceiling()
    waiting = asyncio.create_task(governor.acquire_ceiling())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # the bucket is full for another second
    governor.unused_ceiling()
    for _ in range(20):  # loop turns only: no timer has to fire
        await asyncio.sleep(0)
    assert waiting.done() and waiting.result() is True
    assert not governor.try_ceiling()  # the unit was handed on, not doubled


# -- URL and JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1/" + op(1) + ":cancel",
        "http://127.0.0.1:8080/v1/projects/p/locations/l/operations/a%2Fb/../c/./d",
        "https://europe-west1-aiplatform.googleapis.com/v1/projects/p/operations?pageSize=5",
        "http://[::1]:8080/v1/x#frag",
        "http://localhost",
    ],
)
def test_urls_are_sent_exactly_as_built(url: str) -> None:
    transport = AiohttpTransport()
    built = transport._url(url)
    assert built == URL(url, encoded=True)
    assert str(built) == str(URL(url, encoded=True))
    assert built.raw_path == URL(url, encoded=True).raw_path
    assert transport._url(url) == built  # the second time from the kept origin


@pytest.mark.parametrize(
    ("body", "kind", "parsed"),
    [
        (b"{}", AnswerKind.OK, {}),
        (b'{"name":"x","done":true}', AnswerKind.OK, {"name": "x", "done": True}),
        ('{"m":"caf\u00e9"}'.encode(), AnswerKind.OK, {"m": "caf\u00e9"}),
        (b'\xef\xbb\xbf{"a":1}', AnswerKind.OK, {"a": 1}),
        (b"\xff\xfe{", AnswerKind.MALFORMED, None),
        (b"[1]", AnswerKind.MALFORMED, None),
    ],
)
def test_bodies_are_read_as_utf8_json(body: bytes, kind: AnswerKind, parsed: object) -> None:
    answer = interpret(RawResponse(200, body, "application/json"))
    assert answer.kind is kind
    assert answer.body == parsed


def test_the_empty_answer_is_a_fresh_dict_each_time() -> None:
    first = interpret(RawResponse(200, b"{}"))
    assert first.body is not None
    first.body["x"] = 1
    assert interpret(RawResponse(200, b"{}")).body == {}


# -- places ------------------------------------------------------------------------------------


async def test_places_count_what_this_run_acts_on_not_what_a_journal_settled(
    tmp_path: Path,
) -> None:
    mem = MemoryOperations()
    other = "projects/q/locations/eu"
    names = [op(1), op(2), op(3, other)]
    for name in [*names, op(4)]:
        mem.add(name, "cancels")
    journal = str(tmp_path / "run.journal")

    async def run(run_names: list[str]) -> bulkcancel.Report:
        return await bulkcancel.cancel_operations(
            run_names,
            endpoint="http://mem.invalid",
            anonymous=True,
            transport=mem.transport,
            journal=journal,
            rate=100_000,
            reconcile="get",
            poll_initial=0.005,
        )

    first = await run(names)
    assert first.meta["places"] == {KEY: 2, other: 1}
    second = await run([*names, op(4)])  # the first three are done: reported from the journal
    assert second.meta["places"] == {KEY: 1}
    assert second.totals["cancelled"] == 4
