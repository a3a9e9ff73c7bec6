"""Quota: the fake allows 40 requests/s and answers 429 past it; the client is told 200/s.

300 operations of mixed behaviours. For each client: drain time against the floor (the
requests the server accepted ÷ the quota), the share of requests answered 429, failures, and
(for bulkcancel) whether every outcome is exactly what the fake scripted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import bulkcancel, env, fake_server, save, table

QUOTA = 40.0
TOLD = 200.0


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--operations", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="100 operations")
    parser.add_argument("--skip-apicore", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.operations = 100
    rows: list[list[object]] = []
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with fake_server(work, args.operations, quota=QUOTA, mix=1) as fake:
            report = work / "report.json"
            command = bulkcancel(
                "cancel", "--names-file", str(fake.names_file), "--anonymous",
                "--endpoint", fake.url, "--yes", "--quiet", "--rate", str(TOLD),
                "--concurrency", "32", "--deadline", "60", "--report", str(report),
            )  # fmt: skip
            fake.stats(clear=True)
            import subprocess

            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env(), check=False)
            elapsed = time.perf_counter() - started
            stats = fake.stats(clear=True)
            data = json.loads(report.read_text())
            got = {r["name"]: r["outcome"] for r in data["operations"]}
            exact = got == fake.expected()
            results["bulkcancel"] = _row(stats, elapsed, exact, done.returncode, rows, "bulkcancel")
            if not args.skip_apicore:
                started = time.perf_counter()
                peer = subprocess.run(
                    [sys.executable, "-m", "benchmarks.peer_apicore", fake.url,
                     str(fake.names_file), "32"],
                    capture_output=True, text=True, env=env(), check=False,
                )  # fmt: skip
                elapsed = time.perf_counter() - started
                stats = fake.stats(clear=True)
                counts = json.loads(peer.stdout) if peer.stdout.strip() else {}
                results["google-api-core"] = _row(
                    stats, elapsed, None, peer.returncode, rows, "google-api-core", counts
                )
    print(
        table(
            f"quota: {args.operations} mixed operations, server quota {QUOTA:g}/s "
            f"(429 past it), client told {TOLD:g}/s",
            ["client", "seconds", "floor s", "x floor", "requests", "429 share", "failed",
             "exact"],
            rows,
        )
    )  # fmt: skip
    out = {"operations": args.operations, "quota": QUOTA, "told": TOLD, "results": results}
    print(f"-> {save('quota', out)}")
    return out


def _row(
    stats: dict[str, object],
    elapsed: float,
    exact: bool | None,
    code: int,
    rows: list[list[object]],
    label: str,
    counts: dict[str, object] | None = None,
) -> dict[str, object]:
    by_status = stats["by_status"]
    assert isinstance(by_status, dict)
    total = int(str(stats["requests"]))
    throttled = int(by_status.get("429", 0))
    accepted = total - throttled
    floor = accepted / QUOTA
    failed = counts.get("failed", "?") if counts is not None else "see report"
    rows.append(
        [label, elapsed, floor, elapsed / floor, total, f"{throttled / total:.1%}", failed,
         "-" if exact is None else ("yes" if exact else "NO")]
    )  # fmt: skip
    return {
        "seconds": elapsed,
        "floor_seconds": floor,
        "ratio_to_floor": elapsed / floor,
        "requests": total,
        "throttled": throttled,
        "throttled_share": throttled / total,
        "exit_code": code,
        "outcomes_exact": exact,
        "peer_counts": counts,
    }


if __name__ == "__main__":
    main()
