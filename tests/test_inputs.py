"""The names input: lines, gcloud's JSON array, JSON Lines; hostile bytes; a reader that never
blocks signal handling (a real subprocess whose stdin pipe stays open while SIGINT arrives)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkcancel._inputs import (
    MAX_LINE_BYTES,
    MAX_OBJECT_BYTES,
    NameInput,
    aiter_inputs,
    iter_inputs,
    read_inputs,
)
from tests._support import op

CREATE = "2026-11-24T10:00:00.123456789Z"


def operation(i: int, **metadata: str) -> dict[str, object]:
    meta = {
        "createTime": CREATE,
        "target": f"projects/p/locations/l/targets/t{i}",
        "verb": "deploy",
    }
    meta.update(metadata)
    return {"name": op(i), "metadata": meta, "done": False}


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """The same bytes cut at every ``size``: the parser must not care where reads end."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def parse(data: bytes, size: int = 7) -> list[NameInput]:
    whole = list(iter_inputs([data]))
    assert list(iter_inputs(chunked(data, size))) == whole
    return whole


def test_lines_skip_blanks_comments_and_a_bom() -> None:
    data = f"\ufeff# incident 42\n\n  {op(1)}  \r\n{op(2)}\n   # indented\n{op(3)}".encode()
    assert parse(data) == [NameInput(op(1)), NameInput(op(2)), NameInput(op(3))]
    assert parse(b"") == []
    assert parse(b"\n\n  \n") == []


def test_invalid_utf8_is_one_invalid_input_and_reading_goes_on() -> None:
    data = op(1).encode() + b"\xff\xfe\n" + op(2).encode() + b"\n"
    got = parse(data)
    assert got[0].problem == "not valid UTF-8"
    assert got[0].name.startswith(op(1))
    assert "\ufffd" in got[0].name
    assert got[1] == NameInput(op(2))


def test_an_over_long_line_is_invalid_and_never_kept_whole() -> None:
    huge = b"x" * (MAX_LINE_BYTES * 5)
    data = op(1).encode() + b"\n" + huge + b"\n" + op(2).encode() + b"\n" + huge
    got = parse(data, size=1000)
    assert [g.name for g in got if g.problem is None] == [op(1), op(2)]
    long_ones = [g for g in got if g.problem]
    assert len(long_ones) == 2
    for item in long_ones:
        assert item.problem == f"line longer than {MAX_LINE_BYTES} bytes"
        assert item.name == f"(a line of {len(huge)} bytes)"
    exactly = b"y" * MAX_LINE_BYTES
    assert parse(exactly + b"\n") == [NameInput(exactly.decode())]


def test_gcloud_json_array_brings_each_operation_object() -> None:
    ops = [operation(1), operation(2, verb="rollback"), operation(3)]
    data = json.dumps(ops, indent=2).encode()
    got = parse(data, size=5)
    assert [(g.name, g.operation, g.problem) for g in got] == [(o["name"], o, None) for o in ops]
    assert parse(b"  \n[ ]\n") == []


def test_json_lines_bring_each_operation_object() -> None:
    ops = [operation(i) for i in range(1, 4)]
    data = b"\xef\xbb\xbf" + "\n".join(json.dumps(o) for o in ops).encode() + b"\n\n"
    got = parse(data)
    assert [(g.name, g.operation) for g in got] == [(o["name"], o) for o in ops]


def test_malformed_json_items_become_invalid_inputs() -> None:
    lines = parse(b'{"name": "' + op(1).encode() + b'"}\nnot json\n{"id": 3}\n[1]\n')
    assert [g.problem for g in lines] == [
        None,
        "not a JSON object (the input is JSON Lines)",
        "JSON Lines item without a 'name' string",
        "JSON Lines item without a 'name' string",
    ]
    assert lines[2].name == '{"id": 3}'

    array = parse(b'[{"name": "' + op(1).encode() + b'"}, 5, {"name": ')
    assert array[0] == NameInput(op(1), {"name": op(1)})
    assert array[1].problem == "JSON array item without a 'name' string"
    assert array[2].problem is not None
    assert array[2].problem.startswith("malformed JSON array")
    assert len(array) == 3

    trailing = parse(b'[{"name": "' + op(1).encode() + b'"}] garbage')
    assert trailing[1] == NameInput("garbage", problem="text after the JSON array")
    unclosed = parse(b'[{"name": "' + op(1).encode() + b'"},  ')
    assert unclosed[1].problem == "the JSON array is not closed"


def test_a_json_item_past_the_size_cap_stops_the_array_without_holding_it() -> None:
    big = b'[{"name": "' + b"z" * (MAX_OBJECT_BYTES * 2)
    got = list(iter_inputs(chunked(big, 1 << 16)))
    assert len(got) == 1
    assert got[0].problem is not None
    assert got[0].problem.startswith("malformed JSON array")
    assert len(got[0].name) <= 121


def test_read_inputs_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ops.json"
    path.write_text(json.dumps([operation(7)]))
    assert [g.name for g in read_inputs(str(path))] == [op(7)]


async def test_async_reader_yields_everything_in_order(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    names = [op(i) for i in range(20_000)]  # several reads, several hand-overs
    path.write_text("\n".join(names) + "\n")
    got = [item.name async for item in aiter_inputs(str(path), ahead=2)]
    assert got == names


async def test_async_reader_raises_open_errors_in_the_consumer(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        async for _ in aiter_inputs(str(tmp_path / "missing")):
            pass


async def test_async_reader_stops_early_without_reading_on(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("\n".join(op(i) for i in range(50_000)))
    reader = aiter_inputs(str(path), ahead=1)
    first = [(await anext(reader)).name for _ in range(3)]
    await reader.aclose()  # type: ignore[attr-defined]
    assert first == [op(0), op(1), op(2)]


_SCRIPT = textwrap.dedent(
    """
    import signal, sys
    import anyio
    from bulkcancel._inputs import aiter_inputs

    async def main() -> int:
        seen = 0
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                async def watch() -> None:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return
                tg.start_soon(watch)
                async for item in aiter_inputs("-"):
                    seen += 1
                    print(item.name, item.operation is not None, flush=True)
        print(f"interrupted after {seen}", flush=True)
        return 130

    sys.exit(anyio.run(main))
    """
)


def test_sigint_is_handled_while_stdin_stays_open(tmp_path: Path) -> None:
    script = tmp_path / "reader.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        # JSON Lines arriving one by one: each is seen before the next is even written.
        for i in (1, 2):
            process.stdin.write(json.dumps(operation(i)).encode() + b"\n")
            process.stdin.flush()
            assert process.stdout.readline().decode().split() == [op(i), "True"]
        process.send_signal(signal.SIGINT)  # the pipe is still open: a blocking read would hang
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err.decode()
    assert out.decode().strip() == "interrupted after 2"
    assert b"Traceback" not in err
