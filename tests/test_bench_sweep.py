"""The virtual-time sweep measures what its docstring says (its figures are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import sweep


@pytest.mark.parametrize(
    ("name", "runs"),
    [
        ("short", 252),
        ("slow", 300),
        ("random", 300),
        ("shared-bare", 120),
        ("apart-bare", 160),
        ("far", 200),
        ("many", 80),
        ("far-short", 160),
        ("uneven", 120),
        ("sliding", 300),
        ("minute", 60),
    ],
)
def test_each_set_draws_the_personalities_it_names(name: str, runs: int) -> None:
    drawn = sweep.personalities(name)
    assert len(drawn) == runs
    assert drawn == sweep.personalities(name)  # the same draws every time: comparable
    if name == "shared-bare":
        assert all(p.shared and p.regions == 2 and not p.stated for p in drawn)
    if name == "apart-bare":
        assert all(not p.shared and p.regions in (2, 3) and not p.stated for p in drawn)
    if name == "uneven":
        assert all(not p.shared and len(p.quotas) == p.regions in (2, 3) for p in drawn)
        assert all(2.0 <= min(p.quotas) < max(p.quotas) == p.quotas[0] for p in drawn)
        assert all(p.told >= 1.2 * p.quota * p.regions for p in drawn)
    else:
        assert all(not p.quotas for p in drawn)
    if name == "many":
        assert {p.regions for p in drawn} == set(range(4, 9))
        assert {p.shared for p in drawn} == {p.stated for p in drawn} == {False, True}
    if name == "far":
        assert {p.latency for p in drawn} == {0.15, 0.3, 0.5, 0.8}
    elif name == "far-short":
        assert {p.latency for p in drawn} == {0.1, 0.2, 0.3, 0.5}
        assert all(3.9 < p.names * (p.regions if p.shared else 1) / p.quota <= 10 for p in drawn)
        assert {p.stated for p in drawn} == {p.shared for p in drawn} == {False, True}
    else:
        assert all(p.latency <= 0.1 for p in drawn)
    if name == "sliding":
        assert {p.shape for p in drawn} == {"sliding-window"}
        assert 5 <= min(p.quota for p in drawn) < max(p.quota for p in drawn) <= 300
    elif name == "minute":
        assert {p.window for p in drawn} == {30.0, 60.0}
        assert {p.shape for p in drawn} == {"bucket-minute", "fixed-window", "sliding-window"}
        assert all(2.45 <= p.names * (p.regions if p.shared else 1) / p.quota / p.window <= 5
                   for p in drawn)  # fmt: skip
    else:
        assert "sliding-window" not in {p.shape for p in drawn}  # (their counts stay comparable)
    if name == "short":
        assert {p.quota for p in drawn} == {5.0, 10.0, 20.0}
        assert all(p.names == 10 * p.quota and p.told == 50.0 for p in drawn)


def test_a_run_is_measured_against_the_oracle_and_repeats_exactly() -> None:
    personality = sweep.personalities("short")[-1]  # 20/s, fixed window, stated, background
    first = sweep.run(personality)
    assert first == sweep.run(personality)
    assert first["exact"]
    assert first["requests"] >= personality.names
    assert first["x"] >= 0.99  # no client beats the oracle (a drain is not asserted here)
    assert 0.0 <= first["share"] < 0.5


def test_regions_of_uneven_quotas_are_refused_each_by_its_own() -> None:
    """The ``uneven`` set's regions have the quotas drawn for them: the floor is the smallest
    quota's (the same names in every region), so a run is at least that long."""
    personality = next(p for p in sweep.personalities("uneven") if p.quotas[1] < p.quota / 3)
    result = sweep.run(personality)
    assert result["exact"]
    assert result["x"] >= 0.99
    floor = result["seconds"] / result["x"]
    smallest = personality.names / min(personality.quotas)
    assert 0.9 * smallest <= floor <= 1.1 * smallest  # (the largest quota's is a third of it)


def test_background_refusals_carry_the_quota_only_when_asked() -> None:
    short = sweep.personalities("short")
    personality = next(p for p in short if p.stated and p.background and p.shape != "bucket-small")
    plain = sweep.run(personality)
    told = sweep.run(personality, background_quota=True)
    # Random 429s that state the per-minute limit hold the key at it: slower, never faster.
    assert told["x"] > plain["x"]


def test_compare_names_the_runs_that_moved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    few = sweep.personalities("short")[:3]
    monkeypatch.setattr(sweep, "personalities", lambda name: few)
    old = tmp_path / "old.jsonl"
    sweep.main(["short", "--jobs", "1", "--out", str(old)])
    lines = [json.loads(line) for line in old.read_text().splitlines()]
    assert [line["seed"] for line in lines] == [p.seed for p in few]
    lines[1]["x"] += 0.5
    old.write_text("".join(json.dumps(line) + "\n" for line in lines))
    capsys.readouterr()
    now = sweep.main(["short", "--jobs", "1", "--compare", str(old)])
    out = capsys.readouterr().out
    assert now["runs"] == 3
    moved = [line for line in out.splitlines() if line.startswith("seed")]
    assert len(moved) == 1
    assert moved[0].startswith(f"seed {few[1].seed:3d}:")
    assert few[1].shape in moved[0]


def test_jitter_reorders_the_answers_and_none_is_the_default() -> None:
    """``--jitter`` varies each answer's latency (the run still repeats exactly); 0 is the
    fixed latency every set runs with by default."""
    personality = next(
        p for p in sweep.personalities("far") if p.shape == "bucket-small" and not p.background
    )
    plain = sweep.run(personality)
    assert plain == sweep.run(personality, jitter=0.0)
    assert plain["jitter"] == 0.0
    jittered = sweep.run(personality, jitter=0.5)
    assert jittered == sweep.run(personality, jitter=0.5)
    assert jittered["jitter"] == 0.5
    assert jittered["exact"]
    assert (jittered["x"], jittered["share"]) != (plain["x"], plain["share"])


def test_a_negative_jitter_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        sweep.main(["short", "--jitter", "-0.5"])
    assert stopped.value.code == 2
    assert "--jitter cannot be negative" in capsys.readouterr().err


def test_a_sliding_window_is_held_to_a_windows_429_target() -> None:
    """Issue 8 allows a fixed window 15% of 429s (what is in flight when its budget runs out is
    refused); a sliding window's budget runs out the same way, and is held to the same."""
    runs = [{"shape": shape} for shape in (*sweep.SHAPES, "sliding-window")]
    assert [sweep._target(run) for run in runs] == [0.10, 0.10, 0.15, 0.15]
