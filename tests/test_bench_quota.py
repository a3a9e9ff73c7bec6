"""The quota benchmark refuses to measure what it cannot run, and its floor (no timing here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import quota


def test_refuses_to_start_without_the_google_api_core_peer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the ``bench`` extra the peer crashed in every row and was printed as a client
    that got every outcome wrong."""
    monkeypatch.setattr(quota, "_have_apicore", lambda: False)
    with pytest.raises(SystemExit) as stopped:
        quota.main(["--quick"])
    assert stopped.value.code == 2
    assert "google-api-core is not installed" in capsys.readouterr().err


def test_a_client_that_exits_without_outcomes_stops_the_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def crashed(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ModuleNotFoundError: no peer\n")

    monkeypatch.setattr(subprocess, "run", crashed)  # (quota calls subprocess.run)
    names = tmp_path / "names.txt"
    names.write_text("projects/p/locations/l/operations/o\n")
    for client in quota.CLIENTS:
        with pytest.raises(RuntimeError, match="no peer"):
            quota.run_client(client, "http://127.0.0.1:1", names, tmp_path)


def test_a_listed_row_has_bulkcancel_list_the_parents_and_the_peers_read_the_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The runbook's way, ``--parent``, is what met a cut that counted the listing's round
    trips as sending; the peers do not list, and read the names as in every other row."""
    commands: list[list[str]] = []

    def ran(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "stop here\n")

    monkeypatch.setattr(subprocess, "run", ran)
    names = tmp_path / "names.txt"
    (row,) = [s for s in quota.scenarios(300) if s.listed]
    for client in quota.CLIENTS:
        with pytest.raises(RuntimeError, match="stop here"):
            quota.run_client(client, "http://127.0.0.1:1", names, tmp_path, parents=row.parents)
    listing, *peers = commands
    assert "--names-file" not in listing and str(names) not in listing
    at = listing.index("--parent")
    assert listing[at : at + 2] == ["--parent", quota.CENTRAL]
    assert all(str(names) in peer and "--parent" not in peer for peer in peers)


def test_the_floor_is_never_under_what_the_requests_in_flight_allow() -> None:
    """With answers that take a while, 32 requests in flight bound every client: a floor of
    requests / --rate alone read 2.46x for a run no client could drain faster (0.3 s answers,
    10% of background 429s)."""
    background = quota.Scenario("bg", (), quota_floor=False, background=0.1)
    stats = {"requests": 350, "by_status": {"429": 35}, "quota_oracle_seconds": None}
    assert quota.floor_seconds(background, stats, 200.0) == pytest.approx(350 / 200)
    assert quota.floor_seconds(background, stats, 200.0, 0.3) == pytest.approx(350 * 0.3 / 32)
    walled = quota.Scenario("q", ())
    stats = {"requests": 330, "by_status": {"429": 30}, "quota_oracle_seconds": 6.0}
    assert quota.floor_seconds(walled, stats, 200.0, 0.3) == pytest.approx(6.0)  # the quota's
    assert quota.floor_seconds(walled, stats, 200.0, 1.0) == pytest.approx(300 / 32)


@pytest.mark.parametrize(
    ("quota_rate", "told", "slow"), [(50.0, 200.0, "5"), (300.0, 50.0, "5"), (2.0, 200.0, "0.5")]
)
def test_the_two_region_rows_throttled_region_is_throttled_hard_under_any_rate(
    quota_rate: float, told: float, slow: str
) -> None:
    """A tenth of the quota or of --rate, whichever is less: a tenth of a 300/s quota beside
    --rate 50 was never throttled, and the row measured the two regions' split of the rate."""
    (row,) = [s for s in quota.scenarios(300, quota_rate, told=told) if s.free_region]
    assert f"us-east1={slow}" in row.extra
    assert row.label == f"2 regions, us-east1 at {slow}/s: free region"


def test_latency_and_its_jitter_reach_the_fake_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[list[str]] = []

    class Started(Exception):
        pass

    def fake_server(*args: object, extra: list[str], **kwargs: object) -> object:
        seen.append(extra)
        raise Started

    monkeypatch.setattr(quota, "fake_server", fake_server)
    scenario = quota.scenarios(300)[0]
    for latency, jitter in ((0.0, 0.0), (0.2, 0.0), (0.2, 0.5)):
        with pytest.raises(Started):
            quota.measure(scenario, "bulkcancel", 300, tmp_path, 1, latency=latency, jitter=jitter)
    plain, distant, jittery = seen
    assert "--latency" not in plain and "--latency-jitter" not in plain
    assert distant[-2:] == ["--latency", "0.2"] and "--latency-jitter" not in distant
    assert jittery[-4:] == ["--latency", "0.2", "--latency-jitter", "0.5"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jitter", "0.5"], "give a --latency too"),
        (["--latency", "-0.1"], "cannot be negative"),
        (["--latency", "0.2", "--jitter", "-1"], "cannot be negative"),
    ],
)
def test_a_jitter_without_a_latency_or_a_negative_one_is_refused(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """(A jitter of no latency would have run the matrix at answers at once, saying nothing.)"""
    with pytest.raises(SystemExit) as stopped:
        quota.main(["--skip-apicore", *args])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_a_partial_run_saves_under_a_name_of_its_own() -> None:
    """A run of some clients or some scenarios overwrote the full matrix's results file, so
    the last full run's per-round figures were lost to a quick re-run of one row."""
    parse = quota.make_parser()
    full = quota.result_name(parse.parse_args([]), list(quota.CLIENTS))
    assert full == "quota"
    ours = quota.result_name(parse.parse_args([]), ["bulkcancel"])
    one_row = quota.result_name(parse.parse_args(["--only", "one quota, 2/3"]), ["bulkcancel"])
    slow = quota.result_name(
        parse.parse_args(["--quota", "10", "--latency", "0.3"]), ["bulkcancel"]
    )
    assert ours == "quota-bulkcancel"
    assert one_row == "quota-bulkcancel-only-one_quota__2_3"
    assert slow == "quota-q10-t200-w6-l300ms-bulkcancel"
    names = {
        full,
        ours,
        one_row,
        slow,
        quota.result_name(parse.parse_args([]), ["naive 1s cool-down"]),
    }
    assert len(names) == 5 and all(" " not in n and "/" not in n for n in names)
