"""Quota and fault matrix: how each client drains a run against servers that say no differently.

Every scenario is a fresh ``bulkcancel fake-server`` process with named personalities (see
``bulkcancel fake-server --help``); every client meets the same server, alternating within each
round; figures are medians over rounds. Clients: bulkcancel (the CLI, told ``--rate TOLD``),
google-api-core's REST operations client (cancel + get, its default retry: 503 only, and
under it google-auth's async session: a 429, 500, 503 or 504 tried three times in all), and a
naive client (the same rate ceiling, a fixed 1 s cool-down for everyone after any 429).

Columns: ``drain s`` is the server's view (first to last request); ``floor s`` the least time
the server's limit allows for what it accepted (quota scenarios: the server's quota oracle, a
client told TOLD/s that knows the quota and never draws a 429, sending from the first request
what the server admitted, waiting for each token or each window to turn (see
``Quota.oracle_seconds``), but never less than accepted requests / TOLD; others: accepted
requests / TOLD, or accepted / (1 - share) / TOLD where a share of 429s falls at random: the
requests any client must send, the issue's "requests / --rate"; with ``--latency``, never less
than those requests x latency / 32, what 32 requests in flight allow); ``x floor``
their ratio; ``429 share`` the share of requests refused as throttled; ``exact`` whether every
outcome was the one the fake scripted (rounds exact / rounds). In the two-region row the drain
and floor are the free region's only. Every client reads the names from a file, but in the
"parent listed" row bulkcancel lists the parent (``--parent``, the runbook's way) and its
listing's requests count in the drain and the floor. Nothing is tuned to these results:
``--quota``, ``--told``, ``--window``, ``--latency`` (the fake waits that long before each
answer, as a distant server does), ``--jitter`` (that wait varies as over a network, half of
it before the request reaches the quota: the fake's ``--latency-jitter``) and
``--background`` (the background row's share of 429s) run the same matrix against other
server personalities.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import bulkcancel, env, fake_server, median, save, table

QUOTA = 50.0
TOLD = 200.0
WINDOW = 6.0
CONCURRENCY = 32
TIMEOUT = 240.0
CENTRAL = "projects/bench/locations/us-central1"
EAST = "projects/bench/locations/us-east1"
WEST = "projects/bench/locations/europe-west1"
CLIENTS = ("bulkcancel", "google-api-core", "naive 1s cool-down")


@dataclass(frozen=True)
class Scenario:
    label: str
    extra: tuple[str, ...]
    parents: tuple[str, ...] = (CENTRAL,)
    quota_floor: bool = True  # else: accepted requests / TOLD
    throttle_status: int = 429
    free_region: str | None = None  # the row is about this region only
    missing: int = 0
    #: a share of 429s at random: any client must send accepted / (1 - share) requests
    background: float = 0.0
    #: more flags for bulkcancel alone (the peers read each operation back with a GET anyway)
    bulkcancel_args: tuple[str, ...] = ()
    #: bulkcancel lists the parents (``--parent``, the runbook's way) instead of reading the
    #: names file; the peers, which do not list, read the names as in every other row
    listed: bool = False


def scenarios(
    operations: int,
    quota: float = QUOTA,
    window: float = WINDOW,
    background: float = 0.1,
    told: float = TOLD,
) -> list[Scenario]:
    q = ["--quota", f"{quota:g}"]
    w = ["--window", f"{window:g}"]
    # The throttled region of the two-region row: throttled hard, at a tenth of the quota or of
    # the clients' --rate, whichever is less. (At a tenth of a quota of 300/s beside --rate 50,
    # 30/s, it was never throttled: the two regions split the 50/s, and the row measured that
    # split, 1.79x the free region's time alone, not what one region's 429s do to another.)
    slow = f"{max(min(quota, told) / 10, 0.5):g}"
    return [
        Scenario("bucket-small", ("--personality", "bucket-small", *q)),
        # Windows are scaled down from Google's 60 s so a round stays short, but kept well above
        # the pacer's own time constants (probes at most 2 s apart): a 2 s "minute" would
        # measure the probe granularity, not how a client copes with a window.
        Scenario(f"bucket-minute, {window:g} s", ("--personality", "bucket-minute", *w, *q)),
        Scenario(f"fixed-window, {window:g} s", ("--personality", "fixed-window", *w, *q)),
        # A rolling window: the budget comes back as the requests that spent it age out, so
        # its turns follow the client's own sends, not an aligned clock.
        Scenario(f"sliding-window, {window:g} s", ("--personality", "sliding-window", *w, *q)),
        Scenario(
            f"sliding-window, {window:g} s, 429-bare",
            ("--personality", "sliding-window,429-bare", *w, *q),
        ),
        Scenario(
            "shared-quota, 2 regions", ("--personality", "bucket-small,shared-quota", *q),
            (CENTRAL, EAST),
        ),
        # The same quota with nothing in the 429s to say it is shared: learned from the walls.
        Scenario(
            "shared-quota, 2 regions, 429-bare",
            ("--personality", "bucket-small,shared-quota,429-bare", *q),
            (CENTRAL, EAST),
        ),
        Scenario("429-bare", ("--personality", "bucket-small,429-bare", *q)),
        # The same, the parent listed first: the listing's pages go one a round trip on the
        # key the cancels then use (behind 0.15 s answers, a cut that counted the time between
        # the pages as sending held a bucket of 30/s to 7/s: 1.8x the floor).
        Scenario("429-bare, parent listed", ("--personality", "bucket-small,429-bare", *q),
                 listed=True),
        # Separate regional quotas with nothing in the 429s to say so: walls in step (the
        # regions look alike) must not merge them into one region's quota.
        Scenario(
            "3 regions, own quotas, 429-bare",
            ("--personality", "bucket-small,429-bare", *q), (CENTRAL, EAST, WEST),
        ),
        Scenario("429-retryinfo", ("--personality", "bucket-small,429-retryinfo", *q)),
        Scenario(
            "403-rate-limit", ("--personality", "bucket-small,403-rate-limit", *q),
            throttle_status=403,
        ),
        Scenario(
            f"2 regions, us-east1 at {slow}/s: free region",
            ("--personality", "bucket-small", "--location-quota", f"us-east1={slow}"),
            (CENTRAL, EAST), quota_floor=False, free_region=CENTRAL,
        ),
        Scenario(
            f"background {background:.0%} 429, no quota",
            ("--personality", "background-429", "--background-share", f"{background:g}"),
            quota_floor=False, background=background,
        ),
        Scenario(
            "mixed names, no faults", ("--location-mode", "us-east1=unsupported"),
            (CENTRAL, EAST), quota_floor=False, missing=max(1, operations // 10),
        ),
        Scenario(
            "fault mix (8% 429, 5% 503, 2% 502, 2% reset)",
            ("--personality", "fault-mix", "--location-mode", "us-east1=unsupported"),
            (CENTRAL, EAST), quota_floor=False, missing=max(1, operations // 10),
        ),
        # Page caps: the reconciler's listings are requests under the same quota and faults.
        Scenario(
            "bucket-small, list pages of 50",
            ("--personality", "bucket-small,pages-50", *q),
        ),
        # Cloud Batch's shape: cancels and reads metered apart (reads at 2.5x), each 429 naming
        # its own quota; bulkcancel reads every operation back by GET, as the peers do.
        Scenario(
            "reads metered apart, read back by GET",
            ("--personality", "bucket-small,reads-apart", *q),
            bulkcancel_args=("--reconcile", "get"),
        ),
        # ... and with bare 429s: nothing names the two quotas, only who is refused tells.
        Scenario(
            "reads metered apart, 429-bare, by GET",
            ("--personality", "bucket-small,reads-apart,429-bare", *q),
            bulkcancel_args=("--reconcile", "get"),
        ),
        Scenario(
            "pageSize ignored, with the fault mix",
            ("--personality", "fault-mix,pages-ignored", "--location-mode", "us-east1=unsupported"),
            (CENTRAL, EAST), quota_floor=False, missing=max(1, operations // 10),
        ),
    ]  # fmt: skip


@dataclass
class Cell:
    drain: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    throttled: list[float] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_client(
    client: str,
    url: str,
    names: Path,
    work: Path,
    told: float = TOLD,
    bulkcancel_args: tuple[str, ...] = (),
    parents: tuple[str, ...] = (),
) -> dict[str, str]:
    """Run one client to the end; its outcome per name ({} if it gave none). ``parents``:
    bulkcancel lists these instead of reading ``names``."""
    outcomes = work / "outcomes.json"
    outcomes.unlink(missing_ok=True)
    if client == "bulkcancel":
        report = work / "report.json"
        source = [arg for parent in parents for arg in ("--parent", parent)]
        command = bulkcancel(
            "cancel", *(source or ["--names-file", str(names)]), "--anonymous",
            "--endpoint", url, "--yes",
            "--quiet", "--rate", f"{told:g}", "--concurrency", str(CONCURRENCY),
            "--deadline", "60", "--report", str(report), *bulkcancel_args,
        )  # fmt: skip
    elif client == "google-api-core":
        command = [sys.executable, "-m", "benchmarks.peer_apicore", url, str(names),
                   str(CONCURRENCY), str(outcomes)]  # fmt: skip
    else:
        command = [sys.executable, "-m", "benchmarks.peer_naive", url, str(names),
                   str(CONCURRENCY), f"{told:g}", str(outcomes)]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env(),
                              timeout=TIMEOUT, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {}  # (every outcome counts as wrong: the client did not finish in time)
    written = report if client == "bulkcancel" else outcomes
    if not written.exists():
        # A client that crashed measured nothing: stop, rather than print it as a client
        # that got every outcome wrong (a missing peer library did exactly that once).
        raise RuntimeError(f"{client} exited {done.returncode} with no outcomes:\n"
                           f"{done.stderr[-2000:]}")  # fmt: skip
    if client == "bulkcancel":
        data = json.loads(report.read_text())
        return {r["name"]: r["outcome"] for r in data["operations"]}
    return dict(json.loads(outcomes.read_text()))


def floor_seconds(
    scenario: Scenario, stats: dict[str, Any], told: float, latency: float = 0.0
) -> float:
    """The least time any client told ``told``/s could have taken (see the module docstring),
    from the fake's ``stats``."""
    total = int(stats["requests"])
    accepted = total - int(stats["by_status"].get(str(scenario.throttle_status), 0))
    if scenario.free_region is not None:
        region = stats["by_location"].get(scenario.free_region, {})
        accepted = int(region.get("requests", 0)) - int(region.get("throttled", 0))
        floor = accepted / told
    elif scenario.quota_floor:
        # No client told TOLD/s can beat its own ceiling, whatever burst the quota allows.
        floor = max(float(stats["quota_oracle_seconds"] or 0.0), accepted / told)
    else:
        accepted = round(accepted / (1.0 - scenario.background))  # (what any client must send)
        floor = accepted / told
    # Nor can a client with CONCURRENCY requests in flight send faster than they are answered.
    return max(floor, accepted * latency / CONCURRENCY)


def measure(
    scenario: Scenario,
    client: str,
    operations: int,
    work: Path,
    seed: int,
    told: float = TOLD,
    latency: float = 0.0,
    jitter: float = 0.0,
) -> dict[str, Any]:
    extra = [*scenario.extra, "--seed", str(seed), "--missing", str(scenario.missing)]
    if latency:
        extra += ["--latency", f"{latency:g}"]
    if jitter:
        extra += ["--latency-jitter", f"{jitter:g}"]
    with fake_server(work, operations, mix=seed, parents=scenario.parents, extra=extra) as fake:
        listed = scenario.parents if scenario.listed else ()
        got = run_client(client, fake.url, fake.names_file, work, told,
                         scenario.bulkcancel_args, listed)  # fmt: skip
        stats = fake.stats(ceiling=told)
        expected = fake.expected()
    total = int(stats["requests"])
    throttled = int(stats["by_status"].get(str(scenario.throttle_status), 0))
    drain = float(stats["span_seconds"])
    if scenario.free_region is not None:
        region = stats["by_location"].get(scenario.free_region, {})
        drain = float(region.get("last", 0.0)) - float(region.get("first", 0.0))
    return {
        "drain": drain,
        "floor": floor_seconds(scenario, stats, told, latency),
        "requests": total,
        "throttled_share": throttled / total if total else 0.0,
        "exact": got == expected,
        "wrong": sum(got.get(name) != want for name, want in expected.items()),
    }


def _have_apicore() -> bool:
    """The google-api-core peer's libraries (the ``bench`` extra) are installed."""
    try:
        return all(importlib.util.find_spec(m) is not None
                   for m in ("google.api_core", "google.cloud.deploy_v1"))  # fmt: skip
    except ModuleNotFoundError:  # (a parent package missing)
        return False


def make_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    # 300 per parent: a floor of several seconds at the quota, so a run is not all start-up
    parser.add_argument("--operations", type=int, default=300, help="per parent")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="60 operations, 1 round")
    parser.add_argument("--only", help="run only scenarios whose label contains this")
    parser.add_argument("--skip-apicore", action="store_true")
    parser.add_argument(
        "--clients", nargs="+", choices=CLIENTS, help="measure only these (default: all three)"
    )
    # Other server personalities than the default one: the matrix must hold for all of them.
    parser.add_argument("--quota", type=float, default=QUOTA, help="requests/s per quota")
    parser.add_argument("--told", type=float, default=TOLD, help="the clients' --rate")
    parser.add_argument("--window", type=float, default=WINDOW, help="quota window, seconds")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds the fake waits before each answer"
    )
    parser.add_argument(
        "--jitter", type=float, default=0.0,
        help="vary --latency as a network does (the fake's --latency-jitter: a log-normal sigma)",
    )  # fmt: skip
    parser.add_argument(
        "--background", type=float, default=0.1, help="share of 429s at random, background row"
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.latency < 0 or args.jitter < 0:
        parser.error("--latency and --jitter cannot be negative")
    if args.jitter and not args.latency:
        parser.error("--jitter varies --latency: give a --latency too")
    clients = [c for c in args.clients or CLIENTS
               if not (args.skip_apicore and c == "google-api-core")]  # fmt: skip
    if "google-api-core" in clients and not _have_apicore():
        parser.error(
            "google-api-core is not installed: run `make bench` (or pip install -e '.[bench]'), "
            "or pass --skip-apicore"
        )
    if args.quick:
        args.operations, args.rounds = 60, 1
    every = scenarios(args.operations, args.quota, args.window, args.background, args.told)
    chosen = [s for s in every if not args.only or args.only in s.label]
    cells: dict[tuple[str, str], Cell] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for round_index in range(args.rounds):
            for scenario in chosen:
                # Alternate the order of clients between rounds, so neither always goes first.
                order = clients if round_index % 2 == 0 else clients[::-1]
                for client in order:
                    result = measure(
                        scenario,
                        client,
                        args.operations,
                        work,
                        round_index + 1,
                        args.told,
                        args.latency,
                        args.jitter,
                    )
                    cell = cells.setdefault((scenario.label, client), Cell())
                    cell.drain.append(result["drain"])
                    cell.floor.append(result["floor"])
                    cell.requests.append(result["requests"])
                    cell.throttled.append(result["throttled_share"])
                    cell.exact.append(result["exact"])
                    if not result["exact"]:
                        cell.notes.append(f"{result['wrong']} wrong")
    rows: list[list[object]] = []
    results: dict[str, object] = {}
    for scenario in chosen:
        for client in clients:
            cell = cells[(scenario.label, client)]
            drain, floor = median(cell.drain), median(cell.floor)
            ratio = f"{drain / floor:.2f}" if floor > 0.05 else "-"
            exact = f"{sum(cell.exact)}/{len(cell.exact)}"
            rows.append([scenario.label, client, drain, floor, ratio,
                         int(median(cell.requests)), f"{median(cell.throttled):.1%}",
                         exact + (f" ({cell.notes[0]})" if cell.notes else "")])  # fmt: skip
            results[f"{scenario.label} | {client}"] = {
                "drain": cell.drain, "floor": cell.floor, "requests": cell.requests,
                "throttled_share": cell.throttled, "exact": cell.exact,
            }  # fmt: skip
    print(
        table(
            f"quota matrix: {args.operations} operations per parent, quota {args.quota:g}/s "
            f"where there is one, clients told {args.told:g}/s, {CONCURRENCY} in flight, "
            + (f"{args.latency * 1000:g} ms per answer, " if args.latency else "")
            + (f"jitter {args.jitter:g}, " if args.jitter else "")
            + f"median of {args.rounds} round(s)",
            ["scenario", "client", "drain s", "floor s", "x floor", "requests", "429 share",
             "exact"],
            rows,
        )
    )  # fmt: skip
    calm = next((s.label for s in chosen if s.label.startswith("mixed names")), None)
    mix = next((s.label for s in chosen if s.label.startswith("fault mix")), None)
    if calm and mix:  # issue 8: the fault mix drains within 1.5x of the same run fault-free
        for client in clients:
            fault_free = median(cells[(calm, client)].drain)
            slower = median(cells[(mix, client)].drain) / fault_free if fault_free else math.nan
            print(f"fault mix vs the same names fault-free, {client}: {slower:.2f}x")
    out = {"operations": args.operations, "rounds": args.rounds, "quota": args.quota,
           "told": args.told, "window": args.window, "latency": args.latency,
           "jitter": args.jitter, "clients": clients, "only": args.only,
           "results": results}  # fmt: skip
    print(f"-> {save(result_name(args, clients), out)}")
    return out


def result_name(args: argparse.Namespace, clients: list[str]) -> str:
    """The results file's name: the personality's, and a partial run's (some clients, some
    scenarios) its own, so it never overwrites the full matrix's."""
    default = (args.quota, args.told, args.window, args.latency) == (QUOTA, TOLD, WINDOW, 0.0)
    name = "quota" if default else f"quota-q{args.quota:g}-t{args.told:g}-w{args.window:g}"
    if args.latency:
        name += f"-l{args.latency * 1000:g}ms"
        if args.jitter:
            name += f"-j{args.jitter:g}"
    if set(clients) != set(CLIENTS):
        name += "-" + "-".join(clients)
    if args.only:
        name += "-only-" + args.only
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


if __name__ == "__main__":
    main()
