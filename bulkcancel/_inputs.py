"""The names input: a names file, stdin, or what ``gcloud ... operations list --format=json``
prints.

Three shapes, told apart by the first character that is not whitespace (after a UTF-8 BOM):

* ``[`` — a JSON array of Operation objects (gcloud's ``--format=json``), read item by item so a
  large listing never sits in memory whole;
* ``{`` — JSON Lines, one Operation object per line (``--format=json`` of several commands, ``jq
  -c '.[]'``);
* anything else — one name per line, blank lines and ``#`` comments skipped.

Each input becomes a :class:`NameInput`: the name, the operation object when the input carried one
(so its metadata feeds ``--older-than``/``--target``/``--verb`` as a listing's would), and a
``problem`` when the input cannot be a name at all. Bad input never raises: invalid UTF-8, an
over-long line, a malformed JSON item each become one ``NameInput`` with a ``problem``, whose
``name`` is a short, printable rendering of what was read (an over-long line is never kept whole).

Reading is byte-level on a file descriptor (``os.read``): no buffered-reader lock is involved,
so :func:`aiter_inputs` can run the reader in a daemon thread that may stay blocked on a pipe
forever without holding up signal handling, the event loop, or interpreter exit.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_OBJECT_BYTES",
    "NameInput",
    "aiter_inputs",
    "iter_inputs",
    "read_chunks",
    "read_inputs",
]

#: A names-file line longer than this is not a name (names are a few hundred bytes at most).
MAX_LINE_BYTES = 4096
#: One Operation object (a JSON Lines line or an array item) may carry metadata; past this it is
#: not an operation we can use, and holding it would only cost memory.
MAX_OBJECT_BYTES = 1 << 20
_CHUNK = 1 << 16
_BOM = b"\xef\xbb\xbf"
_SHOWN = 120  # characters of a rejected input kept for the record


@dataclass(frozen=True, slots=True)
class NameInput:
    """One input: a name to validate, maybe with the operation object it came in."""

    name: str
    operation: Mapping[str, Any] | None = None
    #: Why this input cannot be a name (not UTF-8, too long, malformed JSON); ``None`` when fine.
    problem: str | None = None


def _shown(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _text_line(raw: bytes) -> NameInput | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return NameInput(_shown(raw.decode("utf-8", "replace")), problem="not valid UTF-8")
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    return NameInput(text)


def _from_object(item: object, source: str) -> NameInput:
    if isinstance(item, dict):
        name = item.get("name")
        if isinstance(name, str) and name.strip():
            return NameInput(name.strip(), item)
    shown = _shown(json.dumps(item, ensure_ascii=False, default=str))
    return NameInput(shown, problem=f"{source} item without a 'name' string")


def _json_line(raw: bytes) -> NameInput | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return NameInput(_shown(raw.decode("utf-8", "replace")), problem="not valid UTF-8")
    text = text.strip()
    if not text:
        return None
    try:
        item = json.loads(text)
    except ValueError:
        return NameInput(_shown(text), problem="not a JSON object (the input is JSON Lines)")
    return _from_object(item, "JSON Lines")


def _lines(chunks: Iterator[bytes], pending: bytes, limit: int) -> Iterator[bytes | int]:
    """Complete lines; an over-long line is yielded as its length (an int), never kept whole."""
    skipping = 0  # > 0 while discarding the rest of an over-long line
    while True:
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            if skipping:
                yield skipping + end
                skipping = 0
            else:
                yield pending[start:end] if end - start <= limit else end - start
            start = end + 1
        rest = pending[start:]
        if skipping:
            skipping += len(rest)
            rest = b""
        elif len(rest) > limit:
            skipping, rest = len(rest), b""
        chunk = next(chunks, b"")
        if not chunk:
            if skipping:
                yield skipping
            elif rest:
                yield rest
            return
        pending = rest + chunk


def _too_long(length: int, limit: int) -> NameInput:
    return NameInput(f"(a line of {length} bytes)", problem=f"line longer than {limit} bytes")


def _json_array(chunks: Iterator[bytes], pending: bytes) -> Iterator[NameInput]:
    """Items of one JSON array, decoded one at a time from a growing text buffer."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    buffer = utf8.decode(pending)
    pos = buffer.index("[") + 1
    eof = False
    dropped = 0  # characters already parsed and let go: positions in messages count them

    def more() -> bool:
        nonlocal buffer, pos, eof, dropped
        dropped += pos
        chunk = b"" if eof else next(chunks, b"")
        if not chunk:
            eof = True
            buffer = buffer[pos:] + utf8.decode(b"", final=True)
            pos = 0
            return False
        buffer = buffer[pos:] + utf8.decode(chunk)
        pos = 0
        return True

    expect_item = True
    while True:
        while pos < len(buffer) and buffer[pos] in " \t\r\n":
            pos += 1
        if pos >= len(buffer):
            if more():
                continue
            yield NameInput("(end of input)", problem="the JSON array is not closed")
            return
        char = buffer[pos]
        if char == "]":
            while len(buffer) - pos <= 2 * _SHOWN and more():
                pass  # read to the end, keeping only enough of any trailing text to show
            tail = buffer[pos + 1 :].strip()
            if tail:
                yield NameInput(_shown(tail), problem="text after the JSON array")
            return
        if char == "," and not expect_item:
            pos += 1
            expect_item = True
            continue
        try:
            item, end = decoder.raw_decode(buffer, pos)
        except ValueError as exc:
            at = exc.pos + dropped if isinstance(exc, json.JSONDecodeError) else None
            if len(buffer) - pos <= MAX_OBJECT_BYTES and more():
                continue  # most likely the item is not complete yet
            where = f" at character {at}" if at is not None else ""
            shown = _shown(buffer[pos : pos + _SHOWN])
            yield NameInput(shown, problem=f"malformed JSON array{where}")
            return
        pos = end
        expect_item = False
        yield _from_object(item, "JSON array")


def iter_inputs(chunks: Iterable[bytes]) -> Iterator[NameInput]:
    """Every input in a byte stream (given as chunks), in order; the shape is detected."""
    stream = iter(chunks)
    pending = b""
    while not pending.lstrip():
        chunk = next(stream, b"")
        if not chunk:
            return
        pending += chunk
        if pending.startswith(_BOM[: len(pending)]) and len(pending) < len(_BOM):
            continue
        pending = pending.removeprefix(_BOM)
    first = pending.lstrip()[:1]
    if first == b"[":
        yield from _json_array(stream, pending)
        return
    json_lines = first == b"{"
    limit = MAX_OBJECT_BYTES if json_lines else MAX_LINE_BYTES
    parse = _json_line if json_lines else _text_line
    for line in _lines(stream, pending, limit):
        if isinstance(line, int):
            yield _too_long(line, limit)
            continue
        item = parse(line)
        if item is not None:
            yield item


def read_chunks(fd: int, size: int = _CHUNK) -> Iterator[bytes]:
    """Raw reads of a file descriptor until end of file (each read returns what is there)."""
    while True:
        chunk = os.read(fd, size)
        if not chunk:
            return
        yield chunk


def _open(path: str) -> tuple[int, bool]:
    """The descriptor to read ``path`` from (``-`` is stdin) and whether we must close it."""
    if path == "-":
        return sys.stdin.fileno(), False
    return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)), True


def read_inputs(path: str) -> Iterator[NameInput]:
    """Every input of a names file (``-`` is stdin), read in the calling thread."""
    fd, owned = _open(path)
    try:
        yield from iter_inputs(read_chunks(fd))
    finally:
        if owned:
            os.close(fd)


_Batch = list[NameInput] | BaseException | None


class _Abandoned(Exception):
    """The consumer went away: the reader thread unwinds quietly."""


async def aiter_inputs(path: str, *, ahead: int = 8) -> AsyncIterator[NameInput]:
    """Like :func:`read_inputs`, but the reading happens in a daemon thread.

    A read that blocks (a pipe whose writer is slow, or never closes) blocks only that thread:
    the event loop keeps handling signals, and cancelling the consumer ends the iteration at once.
    Before each read the thread hands over what it has parsed so far, so names that trickle in
    through a pipe are seen as they arrive, and a file goes over one read (64 KiB) at a time; at
    most ``ahead`` such batches wait for the consumer.

    Errors opening or reading (``OSError``) are raised here, in the consumer.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Batch] = asyncio.Queue()
    room = threading.Semaphore(ahead)
    done = threading.Event()
    items: list[NameInput] = []

    def hand_over(item: _Batch) -> None:
        room.acquire()
        if done.is_set():
            raise _Abandoned
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            raise _Abandoned from None

    def chunks(fd: int) -> Iterator[bytes]:
        nonlocal items
        while True:
            if items:
                hand_over(items)
                items = []
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                return
            yield chunk

    def pump() -> None:
        try:
            fd, owned = _open(path)
            try:
                for item in iter_inputs(chunks(fd)):
                    items.append(item)
            finally:
                if owned:
                    os.close(fd)
            if items:
                hand_over(items)
            hand_over(None)
        except _Abandoned:
            return
        except BaseException as exc:  # handed to the consumer, raised there
            with contextlib.suppress(_Abandoned):
                hand_over(exc)

    threading.Thread(target=pump, name="bulkcancel-names-reader", daemon=True).start()
    try:
        while True:
            got = await queue.get()
            room.release()
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            for item in got:
                yield item
    finally:
        done.set()
        room.release()  # wake the thread if it waits for room, so it sees ``done``
