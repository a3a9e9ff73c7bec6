"""Calls: 10,000 operations under one parent, ``--reconcile get`` vs ``list``: requests per
operation, counted by the server."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks._common import bulkcancel, fake_server, run_timed, save, table


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--operations", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 operations")
    args = parser.parse_args(argv)
    if args.quick:
        args.operations = 1_000
    rows: list[list[object]] = []
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for mode in ("get", "list", "auto"):
            with fake_server(work, args.operations) as fake:
                seconds = run_timed(
                    bulkcancel(
                        "cancel",
                        "--names-file",
                        str(fake.names_file),
                        "--anonymous",
                        "--endpoint",
                        fake.url,
                        "--yes",
                        "--quiet",
                        "--rate",
                        "1000000",
                        "--concurrency",
                        "64",
                        "--reconcile",
                        mode,
                    )
                )
                stats = fake.stats()
            by_kind = stats["by_kind"]
            per_op = stats["requests"] / args.operations
            rows.append(
                [mode, stats["requests"], by_kind.get("cancel", 0), by_kind.get("get", 0),
                 by_kind.get("list", 0), round(per_op, 3), seconds]
            )  # fmt: skip
            results[mode] = {"requests": stats["requests"], "by_kind": by_kind,
                             "per_operation": per_op, "seconds": seconds}  # fmt: skip
    print(
        table(
            f"calls: {args.operations:,} operations under one parent, counted by the server",
            ["--reconcile", "requests", "cancel", "get", "list", "per op", "seconds"],
            rows,
        )
    )
    data = {"operations": args.operations, "results": results}
    print(f"-> {save('calls', data)}")
    return data


if __name__ == "__main__":
    main()
