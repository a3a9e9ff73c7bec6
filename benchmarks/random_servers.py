"""Servers drawn at random: personalities combined as no fixed matrix row combines them.

The quota matrix (``benchmarks/quota.py``) varies one thing per row; a server the project has
not seen varies several at once. Each draw here is a fresh ``bulkcancel fake-server`` with a
random combination of what it can be (a quota shape or none, its scope and refusal shape, reads
metered apart, a background share or the fault mix, page caps or ``pageSize`` ignored, a
distant or jittered network, one to three parents over one or two projects, a region that
cannot cancel, operations that take a while to stop, a mixed outcome script), and the CLI is
run once against it with random flags (``--rate``, ``--concurrency``, ``--reconcile``,
``--page-size``, names from a file, stdin or ``--parent``). Each draw is checked for what a user
scripts against: every outcome the one the fake scripted, the exit code the contract gives for
those outcomes (0 or 3), no traceback and no "internal error" on stderr; and scored as the
matrix scores a row: drain (first to last request, as the server saw it) over a floor, and the
share of requests refused as throttled.

The floor: with a quota, the fake's oracle (a client that knows the quota and never draws a
429, for what the server admitted) and never under accepted / ``--rate``; with a background
share of 429s, what any client must send at ``--rate`` (accepted / (1 - share)); never under
what the requests in flight allow behind the drawn latency, nor under the time an operation
takes to stop once cancelled. Issue 8's targets (x floor 1.2, 429s 10%, 15% on a fixed
window) are checked on draws with a quota, no noise and a floor of 2 s or more: a shorter run
is its first wall and little more (slow start opens at half of ``--rate``: the README's known
miss "short runs"), and a background's 429s are the server's. Draws are reproducible from
``--seed``; the timings are not (a real process on a shared machine). The sliding window
(session 36) is not among the shapes drawn, so a seed draws the servers it drew before; the
sweep set ``sliding`` and the matrix's two sliding-window rows measure it.

    python -m benchmarks.random_servers --draws 40 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import bulkcancel, env, fake_server, save, share_target
from bulkcancel._models import SUCCESS_OUTCOMES, Outcome

LOCATIONS = ("us-central1", "us-east1", "europe-west1")
#: the fake's fault mix: its share of 429s (the rest of its faults are retried, not refused)
FAULT_MIX_429 = 0.08
BACKGROUND = 0.1
#: most seconds the quota alone lets a draw take: operations are cut to fit (a round stays short)
MOST_SECONDS = 20.0
#: seconds: a floor shorter than this is a run of a first wall and little more (slow start's
#: first round trip decides it: a known miss); printed, not held to issue 8's targets
SHORT = 2.0
TIMEOUT = 300.0


@dataclass(frozen=True)
class Draw:
    """One server and one run of the CLI against it."""

    personalities: tuple[str, ...]
    quota: float | None
    window: float | None
    parents: tuple[str, ...]
    operations: int  # per parent
    seed: int
    mix: int
    missing: int
    latency: float
    jitter: float
    cancel_delay: float
    unsupported: str | None  # a location whose cancels are refused (501 or an HTML 404)
    rate: float
    concurrency: int
    reconcile: str
    page_size: int | None
    source: str  # "file", "stdin" or "parent"
    shape: str | None = None  # the quota shape alone, for its 429 target

    def fake_args(self) -> list[str]:
        """The fake's flags (its parents and names file are the runner's)."""
        args = ["--seed", str(self.seed), "--mix", str(self.mix), "--missing", str(self.missing)]
        if self.personalities:
            args += ["--personality", ",".join(self.personalities)]
        if self.quota is not None:
            args += ["--quota", f"{self.quota:g}"]
        if self.window is not None:
            args += ["--window", f"{self.window:g}"]
        if self.latency:
            args += ["--latency", f"{self.latency:g}", "--latency-jitter", f"{self.jitter:g}"]
        if self.cancel_delay:
            args += ["--cancel-delay", f"{self.cancel_delay:g}"]
        if self.unsupported is not None:
            args += ["--location-mode", self.unsupported]
        return args

    def cli_args(self) -> list[str]:
        """The CLI's flags, but its source, endpoint and report."""
        args = ["--rate", f"{self.rate:g}", "--concurrency", str(self.concurrency)]
        args += ["--reconcile", self.reconcile]
        if self.page_size is not None:
            args += ["--page-size", str(self.page_size)]
        return args

    @property
    def noise(self) -> float:
        """The share of 429s the server answers at random (not a quota's)."""
        if "background-429" in self.personalities:
            return BACKGROUND
        return FAULT_MIX_429 if "fault-mix" in self.personalities else 0.0

    def label(self) -> str:
        """One line that says what was drawn."""
        bits = list(self.personalities) or ["no quota"]
        if self.quota is not None:
            bits.append(f"{self.quota:g}/s" + (f" w{self.window:g}" if self.window else ""))
        bits.append(f"{len(self.parents)}x{self.operations}")
        if self.latency:
            bits.append(f"{self.latency * 1000:g} ms")
        if self.jitter:
            bits.append(f"jitter {self.jitter:g}")
        if self.cancel_delay:
            bits.append(f"stops in {self.cancel_delay:g} s")
        if self.unsupported:
            bits.append(self.unsupported)
        bits += ["|", self.source, *self.cli_args()]
        return " ".join(bits)


def draw(rng: random.Random) -> Draw:
    """One server and one run, at random (every choice from ``rng``, so a seed repeats it)."""
    personalities: list[str] = []
    shape = rng.choice([None, "bucket-small", "bucket-minute", "fixed-window"])
    quota = window = None
    if shape is not None:
        quota = float(rng.choice([3, 5, 10, 20, 50, 100]))
        personalities += [shape, rng.choice(["regional-quota", "shared-quota"])]
        personalities.append(
            rng.choice(["429-errorinfo", "429-bare", "429-retryinfo", "403-rate-limit"])
        )
        if shape != "bucket-small":
            window = float(rng.choice([1, 2, 3, 5]))
        if rng.random() < 0.2:
            personalities.append("reads-apart")
    noise = rng.choice([None, None, "background-429", "fault-mix"])
    if noise is not None:
        personalities.append(noise)
    pages = rng.choice([None, None, "pages-50", "pages-100", "pages-1000", "pages-ignored"])
    if pages is not None:
        personalities.append(pages)
    count = rng.choice([1, 1, 2, 3])
    parents = tuple(dict.fromkeys(
        f"projects/p{rng.randint(0, 1)}/locations/{location}" for location in LOCATIONS[:count]
    ))  # fmt: skip
    operations = rng.choice([10, 40, 80, 150])
    rate = float(rng.choice([10, 50, 50, 200]))
    # Every operation is a cancel and a read or two: keep the quota's floor short.
    pace = min(quota or rate, rate)
    while operations > 10 and 2 * operations * len(parents) / pace > MOST_SECONDS:
        operations //= 2
    latency = jitter = 0.0
    if rng.random() < 0.3:
        latency = rng.choice([0.02, 0.05, 0.15])
        jitter = rng.choice([0.0, 0.5])
    cancel_delay = rng.choice([0.2, 1.0]) if rng.random() < 0.2 else 0.0
    unsupported = None
    if len(parents) > 1 and rng.random() < 0.3:
        unsupported = f"{LOCATIONS[1]}=" + rng.choice(["unsupported", "unrouted"])
    source = rng.choice(["file", "file", "parent", "stdin"])
    return Draw(
        personalities=tuple(personalities),
        quota=quota,
        window=window,
        parents=parents,
        operations=operations,
        seed=rng.randint(0, 99),
        mix=rng.randint(0, 99),
        # (names that do not exist are in a file or stdin, never in a listing)
        missing=0 if source == "parent" else rng.choice([0, 0, 3]),
        latency=latency,
        jitter=jitter,
        cancel_delay=cancel_delay,
        unsupported=unsupported,
        rate=rate,
        concurrency=rng.choice([4, 32, 32, 100]),
        reconcile=rng.choice(["get", "list", "auto", "auto"]),
        page_size=rng.choice([None, None, 0, 7, 100, 500]),
        source=source,
        shape=shape,
    )


def floor_seconds(one: Draw, stats: dict[str, Any]) -> float:
    """The least time any client could have taken (see the module docstring)."""
    accepted = int(stats["requests"]) - refused(one, stats)
    floor = accepted / (1.0 - one.noise) / one.rate
    if one.quota is not None:
        floor = max(floor, float(stats.get("quota_oracle_seconds") or 0.0))
    return max(floor, accepted * one.latency / one.concurrency, one.cancel_delay)


def refused(one: Draw, stats: dict[str, Any]) -> int:
    """Requests the server refused as throttled (429, and 403 where it says so)."""
    statuses = ("429", "403") if "403-rate-limit" in one.personalities else ("429",)
    return sum(int(stats["by_status"].get(status, 0)) for status in statuses)


def ratio(result: dict[str, Any]) -> float | None:
    """Drain over floor; None for a floor too short to divide by."""
    return result["drain"] / result["floor"] if result["floor"] > 0.05 else None


def held_to_targets(one: Draw, floor: float) -> bool:
    """Issue 8's targets are for quota personalities, over runs long enough to be more than
    their first wall (see the module docstring)."""
    return one.quota is not None and not one.noise and floor >= SHORT


def over_targets(one: Draw, floor: float, ratio: float, share: float) -> list[str]:
    """What a draw held to issue 8's targets missed of them."""
    if not held_to_targets(one, floor):
        return []
    misses = []
    if ratio > 1.2:
        misses.append("x")
    if share > share_target(one.shape):
        misses.append("429")
    return misses


def measure(one: Draw, work: Path) -> dict[str, Any]:
    """Run the CLI once against a fresh fake drawn as ``one``; what it checked and scored."""
    with fake_server(work, one.operations, mix=one.mix, parents=one.parents,
                     extra=one.fake_args()) as fake:  # fmt: skip
        report = work / "report.json"
        report.unlink(missing_ok=True)
        command = bulkcancel(
            "cancel", "--endpoint", fake.url, "--anonymous", "--yes", "--quiet",
            "--deadline", "60", "--report", str(report), *one.cli_args(),
        )  # fmt: skip
        stdin = None
        if one.source == "file":
            command += ["--names-file", str(fake.names_file)]
        elif one.source == "stdin":
            command += ["--names-file", "-"]
            stdin = fake.names_file.read_text()
        else:
            command += [arg for parent in one.parents for arg in ("--parent", parent)]
        try:
            done = subprocess.run(command, input=stdin, capture_output=True, text=True,
                                  env=env(), timeout=TIMEOUT, check=False)  # fmt: skip
            code: int | None = done.returncode
            stderr = done.stderr
        except subprocess.TimeoutExpired:
            code, stderr = None, ""
        stats = fake.stats(ceiling=one.rate)
        expected = fake.expected()
    if one.source == "parent":  # (a listing finds only what exists)
        expected = {n: o for n, o in expected.items() if o != "not_found"}
    got: dict[str, str] = {}
    if report.exists():
        got = {r["name"]: r["outcome"] for r in json.loads(report.read_text())["operations"]}
    wrong = sorted(n for n in expected.keys() | got.keys() if expected.get(n) != got.get(n))
    total = int(stats["requests"])
    floor = floor_seconds(one, stats)
    drain = float(stats["span_seconds"])
    return {
        "draw": asdict(one),
        "exit_code": code,
        "exit_code_wanted": 0 if {Outcome(o) for o in expected.values()} <= SUCCESS_OUTCOMES else 3,
        "wrong": len(wrong),
        "wrong_example": [(n, expected.get(n), got.get(n)) for n in wrong[:3]],
        "traceback": "Traceback" in stderr or "internal error" in stderr.lower(),
        "drain": drain,
        "floor": floor,
        "requests": total,
        "throttled_share": refused(one, stats) / total if total else 0.0,
    }


def verdicts(result: dict[str, Any], one: Draw) -> list[str]:
    """Everything a draw got wrong (a user's view) or missed (issue 8's targets)."""
    bad = []
    if result["wrong"]:
        bad.append(f"{result['wrong']} outcomes wrong")
    if result["exit_code"] != result["exit_code_wanted"]:
        bad.append(f"exit {result['exit_code']}, not {result['exit_code_wanted']}")
    if result["traceback"]:
        bad.append("a traceback")
    x, share = ratio(result) or 1.0, result["throttled_share"]
    bad += [f"over the {m} target" for m in over_targets(one, result["floor"], x, share)]
    return bad


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1, help="which servers are drawn")
    parser.add_argument("--quick", action="store_true", help="4 draws")
    args = parser.parse_args(argv)
    if args.quick:
        args.draws = 4
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    rng = random.Random(args.seed)
    draws = [draw(rng) for _ in range(args.draws)]
    print(f"{args.draws} servers drawn at random (seed {args.seed})")
    print(f"{'#':>3}  {'drain s':>7}  {'floor s':>7}  {'x floor':>7}  {'429 share':>9}  "
          f"{'verdict':<40}  server | run")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, one in enumerate(draws):
            result = measure(one, Path(tmp))
            bad = verdicts(result, one)
            results.append({**result, "verdicts": bad})
            x = ratio(result)
            print(f"{index:3d}  {result['drain']:7.2f}  {result['floor']:7.2f}  "
                  f"{f'{x:.2f}' if x else '-':>7}  {result['throttled_share']:9.1%}  "
                  f"{'; '.join(bad) or 'ok':<40}  {one.label()}", flush=True)  # fmt: skip
    held = [r for one, r in zip(draws, results, strict=True) if held_to_targets(one, r["floor"])]
    counts = {
        "draws": len(results),
        "outcomes wrong": sum(bool(r["wrong"]) for r in results),
        "exit code wrong": sum(r["exit_code"] != r["exit_code_wanted"] for r in results),
        "tracebacks": sum(r["traceback"] for r in results),
        "held to the targets": len(held),
        "... over 1.2x": sum("over the x target" in r["verdicts"] for r in held),
        "... over the 429 target": sum("over the 429 target" in r["verdicts"] for r in held),
    }
    print("; ".join(f"{k} {v}" for k, v in counts.items()))
    out = {"seed": args.seed, "counts": counts, "results": results}
    print(f"-> {save(f'random-servers-s{args.seed}-n{args.draws}', out)}")
    return out


if __name__ == "__main__":
    main()
