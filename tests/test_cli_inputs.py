"""gcloud in, and Ctrl-C while stdin is open: the names input through the real CLI.

What ``gcloud <svc> operations list --format=json`` prints (a JSON array of Operation objects),
and JSON Lines of such objects, go in through stdin or a names file; their metadata feeds the
selection filters; the outcomes are exact against the loopback fake.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from bulkcancel.testing import Behavior, FakeOperationsServer
from tests._e2e import (
    bulkcancel_command,
    closed_port,
    load_report,
    outcomes,
    process_env,
    run_cli,
)

pytestmark = pytest.mark.timeout(120)
PARENT = "projects/shop/locations/us-central1"
KINDS = [Behavior.CANCELS, Behavior.COMPLETES_ANYWAY, Behavior.ALREADY_DONE, Behavior.NEVER]


def gcloud_world() -> tuple[FakeOperationsServer, list[dict[str, Any]], dict[str, str]]:
    """Operations of several behaviours, as gcloud would print them (full Operation objects,
    metadata included), and the outcome each selected one must get. A quarter target
    staging: ``--target prod$`` must skip them on their metadata alone."""
    server = FakeOperationsServer()
    objects: list[dict[str, Any]] = []
    expected: dict[str, str] = {}
    for i in range(40):
        behavior = KINDS[i % len(KINDS)]
        target = f"{PARENT}/targets/" + ("staging" if i % 5 == 0 else "prod")
        name = f"{PARENT}/operations/op-{i:03d}"
        op = server.add_operation(name, behavior, target=target, age=3600)
        objects.append(op.to_json(server.clock(), server.wall_offset))
        if not target.endswith("staging"):
            expected[name] = behavior.expected
    return server, objects, expected


async def run_process(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process(args, input=stdin, env=process_env(), check=False)


async def test_a_gcloud_json_array_on_stdin_gets_exact_outcomes(tmp_path: Path) -> None:
    server, objects, expected = gcloud_world()
    report = tmp_path / "r.json"
    assert any(o.get("done") for o in objects)  # gcloud shows finished ones too
    async with server.serve() as url:
        done = await run_process(
            bulkcancel_command(
                "cancel", "--names-file", "-", "--anonymous", "--endpoint", url, "--yes",
                "--target", "prod$", "--deadline", "2", "--report", str(report), "--quiet",
            ),
            json.dumps(objects, indent=1).encode(),
        )  # fmt: skip
    assert done.returncode == 3, done.stderr.decode()  # NEVER ones end still_running
    data = load_report(report)
    assert outcomes(data) == expected
    assert data["selection"]["skipped"] == {"target": 8}
    cancelled = {r.name for r in server.requests("cancel")}
    assert not cancelled - set(expected)  # nothing sent for a skipped operation


async def test_json_lines_in_a_names_file_get_exact_outcomes_and_dry_run_fields(
    tmp_path: Path,
) -> None:
    server, objects, expected = gcloud_world()
    names_file = tmp_path / "ops.jsonl"
    names_file.write_text("".join(json.dumps(o) + "\n" for o in objects) + "{not json}\n")
    async with server.serve() as url:
        dry = await run_cli(
            "cancel", "--names-file", str(names_file), "--anonymous", "--endpoint", url,
            "--target", "prod$", "--dry-run", "--format", "json", "--quiet",
        )  # fmt: skip
        assert server.requests("cancel") == []
        report = tmp_path / "r.json"
        real = await run_cli(
            "cancel", "--names-file", str(names_file), "--anonymous", "--endpoint", url,
            "--target", "prod$", "--yes", "--deadline", "2", "--report", str(report), "--quiet",
        )  # fmt: skip
    assert real.exit_code == 3, real.stderr
    bad = "{not json}"
    assert outcomes(load_report(report)) == {**expected, bad: "invalid"}

    records = {r["name"]: r for r in json.loads(dry.stdout)["operations"]}
    assert records[bad]["outcome"] == "invalid"
    first = records[f"{PARENT}/operations/op-001"]
    assert first["outcome"] == "not_attempted"
    assert first["target"] == f"{PARENT}/targets/prod"
    assert first["verb"] == "deploy"
    assert first["state"] == "running"
    assert first["create_time"] == objects[1]["metadata"]["createTime"]
    assert records[f"{PARENT}/operations/op-002"]["state"] == "done"


def test_ctrl_c_is_honoured_while_stdin_is_still_open(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    process = subprocess.Popen(
        bulkcancel_command(
            "cancel", "--names-file", "-", "--anonymous", "--yes", "--log-format", "json",
            "--endpoint", f"http://127.0.0.1:{closed_port()}", "--report", str(report),
        ),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=process_env(),
    )  # fmt: skip
    assert process.stdin is not None and process.stderr is not None
    try:
        # The reader is running (and the signal handlers are in place) once it says so.
        line = process.stderr.readline()
        while b"reading names from stdin" not in line:
            assert line, "the process ended before reading stdin"
            line = process.stderr.readline()
        process.stdin.write(f"{PARENT}/operations/op-1\n".encode())
        process.stdin.flush()
        sent_at = time.monotonic()
        process.send_signal(signal.SIGINT)  # stdin stays open: a blocking read would hang here
        rest = process.stderr.read()
        process.wait(timeout=30)
        assert time.monotonic() - sent_at < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdin.close()
    assert process.returncode == 130, rest.decode()
    assert b"Traceback" not in rest
    data = load_report(report)
    assert data["stopped"] == "interrupted"
    assert {r["outcome"] for r in data["operations"]} <= {"not_attempted"}
    assert data["exit_code"] == 130
