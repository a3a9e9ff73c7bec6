"""Run every benchmark in one go (``make bench``); ``--quick`` for a smoke run. Forty servers
drawn at random (``benchmarks.random_servers``, seed 1) follow the quota matrix; the pacing
sweep on virtual time (``benchmarks.sweep``) closes the run with its ``short`` set: seconds,
and the same figures on any machine. (``benchmarks.shapes`` runs on its own.)"""

from __future__ import annotations

import sys

from benchmarks import calls, memory, quota, random_servers, sweep, throughput


def main() -> None:
    quick = ["--quick"] if "--quick" in sys.argv[1:] else []
    for module in (throughput, quota, random_servers, calls, memory):
        module.main(quick)
        print()
    print("pacing sweep, short set (benchmarks.sweep short):")
    sweep.main(["short"])


if __name__ == "__main__":
    main()
