"""Pacing over many server personalities, on virtual time: a matrix, not one row.

Each run drives the real :class:`~bulkcancel._client.OperationsClient` and
:class:`~bulkcancel._limits.RateGovernor` against the fake's own quota model
(:class:`bulkcancel.testing.Quota`: its shapes, scopes and oracle), through the virtual-time
simulator of ``tests/_pacing.py``: an event loop whose clock jumps to the next timer, so a
run costs milliseconds and is the same every time. The figures are the issue's: drain over the
quota floor (the fake's oracle at the run's ceiling, split evenly among regions with quotas of
their own, since ``--rate`` holds all of them together; never under all names / ``--rate``, nor
under what 32 requests in flight allow at the run's latency) and the share of requests refused
by the quota (background refusals not counted: any client draws them).

Sets (``python -m benchmarks.sweep SET``):

* ``short``: 252 runs, a quota of 5, 10 or 20/s, ten seconds of it (50-200 names), told the
  default 50/s; each shape (a bucket with a small burst; a minute's bucket and a fixed window of
  2, 3 and 6 s), bare 429s or ErrorInfo stating the per-minute limit, 0 or 10% background 429s,
  three window phases.
* ``slow``: 300 random draws at 4-40/s; ``random``: 300 at 5-300/s (log-uniform). Any shape,
  windows of 1-10 s, one to three regions with quotas of their own or one shared (30%), bare or
  stated, 0/5/10% background, told 1.2-8x the quota, 2-100 ms answers, 10-40 s of quota.
* ``shared-bare``: 120 draws at 8-120/s, two regions on one quota, bare 429s (nothing says the
  quota is shared).
* ``apart-bare``: 160 draws at 8-120/s, two or three regions with quotas of their own, bare 429s
  (nothing says they are separate: walls in step must not hold them to one region's quota).
* ``far``: 200 draws as ``random`` draws them, at 5-150/s, but from a distant server: answers
  take 0.15-0.8 s (real Google answers take 0.1-0.3 s), so 32 in flight may hold a key under
  its quota, and every decision's news is a round trip late.
* ``many``: 80 draws at 10-150/s of a project working in four to eight regions, on one quota
  (half of them) or one each, bare or stated, any shape, told 1.2-4x what the quotas allow
  together, 10-20 s of quota (the other sets stop at three regions).
* ``far-short``: 160 short runs from a distant server, the matrix's kind: 4-10 s of a quota of
  10-150/s, told 2-6x it, any shape, one region or two (one quota or one each), bare (60%) or
  stated, answers of 0.1-0.5 s (``far``'s runs hold 10-40 s of quota, where the first round
  trips weigh little).
* ``uneven``: 120 draws of two or three regions with quotas of their own that differ: the first
  at 8-120/s, each other one 1.5-8x smaller (never under 2/s), any shape, bare (60%) or
  stated, told 1.2-4x the largest per region, the same names in every region (10-40 s of the
  smallest quota): the large regions finish first, the small one runs on alone (new in
  session 28: the other sets draw separate quotas equal).
* ``minute``: 60 draws with windows as long as Google's, 30 or 60 s (a window's bucket, a
  fixed or a sliding window) at 3-30/s, one region or two, bare or stated, 0/5/10% background,
  told 1.2-8x the quota, 2.5-5 windows of it (new in session 36: the other sets scale windows
  down to 1-10 s, where a park's probes cost a few refusals, not hundreds).
* ``low``: 80 draws at 0.6-4/s (36-240 a minute; a key never goes under 0.5/s), any shape
  (sliding windows too), windows of 30 or 60 s, one region or two, bare or stated, 0/5/10%
  background, told 1.2-8x the quota, 2.5-5 windows of it (new in session 45: a park's probes
  against a window's budget of a few dozen, and calls waiting behind a slow key's backlog).
* ``sliding``: 300 draws as ``random`` draws them, but every quota a sliding window (a rolling
  log: the window's budget in any span of its length, coming back as the requests that spent it
  age out; new in session 36, a shape no other set draws).

``--background-quota``: background 429s carry the quota's ErrorInfo too (by default they carry
none, as the fake's ``background-429`` sends them). ``--jitter SIGMA``: every answer's latency
varies (each way of the round trip a log-normal factor of that sigma, mean 1: at 0.5 one round
trip in twenty takes 1.8x the median or more), so requests reach the server, and answers the
client, out of the order they were sent in, as over a real network. ``--out FILE`` writes one
JSON line per run; ``--compare OLD`` prints the same summary for an earlier output and the runs
that moved. To compare two trees, run the sweep in each (``cd TREE && python -m
benchmarks.sweep ...``). Nothing here is asserted in the test suite;
``tests/test_pacing_sim.py`` holds the cases that are.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import statistics
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import share_target
from bulkcancel._transport import RawResponse
from bulkcancel.testing._personalities import Quota, QuotaShape
from tests import _pacing as sim

SHAPES = ("bucket-small", "bucket-minute", "fixed-window")
IN_FLIGHT = 32  # the simulator's concurrency
_SEEDS = {
    "slow": 1, "random": 2, "shared-bare": 3, "apart-bare": 4, "far": 11, "many": 12,
    "far-short": 13, "uneven": 14, "sliding": 15, "minute": 16, "low": 17,
}  # fmt: skip
SETS = ("short", *_SEEDS)


@dataclass(frozen=True)
class Personality:
    quota: float  # requests/s per quota key
    shape: str
    window: float  # seconds (minute's buckets and fixed windows)
    shared: bool  # one quota for every region of the project
    regions: int
    stated: bool  # ErrorInfo states the per-minute limit (else bare 429s)
    background: float  # share of 429s at random, no quota behind them
    offset: float  # seconds into a window the run starts
    told: float  # the client's --rate
    names: int  # per region
    latency: float  # seconds per answer
    seed: int
    quotas: tuple[float, ...] = ()  # per region, when they differ (else ``quota`` for each)


@dataclass
class _Server:
    """Answers a cancel by the fake's quota model; ``answer`` is what the simulator calls."""

    quota: Quota
    personality: Personality
    background_quota: bool
    rng: random.Random
    requests: int = 0
    throttled: int = 0
    background: int = 0
    log: list[tuple[float, str, bool]] = field(default_factory=list)

    def answer(self, now: float, url: str, *, read: bool = False) -> RawResponse:
        """The answer to a cancel (the sweep reads nothing back: ``read`` is never set)."""
        self.requests += 1
        name = url.split("/v1/", 1)[1].removesuffix(":cancel")
        stated = self.personality.stated
        if self.rng.random() < self.personality.background:
            self.throttled += 1
            self.background += 1
            info = self.quota.info(name) if stated and self.background_quota else None
            return sim.throttle(None, info)
        if self.quota.admit(name, now + self.personality.offset) is None:
            return sim.OK
        self.throttled += 1
        return sim.throttle(None, self.quota.info(name) if stated else None)


def run(
    personality: Personality, background_quota: bool = False, jitter: float = 0.0
) -> dict[str, Any]:
    """One simulated run: the personality, ``x`` (drain over floor), ``share`` (429s by the
    quota), ``exact`` (every cancel ended OK), ``requests``, the drain in ``seconds`` and the
    ``jitter`` it ran with."""
    p = personality
    locations = [chr(ord("a") + i) for i in range(p.regions)]
    quota = Quota(
        p.quota, shape=QuotaShape(p.shape), window=p.window, shared=p.shared,
        location_rates=dict(zip(locations, p.quotas, strict=False)),
    )  # fmt: skip
    server = _Server(quota, p, background_quota, random.Random(p.seed))
    names = [sim.name(i, location) for i in range(p.names) for location in locations]
    result = sim.simulate(
        server,  # type: ignore[arg-type]
        names, rate=p.told, latency=p.latency, jitter=jitter, jitter_seed=p.seed,
    )  # fmt: skip
    # (--rate holds all keys together: regions with quotas of their own share it evenly)
    keys = 1 if p.shared else p.regions
    floor = max(quota.oracle_seconds(p.told / keys), len(names) / p.told)
    if p.latency > 0:
        floor = max(floor, len(names) * p.latency / IN_FLIGHT)
    refused = server.throttled - server.background
    return {
        **asdict(p),
        "x": result.seconds / floor,
        "share": refused / max(1, server.requests - server.background),
        "exact": all(answer.ok for answer in result.answers),
        "requests": server.requests,
        "seconds": result.seconds,
        "jitter": jitter,
    }


def personalities(name: str) -> list[Personality]:
    if name == "short":
        return list(_short())
    if name in _SEEDS:
        return list(_drawn(name))
    raise ValueError(f"no such set: {name}")


def _short() -> Iterable[Personality]:
    seed = 0
    windows = [("bucket-small", 6.0)]
    windows += [(shape, w) for shape in SHAPES[1:] for w in (2.0, 3.0, 6.0)]
    for quota in (5.0, 10.0, 20.0):
        for shape, window in windows:
            for stated in (False, True):
                for background in (0.0, 0.1):
                    for phase in range(3):
                        offset = window * phase / 3 + 0.37
                        yield Personality(
                            quota, shape, window, False, 1, stated, background, offset,
                            50.0, int(10 * quota), 0.02, seed,
                        )  # fmt: skip
                        seed += 1


def _drawn(name: str) -> Iterable[Personality]:
    rng = random.Random(_SEEDS[name])
    if name == "many":
        yield from (_many(rng, seed) for seed in range(80))
        return
    if name == "far-short":
        yield from (_far_short(rng, seed) for seed in range(160))
        return
    if name == "uneven":
        yield from (_uneven(rng, seed) for seed in range(120))
        return
    if name == "minute":
        yield from (_minute(rng, seed) for seed in range(60))
        return
    if name == "low":
        yield from (_low(rng, seed) for seed in range(80))
        return
    draws = {"shared-bare": 120, "apart-bare": 160, "far": 200}.get(name, 300)
    for seed in range(draws):
        if name == "slow":
            quota = rng.uniform(4, 40)
        elif name in ("random", "sliding"):
            quota = math.exp(rng.uniform(math.log(5), math.log(300)))
        elif name == "far":
            quota = math.exp(rng.uniform(math.log(5), math.log(150)))
        else:
            quota = rng.uniform(8, 120)
        bare = name in ("shared-bare", "apart-bare")
        shape = rng.choice(SHAPES)
        if name == "sliding":
            shape = "sliding-window"
        window = rng.choice([1.0, 2.0, 3.0, 6.0, 10.0])
        if bare:
            regions = 2 if name == "shared-bare" else rng.choice([2, 3])
        else:
            regions = rng.choice([1, 1, 2, 3])
        shared = name == "shared-bare" or (not bare and rng.random() < 0.3)
        stated = not bare and rng.random() < 0.5
        background = rng.choice([0.0, 0.0, 0.05, 0.1])
        told = quota * rng.uniform(1.2, 8)
        seconds = rng.uniform(10, 40)
        names = max(20, int(quota * seconds / (regions if shared else 1)))
        offset = rng.uniform(0, window)
        latency = rng.choice([0.15, 0.3, 0.5, 0.8] if name == "far" else [0.002, 0.02, 0.05, 0.1])
        yield Personality(
            quota, shape, window, shared, regions, stated, background, offset, told, names,
            latency, seed,
        )  # fmt: skip


def _many(rng: random.Random, seed: int) -> Personality:
    """A project working in four to eight regions: one quota for all of them or one each, bare
    or stated, at 10-150/s (log-uniform), every shape, told 1.2-4x what the project's quotas
    allow together (so regions with quotas of their own meet them too)."""
    quota = math.exp(rng.uniform(math.log(10), math.log(150)))
    shape = rng.choice(SHAPES)
    window = rng.choice([1.0, 2.0, 3.0, 6.0, 10.0])
    regions = rng.randint(4, 8)
    shared = rng.random() < 0.5
    stated = rng.random() < 0.5
    return _project(
        rng, seed, quota, shape, window, shared, regions, stated,
        told=(1.2, 4), seconds=(10, 20), latencies=[0.002, 0.02, 0.05, 0.1],
    )  # fmt: skip


def _far_short(rng: random.Random, seed: int) -> Personality:
    """A short run from a distant server, the matrix's kind (300 names at 50/s is 6 s of
    quota): 4-10 s of a quota of 10-150/s (log-uniform), told 2-6x it, every shape, one region
    or two (on one quota or one each), bare 429s (60%) or stated, 0/5/10% background, answers
    of 0.1-0.5 s. Slow start's first round trip and its first wall weigh most here."""
    quota = math.exp(rng.uniform(math.log(10), math.log(150)))
    shape = rng.choice(SHAPES)
    window = rng.choice([2.0, 3.0, 6.0, 10.0])
    regions = rng.choice([1, 1, 2])
    shared = regions == 2 and rng.random() < 0.5
    stated = rng.random() < 0.4
    return _project(
        rng, seed, quota, shape, window, shared, regions, stated,
        told=(2, 6), seconds=(4, 10), latencies=[0.1, 0.2, 0.3, 0.5],
    )  # fmt: skip


def _uneven(rng: random.Random, seed: int) -> Personality:
    """Two or three regions with quotas of their own that differ: the first region's quota
    at 8-120/s (log-uniform), each other one 1.5-8x smaller (log-uniform, never under 2/s),
    any shape, bare 429s (60%) or stated, told 1.2-4x the largest quota per region, the same
    names in every region: 10-40 s of the smallest quota, so the large regions finish first
    and the small one runs on alone."""
    quota = math.exp(rng.uniform(math.log(8), math.log(120)))
    regions = rng.choice([2, 2, 3])
    ratios = [math.exp(rng.uniform(math.log(1.5), math.log(8))) for _ in range(regions - 1)]
    quotas = (quota, *(max(2.0, quota / ratio) for ratio in ratios))
    shape = rng.choice(SHAPES)
    window = rng.choice([1.0, 2.0, 3.0, 6.0, 10.0])
    stated = rng.random() < 0.4
    background = rng.choice([0.0, 0.0, 0.05, 0.1])
    told = quota * regions * rng.uniform(1.2, 4)
    names = max(20, int(min(quotas) * rng.uniform(10, 40)))
    offset = rng.uniform(0, window)
    latency = rng.choice([0.002, 0.02, 0.05, 0.1])
    return Personality(
        quota, shape, window, False, regions, stated, background, offset, told, names,
        latency, seed, quotas,
    )  # fmt: skip


def _minute(rng: random.Random, seed: int) -> Personality:
    """Windows as long as Google's (30 or 60 s; the other sets scale them to 1-10 s): a
    window's bucket, a fixed or a sliding window, at 3-30/s (log-uniform, where a park's
    probes weigh most against a window's budget), one region or two, bare or stated, told
    1.2-8x the quota, two and a half to five windows of it."""
    return _long_windows(rng, seed, (3.0, 30.0), (*SHAPES[1:], "sliding-window"))


def _low(rng: random.Random, seed: int) -> Personality:
    """Quotas of a few requests a second, 36-240 a minute (0.6-4/s, log-uniform: a key never
    goes under 0.5/s), any shape, minute-long windows (30 or 60 s), one region or two, bare or
    stated, told 1.2-8x the quota, two and a half to five windows of it: a park's probes and a
    call's wait behind its key's backlog weigh most here (new in session 45)."""
    return _long_windows(rng, seed, (0.6, 4.0), (*SHAPES, "sliding-window"))


def _long_windows(
    rng: random.Random, seed: int, quotas: tuple[float, float], shapes: Sequence[str]
) -> Personality:
    """A draw of ``minute`` or ``low``: a quota log-uniform in ``quotas``, one of ``shapes``."""
    quota = math.exp(rng.uniform(math.log(quotas[0]), math.log(quotas[1])))
    shape = rng.choice(shapes)
    window = rng.choice([30.0, 60.0])
    regions = rng.choice([1, 1, 2])
    shared = regions == 2 and rng.random() < 0.3
    stated = rng.random() < 0.5
    return _project(
        rng, seed, quota, shape, window, shared, regions, stated,
        told=(1.2, 8), seconds=(2.5 * window, 5 * window), latencies=[0.002, 0.02, 0.05, 0.1],
    )  # fmt: skip


def _project(
    rng: random.Random,
    seed: int,
    quota: float,
    shape: str,
    window: float,
    shared: bool,
    regions: int,
    stated: bool,
    *,
    told: tuple[float, float],
    seconds: tuple[float, float],
    latencies: list[float],
) -> Personality:
    """The rest of a project's draw: a background share, the run's ``--rate`` (``told`` times
    what the project's quotas allow together), its names (``seconds`` of quota), the window's
    phase and the answers' latency."""
    background = rng.choice([0.0, 0.0, 0.05, 0.1])
    rate = quota * (1 if shared else regions) * rng.uniform(*told)
    names = max(20, int(quota * rng.uniform(*seconds) / (regions if shared else 1)))
    offset = rng.uniform(0, window)
    latency = rng.choice(latencies)
    return Personality(
        quota, shape, window, shared, regions, stated, background, offset, rate, names,
        latency, seed,
    )  # fmt: skip


def summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    xs = [r["x"] for r in runs]
    return {
        "runs": len(runs),
        "not exact": sum(not r["exact"] for r in runs),
        "over 1.2x": sum(x > 1.2 for x in xs),
        "over 1.5x": sum(x > 1.5 for x in xs),
        "over the 429 targets": sum(r["share"] > _target(r) for r in runs),
        "median x": round(statistics.median(xs), 3),
        "mean x": round(statistics.mean(xs), 4),
        "worst x": round(max(xs), 2),
        "mean 429 share": round(statistics.mean(r["share"] for r in runs), 4),
    }


def _target(run: dict[str, Any]) -> float:
    return share_target(run["shape"])


def moved(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[str]:
    """The runs whose drain moved by 0.03x or more, or their 429 share by 2 points."""
    lines = []
    for a, b in zip(old, new, strict=True):
        if abs(a["x"] - b["x"]) >= 0.03 or abs(a["share"] - b["share"]) >= 0.02:
            how = "stated" if a["stated"] else "bare"
            scope = "shared" if a["shared"] else "apart"
            lines.append(
                f"seed {a['seed']:3d}: {a['quota']:6.1f}/s {a['shape']} {a['window']:g} s {how}"
                f" bg {a['background']:g} x{a['regions']} {scope}:"
                f" {a['x']:.2f}x -> {b['x']:.2f}x, {a['share']:.1%} -> {b['share']:.1%}"
            )
    return lines


def sweep(
    name: str, *, jobs: int = 2, background_quota: bool = False, jitter: float = 0.0
) -> list[dict[str, Any]]:
    drawn = personalities(name)
    flags = itertools.repeat(background_quota), itertools.repeat(jitter)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run, drawn, *flags, chunksize=4))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", choices=SETS)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--background-quota", action="store_true")
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", type=Path, help="an earlier --out of the same set")
    args = parser.parse_args(argv)
    if args.jitter < 0:
        parser.error("--jitter cannot be negative")
    results = sweep(
        args.set, jobs=args.jobs, background_quota=args.background_quota, jitter=args.jitter
    )
    if args.out is not None:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in results))
    now = summary(results)
    if args.compare is not None:
        old = [json.loads(line) for line in args.compare.read_text().splitlines()]
        print("before:", json.dumps(summary(old)))
        print("after: ", json.dumps(now))
        for line in moved(old, results):
            print(line)
    else:
        print(json.dumps(now))
    sys.stdout.flush()
    return now


if __name__ == "__main__":
    main()
