"""Run every benchmark in one go (``make bench``); ``--quick`` for a smoke run."""

from __future__ import annotations

import sys

from benchmarks import calls, memory, quota, throughput


def main() -> None:
    quick = ["--quick"] if "--quick" in sys.argv[1:] else []
    for module in (throughput, quota, calls, memory):
        module.main(quick)
        print()


if __name__ == "__main__":
    main()
