"""Benchmarks: each prints a table and writes JSON; run them all with `make bench`."""
