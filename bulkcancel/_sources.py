"""Where targets come from: names given (arguments, a file, stdin) and parents listed.

Resolution happens before any cancel is sent, so the run knows how many targets it has (for the
confirmation prompt and ``--max-operations``). Results go to callbacks rather than a list, so the
CLI can spool a million names to disk instead of holding them in memory.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import anyio

from bulkcancel._answers import Answer
from bulkcancel._client import OperationsClient
from bulkcancel._errors import ConfigError
from bulkcancel._models import OperationResult, Outcome, Target
from bulkcancel._names import (
    DEFAULT_RULES,
    MAX_NAME_LENGTH,
    InvalidNameError,
    NameRules,
    in_our_spelling,
    parse_parent,
    shard_of,
)
from bulkcancel._seen import SeenNames

#: Most entries one run takes from listings (operations and locations together) before it
#: refuses to go on. A hostile or broken server can list without end; a real project past a
#: million operations is better cancelled in shards. Overridable (``max_listed``).
DEFAULT_MAX_LISTED = 1_000_000
#: Most pages in a row without a single entry (each with a fresh token) before a listing is
#: given up as an error: servers may return empty pages, but not without end.
DEFAULT_MAX_EMPTY_PAGES = 1000
#: How much of a rejected server-supplied name a record keeps.
_QUOTE = 200


class SelectionLimitError(ConfigError):
    """More targets were selected than the run allows (``--max-operations``): nothing was sent."""


class ListingLimitError(ConfigError):
    """The listings returned more entries than the run's ceiling: nothing was sent."""


def entry_name(parent: str, position: int, collection: str = "operations") -> str:
    """The record name for a listed entry that has no usable name of its own.

    ``projects/p/locations/l/operations[#17]`` is the 17th entry (counted from 1 across all
    pages) of that parent's listing. ``[`` and ``#`` never occur in a valid name, so the record
    can never be mistaken for (or collide with) a real operation.
    """
    return f"{parent}/{collection}[#{position}]"


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
    each input that ends here (invalid line, out-of-scope entry, failed listing) to
    ``on_result``.

    ``max_selected`` (``--max-operations``) raises SelectionLimitError the moment one more
    target is selected, so an endless listing stops at once instead of after it "finishes".
    ``max_listed`` caps the entries taken from listings (ListingLimitError), whatever the
    selection keeps.
    """

    def __init__(
        self,
        selection: Selection,
        on_target: OnTarget,
        on_result: OnResult,
        *,
        max_selected: int | None = None,
        max_listed: int = DEFAULT_MAX_LISTED,
    ) -> None:
        self._sel = selection
        self._on_target = on_target
        self._on_result = on_result
        self._seen = SeenNames()  # 8 bytes a name, not ~90: see _seen.py
        self._max_selected = max_selected
        self._max_listed = max_listed
        self._locations = 0  # location entries from fan-outs: they count against the ceiling
        self.stats = ResolveStats()

    def _first_time(self, key: str) -> bool:
        if not self._seen.add(key):
            self.stats.skip("duplicate")
            return False
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
            details: dict[str, Any] = {"reason": exc.reason}
            if len(text) > MAX_NAME_LENGTH:
                # The record keeps the start of an overlong line, not megabytes of it.
                text, details["length"] = text[:MAX_NAME_LENGTH] + "…", len(text)
            self._on_result(OperationResult(text, Outcome.INVALID, details))
            return
        skip = self._skip_reason(name, listed)
        if skip is not None:
            self.stats.skip(skip)
            return
        if self._max_selected is not None and self.stats.selected >= self._max_selected:
            raise SelectionLimitError(
                f"more than --max-operations {self._max_selected} operations selected: nothing sent"
            )
        self.stats.selected += 1
        self._on_target(Target(name, listed=listed))

    def redirect(self, on_target: OnTarget, on_result: OnResult) -> None:
        """Send what is found from now on elsewhere (a drain's re-listing passes).

        The selection limit stops applying here: it refuses a first selection before anything
        is sent, while a drain counts against ``--max-operations`` itself and reports what
        would pass it as ``not_attempted``.
        """
        self._on_target = on_target
        self._on_result = on_result
        self._max_selected = None

    def add_relisted(self, parent: str, position: int, entry: object) -> bool:
        """An entry of a later listing of ``parent`` (a drain's re-listing pass).

        An entry judged before (selected, skipped or refused) or another shard's is passed over
        without a count or a record: each entry is judged once, the first time it is seen, so
        passes over the same operations neither count nor report them again. Anything never
        seen goes through :meth:`add_listed`. True when the entry was new.
        """
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if isinstance(name, str):
            name = in_our_spelling(name, parent)
        if isinstance(name, str) and _directly_under(name.strip(), parent):
            key = name.strip()
        else:
            key = entry_name(parent, position)
        shard = self._sel.shard
        if shard is not None and shard_of(key, shard[1]) != shard[0]:
            return False
        if key in self._seen:
            return False
        self.add_listed(parent, position, entry)
        return True

    def count_location(self) -> None:
        """One more location from a fan-out, against the listing ceiling."""
        self._check_ceiling()
        self._locations += 1

    def _check_ceiling(self) -> None:
        if self.stats.listed + self._locations >= self._max_listed:
            raise ListingLimitError(
                f"the listings returned more than {self._max_listed} entries: nothing sent "
                "(list fewer parents, use --filter, or shard the run)"
            )

    def add_listed(self, parent: str, position: int, entry: object) -> None:
        """The ``position``-th entry (from 1) of ``parent``'s operations listing.

        Scope is the input: an entry is a target only if its name is
        ``{parent}/operations/{id}``. Anything else (not an object, no name, a name that is not
        a string, a name under another parent) ends as an ``error`` record named by parent and
        position (see ``entry_name``), and nothing is ever sent for it. Every entry ends in
        exactly one record, or one counted skip (duplicate, other shard, not selected).
        """
        self._check_ceiling()
        listed = entry.get("name") if isinstance(entry, Mapping) else None
        # (a project listed by its number, where the parent gave its ID: the same operation)
        name = in_our_spelling(listed, parent) if isinstance(listed, str) else listed
        if not isinstance(entry, Mapping):
            problem = f"listed entry is a JSON {_json_type(entry)}, not an object"
        elif name is None or name == "":
            problem = "listed entry without a name"
        elif not isinstance(name, str):
            problem = f"listed entry whose name is a JSON {_json_type(name)}, not a string"
        elif not _directly_under(name.strip(), parent):
            problem = f"listed name is not under {parent}/operations/"
        else:
            # (the listed body names it as we do from here on: the target, the journal, the
            # report all spell the project as the parent did)
            self.add_name(name, entry if name == listed else {**entry, "name": name})
            return
        self.stats.listed += 1
        key = entry_name(parent, position)
        if not self._in_shard(key) or not self._first_time(key):
            return
        details: dict[str, Any] = {"kind": "listing", "message": problem}
        if isinstance(listed, str):
            details["listed_name"] = listed[:_QUOTE]
        self._on_result(OperationResult(key, Outcome.ERROR, details))

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

    def location_refused(self, project: str, position: int, why: str, name: object) -> None:
        """A location from a ``locations/-`` fan-out that is not safe to list under."""
        key = entry_name(project, position, "locations")
        if not self._in_shard(key) or not self._first_time(key):
            return
        details: dict[str, Any] = {"kind": "listing", "message": why}
        if isinstance(name, str):
            details["listed_name"] = name[:_QUOTE]
        self._on_result(OperationResult(key, Outcome.ERROR, details))


def _json_type(value: object) -> str:
    for kind, name in ((bool, "boolean"), (int | float, "number"), (str, "string")):
        if isinstance(value, kind):
            return name
    return "array" if isinstance(value, list) else "object" if value is not None else "null"


def _directly_under(name: str, parent: str) -> bool:
    """``{parent}/operations/{id}`` with a single-segment id: nothing nested, nothing beside.

    A ``-`` segment of the parent (``projects/p/locations/-`` on a service that lists across
    locations itself) stands for exactly one segment, as the API means it.
    """
    if "-" not in parent.split("/"):
        prefix = parent + "/operations/"
        return name.startswith(prefix) and "/" not in name[len(prefix) :]
    wanted = [*parent.split("/"), "operations"]
    segments = name.split("/")
    return len(segments) == len(wanted) + 1 and all(
        w == s or (w == "-" and s) for w, s in zip(wanted, segments, strict=False)
    )


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class PageSource(Protocol):
    """What :func:`iter_pages` needs: the client's ``list_page`` (or something wrapping it)."""

    async def list_page(
        self,
        parent: str,
        *,
        filter_expr: str | None = ...,
        page_size: int = ...,
        page_token: str | None = ...,
        collection: str = ...,
    ) -> Answer: ...


class ListingError(Exception):
    def __init__(self, message: str, answer: Answer | None = None) -> None:
        super().__init__(message)
        self.answer = answer


async def iter_pages(
    client: PageSource,
    parent: str,
    *,
    collection: str = "operations",
    filter_expr: str | None = None,
    page_size: int = 0,
    max_empty_pages: int = DEFAULT_MAX_EMPTY_PAGES,
) -> AsyncIterator[Any]:
    """Every item of ``GET {parent}/{collection}``, following ``nextPageToken`` to the end.

    Items are yielded as the server sent them (any JSON value: the caller judges them).
    Raises ListingError on a failed page, a repeated token (some servers have returned the same
    token forever), or ``max_empty_pages`` empty pages in a row.
    """
    token: str | None = None
    seen: set[str] = set()
    empty = 0
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
            yield item
        token = answer.body.get("nextPageToken")
        if not isinstance(token, str) or not token:
            return
        if token in seen:
            raise ListingError(f"listing under {parent} repeated page token {token[:40]!r}")
        empty = 0 if items else empty + 1
        if empty >= max_empty_pages:
            raise ListingError(f"listing under {parent} returned {empty} empty pages in a row")
        seen.add(token)


async def expand_parent(
    client: OperationsClient, parent: str, resolver: Resolver, *, dash_ok: bool
) -> list[str]:
    """``projects/P/locations/-`` -> one parent per location of P, unless the service accepts
    ``-`` itself (``dash_ok``). Any other parent is returned as is.

    Location names come from the server and become URL paths, so each is validated exactly like
    ``--parent`` and must be ``projects/P/locations/{L}`` of this very project; any other entry
    is an ``error`` record (``projects/P/locations[#N]``) and is never listed.
    """
    segments = parent.split("/")
    if dash_ok or len(segments) != 4 or segments[2] != "locations" or segments[3] != "-":
        return [parent]
    project = "/".join(segments[:2])
    locations: dict[str, None] = {}
    position = 0
    async for location in iter_pages(client, project, collection="locations"):
        position += 1
        resolver.count_location()
        name = location.get("name") if isinstance(location, dict) else None
        why = _location_problem(name, project)
        if why is None:
            locations[str(name)] = None
        else:
            resolver.location_refused(project, position, why, name)
    return list(locations)


def _location_problem(name: object, project: str) -> str | None:
    if not isinstance(name, str) or not name:
        return "listed location without a usable name"
    try:
        parse_parent(name)
    except InvalidNameError as exc:
        return f"listed location name refused: {exc.reason}"
    segments = name.split("/")
    if len(segments) != 4 or f"{segments[0]}/{segments[1]}" != project or segments[3] == "-":
        return f"listed location is not projects/{{id}}/locations/{{id}} of {project}"
    return None


async def resolve_parents(
    client: OperationsClient,
    parents: Iterable[str],
    resolver: Resolver,
    *,
    filter_expr: str | None = None,
    page_size: int = 0,
    dash_ok: bool = False,
    listed: list[str] | None = None,
) -> None:
    """List every parent (concurrently), feeding each operation found to the resolver.

    ``listed``, when given, receives each parent whose listing went through to its end (after
    a ``locations/-`` fan-out: each location): what a drain lists again.

    A failed listing becomes an ``error`` record for its parent and the others go on. Passing
    the resolver's limits (SelectionLimitError, ListingLimitError) stops every listing at once
    and is raised as is (not wrapped in an exception group): the run is refused.
    """
    refused: list[ConfigError] = []

    async def guarded(work: Callable[[], Awaitable[None]], tg: anyio.abc.TaskGroup) -> None:
        try:
            await work()
        except (SelectionLimitError, ListingLimitError) as exc:
            refused.append(exc)
            tg.cancel_scope.cancel()

    async def one(parent: str) -> None:
        position = 0
        try:
            async for operation in iter_pages(
                client, parent, filter_expr=filter_expr, page_size=page_size
            ):
                position += 1
                resolver.add_listed(parent, position, operation)
        except ListingError as exc:
            resolver.listing_failed(parent, exc.answer, str(exc))
            return
        if listed is not None:
            listed.append(parent)

    async def fan_out(parent: str, tg: anyio.abc.TaskGroup) -> None:
        try:
            expanded = await expand_parent(client, parent, resolver, dash_ok=dash_ok)
        except ListingError as exc:
            resolver.listing_failed(parent, exc.answer, str(exc))
            return
        for each in expanded:
            tg.start_soon(guarded, functools.partial(one, each), tg)

    async with anyio.create_task_group() as tg:
        for parent in dict.fromkeys(parents):
            tg.start_soon(guarded, functools.partial(fan_out, parent, tg), tg)
    if refused:
        raise refused[0]


def check_parents(parents: Iterable[str]) -> list[str]:
    """Validate parents up front: a bad one is a usage error, not a per-target outcome."""
    return [parse_parent(p) for p in parents]
