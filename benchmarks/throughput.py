"""Throughput: 10,000 operations that cancel at once, 64 in flight, rate out of the way.

Whole-process wall time of (a) ``bulkcancel cancel`` (cancel + GET per operation, as the peers
do; and, for reference, its default ``auto`` reconciliation), (b) a bare aiohttp loop, the
floor, (c) google-api-core's AsyncOperationsRestClient. The fake server runs in its own process,
a fresh one per measurement; rounds alternate between the clients. Medians and ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks._common import bulkcancel, fake_server, median, run_timed, save, table

CONCURRENCY = 64


def clients(url: str, names: Path, report: Path) -> dict[str, list[str]]:
    common = ["--names-file", str(names), "--anonymous", "--endpoint", url, "--yes", "--quiet"]
    common += ["--rate", "1000000", "--concurrency", str(CONCURRENCY), "--report", str(report)]
    return {
        "bulkcancel (cancel+get)": bulkcancel("cancel", *common, "--reconcile", "get"),
        "bulkcancel (auto: list)": bulkcancel("cancel", *common),
        "bare aiohttp (floor)": [
            sys.executable, "-m", "benchmarks.peer_bare", url, str(names), str(CONCURRENCY)
        ],
        "google-api-core": [
            sys.executable, "-m", "benchmarks.peer_apicore", url, str(names), str(CONCURRENCY)
        ],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--operations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 operations, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.operations, args.rounds = 1_000, 1
    times: dict[str, list[float]] = {}
    requests: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(args.rounds):
            for label in clients("", work, work):
                with fake_server(work, args.operations) as fake:
                    command = clients(fake.url, fake.names_file, work / "report.json")[label]
                    times.setdefault(label, []).append(run_timed(command))
                    stats = fake.stats()
                    requests[label] = int(stats["requests"])
                    if stats["by_status"].get("200") != stats["requests"]:
                        raise RuntimeError(f"{label}: not every request succeeded: {stats}")
    floor = median(times["bare aiohttp (floor)"])
    apicore = median(times["google-api-core"])
    rows = []
    results: dict[str, object] = {}
    for label, values in times.items():
        med = median(values)
        rows.append(
            [
                label,
                med,
                args.operations / med,
                requests[label] / args.operations,
                floor / med,
                apicore / med,
            ]
        )
        results[label] = {"seconds": values, "median": med, "ops_per_s": args.operations / med,
                          "requests_per_op": requests[label] / args.operations}  # fmt: skip
    print(
        table(
            f"throughput: {args.operations:,} operations, {CONCURRENCY} in flight, "
            f"median of {args.rounds} round(s), whole-process wall time",
            ["client", "seconds", "ops/s", "req/op", "x floor speed", "x api-core speed"],
            rows,
        )
    )
    data = {"operations": args.operations, "rounds": args.rounds, "results": results}
    print(f"-> {save('throughput', data)}")
    return data


if __name__ == "__main__":
    main()
