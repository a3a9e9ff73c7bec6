"""Memory: N names through the engine with an in-memory transport; peak RSS of the process.

Each size runs in a fresh process (``python -m benchmarks.memory --child N``), which generates
the names lazily, runs them through ``BulkRun`` (resolve, then cancel + reconcile against
``MemoryOperations``), streams the report to a temporary file, and prints its peak RSS. The
child's garbage collector is tuned as the ``bulkcancel`` command tunes its own (``tune_gc``).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import anyio

from benchmarks._common import env, save, table


def names(count: int) -> Iterator[str]:
    for i in range(count):
        yield f"projects/p{i % 100}/locations/us-central1/operations/operation-{i:09d}"


async def child(count: int) -> dict[str, float]:
    from bulkcancel._auth import anonymous_source
    from bulkcancel._config import RunConfig
    from bulkcancel._report import ReportWriter
    from bulkcancel._run import BulkRun
    from bulkcancel.cli import tune_gc
    from bulkcancel.testing import MemoryOperations

    tune_gc()  # as the bulkcancel command does for its process
    mem = MemoryOperations(default="cancels")
    config = RunConfig(
        endpoint="http://memory.invalid", anonymous=True, rate=1e9, concurrency=64,
        poll_initial=0.001, seed=0,
    )  # fmt: skip
    writer = ReportWriter()
    started = time.perf_counter()
    async with BulkRun(config, transport=mem.transport, tokens=anonymous_source()) as run:
        resolved = await run.resolve(names(count))
        resolved_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        async def emit(result: object) -> None:
            writer.add(result)  # type: ignore[arg-type]

        await run.execute(emit)
        with tempfile.TemporaryFile("w") as out:
            writer.dump(out, run.meta())
    assert writer.count == resolved == count, (writer.count, resolved)
    assert writer.totals["cancelled"] == count
    return {
        "names": count,
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_resolve_mb": resolved_rss,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="10,000 and 100,000 names")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        random.seed(0)
        print(json.dumps(anyio.run(child, args.child)))
        return {}
    if args.quick:
        args.sizes = [10_000, 100_000]
    baseline = subprocess.run(
        [sys.executable, "-c", "import resource, bulkcancel._run, bulkcancel.testing; "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
        capture_output=True, text=True, env=env(), check=True,
    )  # fmt: skip
    base_mb = float(baseline.stdout)
    rows: list[list[object]] = [["(imports only)", 0, "-", base_mb, "-"]]
    results: list[dict[str, float]] = []
    for size in args.sizes:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--child", str(size)],
            capture_output=True, text=True, env=env(), check=True,
        )  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        per_million = (result["peak_rss_mb"] - base_mb) / size * 1_000_000
        rows.append(
            [f"{size:,} names", size, result["seconds"], result["peak_rss_mb"], per_million]
        )
    print(
        table(
            "memory: names through the engine (in-memory transport), peak RSS per process",
            ["run", "names", "seconds", "peak RSS MB", "MB per 1M names above imports"],
            rows,
        )
    )
    data = {"baseline_mb": base_mb, "results": results}
    print(f"-> {save('memory', data)}")
    return data


if __name__ == "__main__":
    main()
