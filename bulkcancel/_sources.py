"""Where targets come from: names given (arguments, a file, stdin) and parents listed.

Resolution happens before any cancel is sent, so the run knows how many targets it has (for the
confirmation prompt and ``--max-operations``). Results go to callbacks rather than a list, so the
CLI can spool a million names to disk instead of holding them in memory.
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import anyio

from bulkcancel._answers import Answer
from bulkcancel._client import OperationsClient
from bulkcancel._models import OperationResult, Outcome, Target
from bulkcancel._names import (
    DEFAULT_RULES,
    InvalidNameError,
    NameRules,
    name_digest,
    parse_parent,
    shard_of,
)


def read_names(path: str, stdin: TextIO | None = None) -> Iterator[str]:
    """Lines of a names file (``-`` is stdin): blank lines and ``#`` comments skipped."""
    if path == "-":
        yield from _lines(stdin or sys.stdin)
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from _lines(handle)


def _lines(handle: Iterable[str]) -> Iterator[str]:
    for line in handle:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


@dataclass(slots=True)
class Selection:
    """Client-side selection. Name rules apply to every target; metadata rules (age, target,
    verb) only to listed operations, whose metadata we have without spending a call."""

    rules: NameRules = DEFAULT_RULES
    shard: tuple[int, int] | None = None  # (index, count)
    match: re.Pattern[str] | None = None
    older_than: timedelta | None = None
    target: re.Pattern[str] | None = None
    verb: str | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(slots=True)
class ResolveStats:
    """Counts for the report: what was read, what was skipped, and why."""

    given: int = 0
    listed: int = 0
    selected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


OnTarget = Callable[[Target], None]
OnResult = Callable[[OperationResult], None]


class Resolver:
    """Validates, de-duplicates, shards and selects; hands each survivor to ``on_target`` and
    each input that ends here (invalid line, failed listing) to ``on_result``."""

    def __init__(self, selection: Selection, on_target: OnTarget, on_result: OnResult) -> None:
        self._sel = selection
        self._on_target = on_target
        self._on_result = on_result
        self._seen: set[bytes] = set()
        self.stats = ResolveStats()

    def _first_time(self, key: str) -> bool:
        digest = name_digest(key)
        if digest in self._seen:
            self.stats.skip("duplicate")
            return False
        self._seen.add(digest)
        return True

    def _in_shard(self, key: str) -> bool:
        shard = self._sel.shard
        if shard is not None and shard_of(key, shard[1]) != shard[0]:
            self.stats.skip("other_shard")
            return False
        return True

    def add_name(self, raw: str, listed: Mapping[str, Any] | None = None) -> None:
        """One name, given or listed."""
        if listed is None:
            self.stats.given += 1
        else:
            self.stats.listed += 1
        text = raw.strip()
        if not self._in_shard(text) or not self._first_time(text):
            return
        try:
            name = self._sel.rules.parse(text)
        except InvalidNameError as exc:
            self._on_result(OperationResult(text, Outcome.INVALID, {"reason": exc.reason}))
            return
        skip = self._skip_reason(name, listed)
        if skip is not None:
            self.stats.skip(skip)
            return
        self.stats.selected += 1
        self._on_target(Target(name, listed=listed))

    def add_invalid(self, text: str, reason: str) -> None:
        """An input that cannot be a name at all (not UTF-8, too long, malformed JSON)."""
        self.stats.given += 1
        self._on_result(OperationResult(text, Outcome.INVALID, {"reason": reason}))

    def _skip_reason(self, name: str, listed: Mapping[str, Any] | None) -> str | None:
        sel = self._sel
        if sel.match is not None and not sel.match.search(name):
            return "match"
        if listed is None:
            return None
        metadata = listed.get("metadata")
        meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
        if sel.older_than is not None:
            created = _parse_time(meta.get("createTime"))
            if created is None or sel.now() - created < sel.older_than:
                return "older_than"
        if sel.target is not None and not sel.target.search(str(meta.get("target", ""))):
            return "target"
        if sel.verb is not None and str(meta.get("verb", "")).lower() != sel.verb.lower():
            return "verb"
        return None

    def listing_failed(self, parent: str, answer: Answer | None, why: str) -> None:
        details: dict[str, Any] = {"kind": "listing", "message": why}
        if answer is not None:
            details["list_error"] = answer.summary()
        self._on_result(OperationResult(parent, Outcome.ERROR, details))


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class ListingError(Exception):
    def __init__(self, message: str, answer: Answer | None = None) -> None:
        super().__init__(message)
        self.answer = answer


async def iter_pages(
    client: OperationsClient,
    parent: str,
    *,
    collection: str = "operations",
    filter_expr: str | None = None,
    page_size: int = 0,
) -> AsyncIterator[dict[str, Any]]:
    """Every item of ``GET {parent}/{collection}``, following ``nextPageToken`` to the end.

    Raises ListingError on a failed page or a repeated token (some servers have returned the same
    token forever; following it would never end).
    """
    token: str | None = None
    seen: set[str] = set()
    while True:
        answer = await client.list_page(
            parent,
            filter_expr=filter_expr,
            page_size=page_size,
            page_token=token,
            collection=collection,
        )
        if not answer.ok or answer.body is None:
            raise ListingError(f"listing {collection} under {parent or '/'} failed", answer)
        items = answer.body.get(collection) or []
        if not isinstance(items, list):
            raise ListingError(f"listing under {parent} returned a malformed page", answer)
        for item in items:
            if isinstance(item, dict):
                yield item
        token = answer.body.get("nextPageToken")
        if not isinstance(token, str) or not token:
            return
        if token in seen:
            raise ListingError(f"listing under {parent} repeated page token {token[:40]!r}")
        seen.add(token)


async def expand_parent(client: OperationsClient, parent: str, *, dash_ok: bool) -> list[str]:
    """``projects/P/locations/-`` -> one parent per location of P, unless the service accepts
    ``-`` itself (``dash_ok``). Any other parent is returned as is."""
    segments = parent.split("/")
    if dash_ok or len(segments) != 4 or segments[2] != "locations" or segments[3] != "-":
        return [parent]
    project = "/".join(segments[:2])
    locations: list[str] = []
    async for location in iter_pages(client, project, collection="locations"):
        name = location.get("name")
        if isinstance(name, str) and name.startswith(project + "/locations/"):
            locations.append(name)
    return locations


async def resolve_parents(
    client: OperationsClient,
    parents: Iterable[str],
    resolver: Resolver,
    *,
    filter_expr: str | None = None,
    page_size: int = 0,
    dash_ok: bool = False,
) -> None:
    """List every parent (concurrently), feeding each operation found to the resolver."""

    async def one(parent: str) -> None:
        try:
            async for operation in iter_pages(
                client, parent, filter_expr=filter_expr, page_size=page_size
            ):
                name = operation.get("name")
                resolver.add_name(name if isinstance(name, str) else "", operation)
        except ListingError as exc:
            resolver.listing_failed(parent, exc.answer, str(exc))

    async def fan_out(parent: str, tg: anyio.abc.TaskGroup) -> None:
        try:
            expanded = await expand_parent(client, parent, dash_ok=dash_ok)
        except ListingError as exc:
            resolver.listing_failed(parent, exc.answer, str(exc))
            return
        for each in expanded:
            tg.start_soon(one, each)

    async with anyio.create_task_group() as tg:
        for parent in dict.fromkeys(parents):
            tg.start_soon(fan_out, parent, tg)


def check_parents(parents: Iterable[str]) -> list[str]:
    """Validate parents up front: a bad one is a usage error, not a per-target outcome."""
    return [parse_parent(p) for p in parents]
