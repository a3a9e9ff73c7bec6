"""Throughput: 10,000 operations that cancel at once, 64 in flight, rate out of the way.

Whole-process wall time of (a) ``bulkcancel cancel`` as users run it (default ``auto``
reconciliation) and with ``--reconcile get`` (cancel + GET per operation, as the peers do),
(b) a bare aiohttp loop, the floor, (c) google-api-core's AsyncOperationsRestClient.

The fake server runs in its own process, a fresh one per measurement, and serves list pages of
a fixed size whatever ``pageSize`` asks (servers may cap pages, AIP-158; some ignore
``pageSize``): 50, 100 and 1000. Rounds alternate between the clients; medians and ratios.
bulkcancel is byte-compiled first, as installing it would (see ``compile_package``). Each
client's own CPU time is reported too (user + system of its process): on a shared machine it
moves far less than wall time, and the floor is CPU-bound in its process.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import math
import resource
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks._common import PARENT, Fake, bulkcancel, median, run_timed, save, serving, table

CONCURRENCY = 64
PAGE_CAPS = (50, 100, 1000)
HEADER = ["page", "client", "seconds", "ops/s", "req/op", "x floor speed", "x api-core speed"]
HEADER += ["client cpu s", "x floor cpu"]


def clients(url: str, names: Path, report: Path) -> dict[str, list[str]]:
    common = ["--names-file", str(names), "--anonymous", "--endpoint", url, "--yes", "--quiet"]
    common += ["--rate", "1000000", "--concurrency", str(CONCURRENCY), "--report", str(report)]
    return {
        "bulkcancel": bulkcancel("cancel", *common),
        "bulkcancel --reconcile get": bulkcancel("cancel", *common, "--reconcile", "get"),
        "bare aiohttp (floor)": [
            sys.executable, "-m", "benchmarks.peer_bare", url, str(names), str(CONCURRENCY)
        ],
        "google-api-core": [
            sys.executable, "-m", "benchmarks.peer_apicore", url, str(names), str(CONCURRENCY)
        ],
    }  # fmt: skip


def compile_package() -> None:
    """Byte-compile bulkcancel as ``pip install`` does for a user. A checkout run with
    ``PYTHONDONTWRITEBYTECODE`` set (or from a read-only tree) would otherwise compile every
    module at every start, which no installed bulkcancel pays and the peers' installed
    libraries never do."""
    spec = importlib.util.find_spec("bulkcancel")
    for location in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(location, quiet=1)


def serve(operations: int, page: int, names_out: str) -> None:
    """The child: the fake server with fixed-size list pages, until terminated."""
    import anyio

    from bulkcancel.testing import FakeOperationsServer, populate, serve_forever

    # Every page holds `page` operations whatever pageSize asks: the server caps pages.
    server = FakeOperationsServer(default_page_size=page, max_page_size=page)
    server.ignore_page_size = True
    names = populate(server, PARENT, operations)
    Path(names_out).write_text("\n".join(names) + "\n")

    def ready(url: str) -> None:
        print(url, flush=True)

    anyio.run(lambda: serve_forever(server, on_ready=ready))


@contextmanager
def fake_server(work: Path, operations: int, page: int) -> Iterator[Fake]:
    names = work / "names.txt"
    args = [sys.executable, "-m", "benchmarks.throughput", "--serve", str(page)]
    args += ["--operations", str(operations), "--names-out", str(names)]
    with serving(args) as (url, process):
        yield Fake(url, names, None, process)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--operations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pages", type=int, nargs="+", default=list(PAGE_CAPS))
    parser.add_argument("--quick", action="store_true", help="1,000 operations, 1 round")
    parser.add_argument(
        "--only", nargs="+", help="measure only clients whose label starts with one of these"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--names-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.operations, args.serve, args.names_out)
        return {}
    if args.quick:
        args.operations, args.rounds = 1_000, 1
    compile_package()
    labels = list(clients("", Path(), Path()))
    if args.only:
        labels = [label for label in labels if label.startswith(tuple(args.only))]
    times: dict[tuple[int, str], list[float]] = {}
    cpu: dict[tuple[int, str], list[float]] = {}
    requests: dict[tuple[int, str], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(args.rounds):
            for page in args.pages:
                for label in labels:
                    with fake_server(work, args.operations, page) as fake:
                        command = clients(fake.url, fake.names_file, work / "report.json")[label]
                        before = _children_cpu()
                        times.setdefault((page, label), []).append(run_timed(command))
                        cpu.setdefault((page, label), []).append(_children_cpu() - before)
                        stats = fake.stats()
                        requests[(page, label)] = int(stats["requests"])
                        if stats["by_status"].get("200") != stats["requests"]:
                            raise RuntimeError(f"{label}: not every request succeeded: {stats}")
    rows = []
    results: dict[str, object] = {}
    for page in args.pages:
        floor = median(times.get((page, "bare aiohttp (floor)"), [math.nan]))
        apicore = median(times.get((page, "google-api-core"), [math.nan]))
        floor_cpu = median(cpu.get((page, "bare aiohttp (floor)"), [math.nan]))
        for label in labels:
            values = times[(page, label)]
            med = median(values)
            per_op = requests[(page, label)] / args.operations
            med_cpu = median(cpu[(page, label)])
            speeds = [args.operations / med, per_op, floor / med, apicore / med]
            rows.append([page, label, med, *speeds, med_cpu, floor_cpu / med_cpu])
            results[f"{page}/{label}"] = {
                "page": page, "seconds": values, "median": med,
                "ops_per_s": args.operations / med, "requests_per_op": per_op,
                "x_floor": floor / med, "x_apicore": apicore / med,
                "cpu_seconds": cpu[(page, label)], "x_floor_cpu": floor_cpu / med_cpu,
            }  # fmt: skip
    print(
        table(
            f"throughput: {args.operations:,} operations, {CONCURRENCY} in flight, list pages "
            f"of a fixed size, median of {args.rounds} alternating round(s), whole-process time",
            HEADER,
            rows,
        )
    )
    data = {"operations": args.operations, "rounds": args.rounds, "results": results}
    print(f"-> {save('throughput', data)}")
    return data


def _children_cpu() -> float:
    """CPU seconds of the finished child processes so far. Around one client's run this is
    that client's own CPU (the fake server is still running, so not yet counted): a figure a
    busy shared machine disturbs far less than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
