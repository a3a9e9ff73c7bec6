"""The CLI runs on uvloop where it is installed, on asyncio's loop otherwise; either way a run
paces and reconciles by a clock fine enough for thousands of requests a second."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import subprocess
import sys
import time
from typing import Any

import anyio
import pytest

from bulkcancel._auth import anonymous_source
from bulkcancel._config import RunConfig
from bulkcancel._engine import ReconcileMode
from bulkcancel._models import OperationResult
from bulkcancel._run import BulkRun, run_clock
from bulkcancel.cli import GC_YOUNG_THRESHOLD, loop_options, tune_gc
from bulkcancel.testing import MemoryOperations


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    found = importlib.util.find_spec

    def without_uvloop(name: str, *args: Any) -> Any:
        return None if name == "uvloop" else found(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_uvloop)
    assert loop_options() == {}
    monkeypatch.setattr(importlib.util, "find_spec", found)
    if found("uvloop") is not None:
        assert loop_options() == {"use_uvloop": True}


def test_asyncio_runs_read_the_loops_clock() -> None:
    async def main() -> None:
        assert run_clock() == asyncio.get_running_loop().time  # a virtual loop moves it

    anyio.run(main)


def test_uvloop_runs_read_a_fine_clock() -> None:
    pytest.importorskip("uvloop")

    async def main() -> None:
        assert run_clock() is time.monotonic  # not libuv's millisecond, per-iteration clock

    anyio.run(main, backend_options={"use_uvloop": True})


def test_a_run_on_uvloop_settles_everything_at_two_requests_each() -> None:
    pytest.importorskip("uvloop")
    names = [f"projects/p/locations/l/operations/op-{i}" for i in range(300)]
    mem = MemoryOperations(default="cancels")
    config = RunConfig(
        endpoint="http://memory.invalid",
        anonymous=True,
        rate=1e6,
        concurrency=16,
        poll_initial=0.01,
        reconcile=ReconcileMode.GET,
    )
    results: list[OperationResult] = []

    async def main() -> None:
        async with BulkRun(config, transport=mem.transport, tokens=anonymous_source()) as run:
            await run.resolve(names)

            async def emit(result: OperationResult) -> None:
                results.append(result)

            await run.execute(emit)

    anyio.run(main, backend_options={"use_uvloop": True})
    assert sorted(r.name for r in results) == sorted(names)
    assert {r.outcome.value for r in results} == {"cancelled"}
    assert sum(mem.calls.values()) == 2 * len(names)


def test_the_command_collects_garbage_less_often_and_never_walks_its_start_up() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_entry_point_tunes_the_collector_of_its_own_process() -> None:
    probe = (
        "import gc, sys\n"
        "from bulkcancel import cli\n"
        "sys.argv = ['bulkcancel', '--version']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split()[-2:] == [str(GC_YOUNG_THRESHOLD), "True"]
    assert gc.get_threshold()[0] != GC_YOUNG_THRESHOLD  # and nothing of it in this process
