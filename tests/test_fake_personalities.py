"""Each named personality of the fake, driven on a virtual clock through the pure model."""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bulkcancel.testing import OperationsModel, Personality, parse_personalities, populate
from bulkcancel.testing._personalities import Quota, QuotaShape

A = "projects/p/locations/a"
B = "projects/p/locations/b"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def model(spec: str = "", **kw: Any) -> tuple[OperationsModel, Clock]:
    clock = Clock()
    m = OperationsModel(clock=clock, wall=lambda: 1_700_000_000.0 + clock.now)
    populate(m, A, 3)
    populate(m, B, 3)
    if spec or kw:
        m.personality(spec, **kw)
    return m, clock


def get(m: OperationsModel, parent: str = A, query: str = "") -> tuple[int, dict[str, Any]]:
    reply = m.handle("GET", f"/v1/{parent}/operations/op-000000{query}", {})
    is_json = reply.content_type.startswith("application/json") and reply.body
    return reply.status, json.loads(reply.body) if is_json else {}


def statuses(m: OperationsModel, count: int, parent: str = A) -> list[int]:
    return [get(m, parent)[0] for _ in range(count)]


def test_bucket_small_admits_a_small_burst_then_the_rate() -> None:
    m, clock = model("bucket-small", rate=20)
    assert statuses(m, 3) == [200, 200, 429]  # burst max(1, 20/10) = 2
    clock.now = 0.05  # one token at 20/s
    assert statuses(m, 2) == [200, 429]
    clock.now = 10.05
    assert statuses(m, 3) == [200, 200, 429]  # refills to the burst, no further


def test_bucket_minute_spends_a_windows_budget_at_once() -> None:
    m, clock = model("bucket-minute", rate=10, window=6)
    assert statuses(m, 61).count(200) == 60
    clock.now = 1.0
    assert statuses(m, 11).count(200) == 10


def test_fixed_window_refuses_until_the_window_turns() -> None:
    m, clock = model("fixed-window,429-retryinfo", rate=10, window=2)
    clock.now = 0.5
    assert statuses(m, 21).count(200) == 20
    status, body = get(m)
    assert status == 429
    delays = [d["retryDelay"] for d in body["error"]["details"] if "retryDelay" in d]
    assert delays == ["1.500s"]  # until the aligned window at t = 2
    clock.now = 1.999
    assert statuses(m, 1) == [429]
    clock.now = 2.0
    assert statuses(m, 21).count(200) == 20


def test_sliding_window_gives_the_budget_back_as_its_requests_age_out() -> None:
    m, clock = model("sliding-window,429-retryinfo", rate=10, window=2)  # 20 in any 2 s
    clock.now = 0.5
    assert statuses(m, 10) == [200] * 10
    clock.now = 1.5
    assert statuses(m, 11) == [200] * 10 + [429]  # 20 since 0.5
    status, body = get(m)
    delays = [d["retryDelay"] for d in body["error"]["details"] if "retryDelay" in d]
    assert (status, delays) == (429, ["1.000s"])  # until the first ten age out at 2.5, not at 2
    clock.now = 2.0
    assert statuses(m, 1) == [429]  # no aligned turn: a fixed window would admit 20 here
    clock.now = 2.5
    assert statuses(m, 11) == [200] * 10 + [429]  # the ten of 0.5 aged out, not those of 1.5
    clock.now = 3.5
    assert statuses(m, 11) == [200] * 10 + [429]


def test_regional_quotas_are_separate_and_a_shared_one_is_not() -> None:
    regional, _ = model("bucket-small,regional-quota", rate=10)  # burst 1
    assert statuses(regional, 1, A) == statuses(regional, 1, B) == [200]
    shared, _ = model("bucket-small,shared-quota", rate=10)
    assert statuses(shared, 1, A) == [200]
    status, body = get(shared, B)
    assert status == 429
    meta = body["error"]["details"][0]["metadata"]
    assert meta["quota_location"] == "global"
    assert meta["quota_limit"] == "ApiRequestsPerMinutePerProject"


def test_reads_apart_meter_reads_on_a_quota_of_their_own() -> None:
    """Cloud Batch's shape: writes (cancels) on one quota, reads (GET, list) on another,
    READ_SHARE times larger, each named in ErrorInfo; by default one quota counts both."""

    def cancel(m: OperationsModel, op: str = "op-000001") -> tuple[int, dict[str, Any]]:
        reply = m.handle("POST", f"/v1/{A}/operations/{op}:cancel", {})
        return reply.status, json.loads(reply.body) if reply.body else {}

    m, _ = model("bucket-small,reads-apart", rate=10)  # writes: burst 1; reads: 25/s, burst 2.5
    assert cancel(m)[0] == 200
    status, body = cancel(m)
    assert status == 429
    meta = body["error"]["details"][0]["metadata"]
    assert meta["quota_limit"] == "WriteRequestsPerMinutePerProjectPerRegion"
    assert meta["quota_limit_value"] == "600"
    assert statuses(m, 2) == [200, 200]  # the reads' own bucket, untouched by the cancels
    status, body = get(m)
    meta = body["error"]["details"][0]["metadata"]
    assert status == 429 and meta["quota_limit"] == "ReadRequestsPerMinutePerProjectPerRegion"
    assert meta["quota_limit_value"] == "1500" and meta["quota_metric"].endswith("read_requests")
    one, _ = model("bucket-small", rate=10)
    assert cancel(one)[0] == 200 and statuses(one, 1) == [429]  # one quota for both
    with pytest.raises(ValueError, match="reads-apart needs a quota rate"):
        OperationsModel().personality("reads-apart")


def test_one_region_can_have_its_own_quota() -> None:
    m, clock = model("bucket-small", location_rates={"b": 10})  # a is free, b throttled
    assert statuses(m, 50, A).count(200) == 50
    assert statuses(m, 5, B).count(200) == 1
    clock.now = 1.0
    assert statuses(m, 20, B).count(200) == 1  # the burst of 1 is all a second buys back


def test_errorinfo_carries_quota_metadata() -> None:
    m, _ = model("bucket-small,429-errorinfo", rate=5)
    statuses(m, 1)
    status, body = get(m)
    info = body["error"]["details"][0]
    assert status == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert info["reason"] == "RATE_LIMIT_EXCEEDED"
    assert info["metadata"]["quota_limit_value"] == "300"  # 5/s as Google states it: per minute
    assert info["metadata"]["quota_location"] == "a"
    assert info["metadata"]["quota_limit"] == "ApiRequestsPerMinutePerProjectPerRegion"
    assert {"quota_metric", "consumer"} <= set(info["metadata"])


def test_bare_429_has_no_details_and_403_says_rate_limit() -> None:
    bare, _ = model("bucket-small,429-bare", rate=5)
    statuses(bare, 1)
    status, body = get(bare)
    assert status == 429 and "details" not in body["error"]
    forbidden, _ = model("bucket-small,403-rate-limit", rate=5)
    statuses(forbidden, 1)
    status, body = get(forbidden)
    assert status == 403
    assert body["error"]["details"][0]["reason"] == "rateLimitExceeded"
    assert body["error"]["errors"][0]["reason"] == "rateLimitExceeded"


def test_background_429s_are_a_share_with_no_quota_behind_them() -> None:
    m, clock = model("background-429", background_share=0.1, seed=7)
    seen = []
    for i in range(4000):
        clock.now = i * 0.001  # a thousand a second: no quota would allow that
        seen.append(get(m))
    throttled = [body for status, body in seen if status == 429]
    assert 0.08 < len(throttled) / len(seen) < 0.12
    assert all("quota_limit" not in str(body) for body in throttled)


def test_fault_mix_draws_its_shares() -> None:
    m, _ = model("fault-mix", seed=3)
    counts = Counter(statuses(m, 5000))
    for status, share in ((429, 0.08), (503, 0.05), (502, 0.02), (0, 0.02)):
        assert share * 0.7 < counts[status] / 5000 < share * 1.3, (status, counts)


@pytest.mark.parametrize(
    ("spec", "asked", "got"),
    [("pages-50", 1000, 50), ("pages-100", 1000, 100), ("pages-1000", 5000, 1000),
     ("pages-ignored", 5, 50)],
)  # fmt: skip
def test_page_personalities(spec: str, asked: int, got: int) -> None:
    clock = Clock()
    m = OperationsModel(clock=clock)
    m.personality(spec)
    populate(m, A, 1200)
    reply = m.handle("GET", f"/v1/{A}/operations?pageSize={asked}", {})
    assert len(json.loads(reply.body)["operations"]) == got


def test_names_parse_combine_and_refuse_conflicts() -> None:
    assert parse_personalities("bucket-small, shared-quota,429-bare") == {
        Personality.BUCKET_SMALL,
        Personality.SHARED_QUOTA,
        Personality.THROTTLE_BARE,
    }
    assert parse_personalities(["pages-50", "background-429"]) == {
        Personality.PAGES_50,
        Personality.BACKGROUND_429,
    }
    with pytest.raises(ValueError, match="unknown personality 'bucket'"):
        parse_personalities("bucket")
    with pytest.raises(ValueError, match="pick one quota shape"):
        parse_personalities("bucket-small,fixed-window")
    with pytest.raises(ValueError, match="needs a quota rate"):
        OperationsModel().personality("fixed-window")


def test_quota_floor_counts_what_exceeded_the_first_burst() -> None:
    m, clock = model("bucket-minute", rate=10, window=2)  # burst 20
    for i in range(400):
        clock.now = i * 0.01
        get(m)
    stats = m.stats()
    admitted = stats["quota_keys"][A]["admitted"]
    assert admitted == stats["by_status"]["200"]
    assert stats["quota_floor_seconds"] == pytest.approx((admitted - 20) / 10)
    assert stats["by_location"][A]["throttled"] == stats["by_status"]["429"]


# ---- the quota oracle: the floor the quota benchmark divides by ------------------------------


def _filled(shape: str, rate: float, window: float, first: float, n: int) -> Quota:
    """A quota that admitted ``n`` requests of one key, its first at ``first``."""
    quota = Quota(rate, shape=QuotaShape(shape), window=window)
    at = first
    admitted = 0
    while admitted < n:
        wait = quota.admit(A + "/operations/x", at)
        admitted += wait is None
        at += 0.001 if wait is None else wait + 1e-6
    return quota


def test_the_oracle_waits_for_a_fixed_window_to_turn() -> None:
    # 300 per 6 s window, 310 admitted, the first request 1 s into a window: whatever the
    # client, the last 10 wait for the window at 6 s.
    quota = _filled("fixed-window", 50, 6, first=1.0, n=310)
    assert quota.oracle_seconds(200) == pytest.approx(5.0 + 9 / 200)
    assert quota.floor_seconds() == pytest.approx(10 / 50)  # the old floor missed the wait


def test_the_oracle_waits_for_a_sliding_windows_first_sends_to_age_out() -> None:
    # 300 in any 6 s: the oracle's first 300 go at 200/s from 1.0, the 301st when the first
    # ages out, at 7.0 (a window from the oracle's own first send, not an aligned one).
    quota = _filled("sliding-window", 50, 6, first=1.0, n=310)
    assert quota.oracle_seconds(200) == pytest.approx(6.0 + 9 / 200)
    # told no faster than the quota, the budget never runs dry: the even pace is the floor
    assert quota.oracle_seconds(50) == pytest.approx(309 / 50)


def test_the_oracle_sends_at_the_ceiling_while_a_burst_lasts_then_at_the_quota() -> None:
    small = _filled("bucket-small", 10, 60, first=0.0, n=50)  # burst 1: one token a 0.1 s
    assert small.oracle_seconds(100) == pytest.approx(49 / 10)
    minute = _filled("bucket-minute", 10, 2, first=0.0, n=15)  # burst 20 covers all 15
    assert minute.oracle_seconds(100) == pytest.approx(14 / 100)


@given(
    shape=st.sampled_from(["bucket-small", "bucket-minute", "fixed-window", "sliding-window"]),
    rate=st.sampled_from([3.0, 10.0, 50.0]),
    window=st.sampled_from([1.0, 2.0, 6.0]),
    first=st.floats(0.0, 20.0),
    n=st.integers(1, 400),
    ceiling=st.sampled_from([5.0, 40.0, 200.0]),
)
# (a send at 1.9999999999999998, the last of its window, five 0.2 s steps from 1.0)
@example(shape="fixed-window", rate=3.0, window=2.0, first=1.0, n=12, ceiling=5.0)
def test_the_oracle_schedule_is_admitted_and_never_beats_the_simple_bounds(
    shape: str, rate: float, window: float, first: float, n: int, ceiling: float
) -> None:
    quota = _filled(shape, rate, window, first, n)
    (times,) = quota.oracle_schedule(ceiling).values()
    assert len(times) == n
    assert all(b - a >= 1 / ceiling - 1e-9 for a, b in pairwise(times))
    replay = Quota(rate, shape=QuotaShape(shape), window=window)
    # (For buckets, each send a nanosecond later than the one before it: float rounding in the
    # token arithmetic, not slack. A fixed window is decided by which window a time falls in,
    # and the drift would move a send that sits on a boundary, 1.9999999999999998 in the
    # window [0, 2), into the next: there the exact times are the faithful replay.)
    drift = 0.0 if shape == "fixed-window" else 1e-9
    refused = [t for i, t in enumerate(times) if replay.admit(A + "/x", t + i * drift) is not None]
    assert refused == []  # a real client could have sent exactly this
    oracle = quota.oracle_seconds(ceiling)
    assert oracle >= (n - 1) / ceiling - 1e-9
    # the old floor, less what starting mid-window (or mid-token) can save
    slack = window if shape == "fixed-window" else 1 / rate
    assert oracle >= quota.floor_seconds() - slack - 1e-9


def test_the_oracle_needs_a_positive_ceiling() -> None:
    quota = _filled("bucket-small", 10, 60, first=0.0, n=3)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ceiling"):
            quota.oracle_seconds(bad)


def test_stats_give_the_oracle_for_a_ceiling() -> None:
    m, clock = model("fixed-window", rate=10, window=2)  # 20 a window
    for i in range(30):
        clock.now = 1.0 + i * 0.001
        get(m)
    stats = m.stats(ceiling=100)
    admitted = stats["quota_keys"][A]["admitted"]
    assert admitted == 20  # the rest waits for the window at 2.0
    assert stats["quota_oracle_seconds"] == pytest.approx(19 / 100)
    assert m.stats()["quota_oracle_seconds"] is None


def test_a_sliding_windows_oracle_counts_a_fractional_budget_as_admit_does() -> None:
    quota = Quota(10, shape=QuotaShape.SLIDING_WINDOW, window=1.0, burst=2.5)
    admitted = [quota.admit(A + "/x", 0.01 * i) is None for i in range(5)]
    assert admitted == [True, True, True, False, False]  # 0, 1 and 2 in the log are under 2.5
    for at in (1.0, 1.01, 1.02):
        assert quota.admit(A + "/x", at + 1e-9) is None
    (times,) = quota.oracle_schedule(100).values()
    assert times == pytest.approx([0.0, 0.01, 0.02, 1.0, 1.01, 1.02])
