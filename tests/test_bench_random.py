"""The random-servers benchmark: its draws repeat and are servers the fake accepts, its floor
and verdicts (no timing here), and one draw run for real."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from benchmarks import random_servers as rs
from bulkcancel.cli import fake_server
from bulkcancel.testing import OperationsModel


def test_a_seed_draws_the_same_servers_and_the_fake_accepts_every_one() -> None:
    first, again = random.Random(7), random.Random(7)
    assert [rs.draw(first) for _ in range(20)] == [rs.draw(again) for _ in range(20)]
    rng = random.Random(3)
    draws = [rs.draw(rng) for _ in range(300)]
    assert len({d.label() for d in draws}) > 250  # (not one server over and over)
    for one in draws:
        fake_server.make_context("fake-server", [*one.fake_args(), "--operations", "1"])
        OperationsModel().personality(
            one.personalities, rate=one.quota, window=one.window or 60.0
        )  # raises on a combination the fake refuses
        pace = min(one.quota or one.rate, one.rate)
        if one.operations > 10:  # (halved to fit while over ten)
            assert 2 * one.operations * len(one.parents) / pace <= rs.MOST_SECONDS
        if one.source == "parent":
            assert one.missing == 0  # a listing never finds what does not exist
    kinds = {p for d in draws for p in d.personalities}
    assert {"bucket-small", "fixed-window", "shared-quota", "429-bare", "reads-apart",
            "fault-mix", "background-429", "pages-ignored"} <= kinds  # fmt: skip
    assert {d.source for d in draws} == {"file", "stdin", "parent"}
    assert any(d.quota is None for d in draws) and any(d.latency for d in draws)


def a_draw(**changes: Any) -> rs.Draw:
    plain = rs.Draw(
        personalities=(), quota=None, window=None, parents=("projects/p/locations/l",),
        operations=10, seed=0, mix=0, missing=0, latency=0.0, jitter=0.0, cancel_delay=0.0,
        unsupported=None, rate=50.0, concurrency=32, reconcile="auto", page_size=None,
        source="file",
    )  # fmt: skip
    return dataclasses.replace(plain, **changes)


def stats(requests: int, refused: int = 0, status: str = "429", oracle: float = 0.0) -> Any:
    return {"requests": requests, "by_status": {status: refused}, "quota_oracle_seconds": oracle}


def test_the_floor_is_the_quotas_oracle_or_what_any_client_must_send_at_its_rate() -> None:
    quota = a_draw(personalities=("bucket-small", "regional-quota", "429-bare"), quota=10.0)
    assert rs.floor_seconds(quota, stats(120, 20, oracle=9.5)) == 9.5
    assert rs.floor_seconds(quota, stats(1020, 20, oracle=9.5)) == 1000 / 50  # (its --rate)
    stated_in_403 = dataclasses.replace(quota, personalities=("bucket-small", "403-rate-limit"))
    assert rs.floor_seconds(stated_in_403, stats(1020, 20, "403")) == 1000 / 50
    background = a_draw(personalities=("background-429",))
    assert rs.floor_seconds(background, stats(100, 10)) == 90 / 0.9 / 50
    far = a_draw(latency=0.5, concurrency=4)
    assert rs.floor_seconds(far, stats(100)) == 100 * 0.5 / 4
    slow_to_stop = a_draw(cancel_delay=1.0)
    assert rs.floor_seconds(slow_to_stop, stats(10)) == 1.0


def test_verdicts_name_what_a_user_would_see_wrong_and_the_targets_only_where_they_apply() -> None:
    fine = {"wrong": 0, "exit_code": 3, "exit_code_wanted": 3, "traceback": False,
            "drain": 13.0, "floor": 10.0, "throttled_share": 0.12}  # fmt: skip
    quota = a_draw(personalities=("bucket-small", "429-bare"), quota=10.0, shape="bucket-small")
    assert rs.verdicts(fine, quota) == ["over the x target", "over the 429 target"]
    window = dataclasses.replace(quota, shape="fixed-window")
    assert rs.verdicts({**fine, "drain": 11.0}, window) == []  # (15% on a fixed window)
    noisy = dataclasses.replace(quota, personalities=(*quota.personalities, "fault-mix"))
    assert rs.verdicts(fine, noisy) == []  # (the fault mix's 429s are the server's)
    assert rs.verdicts(fine, a_draw()) == []  # (no quota: no quota targets)
    short = {**fine, "drain": 2.6, "floor": 1.9}  # (a first wall and little more)
    assert rs.verdicts(short, quota) == []
    assert rs.verdicts({**short, "floor": rs.SHORT}, quota) == [
        "over the x target",
        "over the 429 target",
    ]
    broken = {**fine, "wrong": 2, "exit_code": 1, "traceback": True}
    assert rs.verdicts(broken, a_draw()) == ["2 outcomes wrong", "exit 1, not 3", "a traceback"]


def test_one_draw_run_for_real_listing_its_parents(tmp_path: Path) -> None:
    """A real fake and a real CLI: a mixed script (exit 3), the names found by listing."""
    one = a_draw(
        parents=("projects/p0/locations/us-central1", "projects/p0/locations/us-east1"),
        mix=5, unsupported="us-east1=unsupported", source="parent", rate=200.0,
    )  # fmt: skip
    result = rs.measure(one, tmp_path)
    assert result["exit_code_wanted"] == 3
    assert rs.verdicts(result, one) == [], result
    assert result["drain"] > 0 and result["floor"] > 0 and result["throttled_share"] == 0


def test_no_draws_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        rs.main(["--draws", "0"])
    assert stopped.value.code == 2
    assert "--draws must be at least 1" in capsys.readouterr().err
