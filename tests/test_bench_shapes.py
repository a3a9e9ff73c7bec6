"""The independent shapes' server says no the way each shape should, and scores against the
right floor (no timing here: its clock is the test's)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from aiohttp import web

from benchmarks import shapes
from bulkcancel._answers import Answer, AnswerKind, interpret
from bulkcancel._transport import RawResponse


def answer_of(response: web.Response) -> Answer:
    """What the project's own client reads in one of the server's answers."""
    assert isinstance(response.body, bytes)
    return interpret(RawResponse(response.status, response.body, response.content_type))


async def test_requests_in_flight_past_the_cap_are_refused_at_once() -> None:
    server = shapes.Server(shapes.SHAPES["conc8"], seed=1)
    gate = asyncio.Event()

    async def held(seconds: float) -> None:
        await gate.wait()

    server.sleep = held
    first = [asyncio.ensure_future(server.admit("k", "write", 0.0, {})) for _ in range(8)]
    await asyncio.sleep(0)  # (each of the eight has taken its place in flight)
    assert not await server.admit("k", "write", 0.0, {})  # the ninth, at once
    gate.set()
    assert all(await asyncio.gather(*first))
    assert server.in_flight["k"] == 0


async def test_a_key_in_flight_does_not_count_against_another() -> None:
    server = shapes.Server(dataclasses.replace(shapes.SHAPES["conc8"], inflight=1), seed=1)
    gate = asyncio.Event()

    async def held(seconds: float) -> None:
        await gate.wait()

    server.sleep = held
    busy = asyncio.ensure_future(server.admit("us-central1", "write", 0.0, {}))
    await asyncio.sleep(0)
    assert not await server.admit("us-central1", "write", 0.0, {})
    other = asyncio.ensure_future(server.admit("us-east1", "write", 0.0, {}))
    await asyncio.sleep(0)
    gate.set()
    assert await busy
    assert await other


async def test_the_leaky_bucket_queues_its_burst_and_refuses_what_overflows() -> None:
    server = shapes.Server(shapes.SHAPES["nginx"], seed=1)  # 40/s, 20 queued
    waits: list[float] = []

    async def recorded(seconds: float) -> None:
        waits.append(seconds)

    server.sleep = recorded
    admitted = [await server.admit("k", "write", 0.0, {}) for _ in range(22)]
    assert admitted == [True] * 21 + [False]  # served at once, then 20 queued 1/40 s apart
    assert waits[-1] == pytest.approx(20 / 40)
    assert await server.admit("k", "write", 1.0, {})  # the queue drained meanwhile


async def test_load_is_shed_in_proportion_to_the_excess() -> None:
    server = shapes.Server(shapes.SHAPES["shed"], seed=1)  # 40/s
    calm = [await server.admit("k", "write", i / 40, {}) for i in range(40)]
    assert all(calm)
    server = shapes.Server(shapes.SHAPES["shed"], seed=1)
    hot = [await server.admit("k", "write", i / 160, {}) for i in range(640)]  # 160/s
    assert 0.65 < 1 - sum(hot[160:]) / len(hot[160:]) < 0.85  # about 1 - 40/160 refused


def test_the_floor_of_a_bucket_is_the_best_schedule_at_its_quota() -> None:
    bucket = shapes.Bucket(40.0, 4.0, t0=0.0)
    # four at once from the burst (1/200 s apart), then one per 1/40 s
    assert bucket.oracle(100, 0.0) == pytest.approx(96 / 40, rel=0.01)
    halving = shapes.Bucket(50.0, 5.0, rate2=25.0, change_after=1.0, t0=0.0)
    # 5 from the burst and 45 at 50/s by 0.9 s, 5 more by 1 s, then 45 at 25/s
    assert halving.oracle(100, 0.0) == pytest.approx(1.0 + 45 / 25, rel=0.01)


def test_the_floor_of_requests_in_flight_is_their_latency_over_the_cap() -> None:
    server = shapes.Server(shapes.SHAPES["conc8"], seed=1)  # 8 in flight, 0.1 s each
    server.log = [{"t": 0.0, "key": "us-central1", "ok": True}] * 240
    server.accepted = 240
    assert server.floor() == pytest.approx(240 * 0.1 / 8)


@pytest.mark.parametrize(
    ("shape", "quota"),
    [("control", None), ("stated-high", 160.0), ("project3", None), ("rw-stated", 20.0)],
)
def test_a_refusal_reads_as_a_throttle_with_what_the_shape_says(
    shape: str, quota: float | None
) -> None:
    server = shapes.Server(shapes.SHAPES[shape], seed=1)
    lim = server.limiter(*server.key_of("cancel", "us-central1"))
    assert lim is not None
    answer = answer_of(server.refusal("write", "us-central1", "us-central1"))
    assert answer.kind is AnswerKind.API_ERROR
    assert answer.status == 429
    assert answer.reason == "RATE_LIMIT_EXCEEDED"
    assert answer.quota is not None
    assert answer.quota.per_second == quota
    assert answer.quota.project_wide is (shape == "project3")


def test_a_bare_refusal_says_nothing_of_the_quota() -> None:
    server = shapes.Server(shapes.SHAPES["project3-bare"], seed=1)
    answer = answer_of(server.refusal("write", "us-east1", "project"))
    assert answer.status == 429
    assert answer.quota is None
    assert answer.code == "RESOURCE_EXHAUSTED"


def test_unknown_shapes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        shapes.main(["conc9"])
    assert stopped.value.code == 2
    assert "unknown shape 'conc9'" in capsys.readouterr().err
