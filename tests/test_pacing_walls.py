"""Quota walls the first pacer missed, on virtual time: one quota shared by several regions
(told by ErrorInfo or not), bare 429s from a small-burst token bucket, and a background share of
429s on a short run. Each family runs at several quota sizes and region counts, so what passes
is the behaviour, not one configuration. The models and the harness are test_pacing_sim's.
"""

from __future__ import annotations

import pytest

from tests.test_pacing_sim import Bucket, Open, Server, all_ok, bucket_floor, name, simulate


def regions(requests: int, count: int) -> list[str]:
    """``requests`` names spread round-robin over ``count`` locations of one project."""
    locations = [f"r{i}" for i in range(count)]
    return [name(i, locations[i % count]) for i in range(requests)]


def project_wide(quota: float) -> dict[str, str]:
    """ErrorInfo as Google sends it for a project-wide per-minute quota."""
    return {
        "quota_metric": "clouddeploy.googleapis.com/api_requests",
        "quota_limit": "ApiRequestsPerMinutePerProject",
        "quota_limit_value": str(round(quota * 60)),
        "quota_location": "global",
    }


@pytest.mark.parametrize(
    ("quota", "count", "told"),
    [
        (50.0, 2, True),
        (50.0, 3, True),
        (30.0, 2, True),
        (100.0, 2, True),
        (50.0, 2, False),
        (50.0, 3, False),
        (30.0, 2, False),
    ],
)
def test_one_quota_shared_by_several_regions(quota: float, count: int, told: bool) -> None:
    requests = 300 * count
    burst = max(1.0, quota / 10)
    server = Server({"*": Bucket(quota, burst)}, metadata=project_wide(quota) if told else None)
    result = simulate(server, regions(requests, count), rate=200)
    floor = bucket_floor(requests, 200, quota, burst)
    assert all_ok(result)
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize("quota", [20.0, 50.0, 100.0])
def test_bare_429s_from_a_small_burst_bucket_stay_rare(quota: float) -> None:
    requests = round(quota * 12)
    burst = max(1.0, quota / 10)
    server = Server({"*": Bucket(quota, burst)})
    result = simulate(server, [name(i) for i in range(requests)], rate=200)
    floor = bucket_floor(requests, 200, quota, burst)
    assert all_ok(result)
    assert result.seconds <= 1.2 * floor, (result.seconds, floor)
    assert result.share_429 <= 0.10, result.share_429


@pytest.mark.parametrize(("requests", "rate"), [(300, 200.0), (1000, 50.0)])
def test_background_429s_cost_only_their_retries(requests: int, rate: float) -> None:
    server = Server({"*": Open()}, noise=0.10)
    result = simulate(server, [name(i) for i in range(requests)], rate=rate, workers=32)
    assert all_ok(result)
    # Against requests / rate, as the benchmark measures it: the retries of 10% refused
    # requests alone take 1.11x of that.
    assert result.seconds <= 1.2 * requests / rate, (result.seconds, requests / rate)
