"""Sources and selection: names files, validation, duplicates, shards, metadata filters, paging."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from bulkcancel._models import OperationResult, Outcome, Target
from bulkcancel._sources import (
    ListingError,
    Resolver,
    Selection,
    SelectionLimitError,
    iter_pages,
)
from bulkcancel._transport import CallableTransport, RawResponse
from tests._support import PARENT, op

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def resolve(
    lines: list[str], selection: Selection | None = None, listed: bool = False
) -> tuple[list[Target], list[OperationResult], Resolver]:
    targets: list[Target] = []
    results: list[OperationResult] = []
    resolver = Resolver(selection or Selection(), targets.append, results.append)
    for line in lines:
        resolver.add_name(line, {"name": line} if listed else None)
    return targets, results, resolver


def test_invalid_lines_become_records_and_duplicates_count_once() -> None:
    targets, results, resolver = resolve([op(1), f" {op(1)} ", "not a name", op(2), "not a name"])
    assert [t.name for t in targets] == [op(1), op(2)]
    assert [(r.name, r.outcome) for r in results] == [("not a name", Outcome.INVALID)]
    assert results[0].details["reason"] == "contains whitespace"
    assert resolver.stats.skipped == {"duplicate": 2}
    assert resolver.stats.given == 5


def test_shards_partition_every_line_exactly_once() -> None:
    lines = [op(i) for i in range(300)] + ["bad line 1", "bad/line/2", op(5)]
    seen: list[str] = []
    for index in range(3):
        targets, results, _ = resolve(lines, Selection(shard=(index, 3)))
        seen += [t.name for t in targets] + [r.name for r in results]
        assert 0 < len(targets) < 300
    assert sorted(seen) == sorted(set(lines))


def test_match_applies_to_every_name() -> None:
    targets, _, resolver = resolve([op(1), op(22)], Selection(match=re.compile(r"op-0002\d$")))
    assert [t.name for t in targets] == [op(22)]
    assert resolver.stats.skipped == {"match": 1}


def listed_op(
    i: int, *, age: timedelta, target: str = "prod", verb: str = "deploy"
) -> dict[str, object]:
    return {
        "name": op(i),
        "metadata": {
            "createTime": (NOW - age).isoformat().replace("+00:00", "Z"),
            "target": f"{PARENT}/targets/{target}",
            "verb": verb,
        },
    }


def test_metadata_filters_apply_to_listed_operations() -> None:
    selection = Selection(
        older_than=timedelta(hours=2),
        target=re.compile(r"/targets/prod$"),
        verb="Deploy",
        now=lambda: NOW,
    )
    targets: list[Target] = []
    resolver = Resolver(selection, targets.append, lambda r: None)
    resolver.add_name(op(1), listed_op(1, age=timedelta(hours=3)))
    resolver.add_name(op(2), listed_op(2, age=timedelta(minutes=5)))
    resolver.add_name(op(3), listed_op(3, age=timedelta(hours=3), target="staging"))
    resolver.add_name(op(4), listed_op(4, age=timedelta(hours=3), verb="rollback"))
    resolver.add_name(op(5), {"name": op(5), "metadata": {"createTime": "garbage"}})
    resolver.add_name(op(6))  # given by name: no metadata to judge, selected
    assert [t.name for t in targets] == [op(1), op(6)]
    assert resolver.stats.skipped == {"older_than": 2, "target": 1, "verb": 1}
    assert resolver.stats.listed == 5


def paged(pages: Mapping[str | None, dict[str, object]]) -> CallableTransport:
    async def handler(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        token = url.partition("pageToken=")[2] or None
        return RawResponse(200, json.dumps(pages[token]).encode(), "application/json")

    return CallableTransport(handler)


async def test_iter_pages_follows_tokens_through_empty_pages() -> None:
    from tests.test_client import client_for

    transport = paged(
        {
            None: {"operations": [{"name": op(1)}], "nextPageToken": "a"},
            "a": {"nextPageToken": "b"},  # an empty page that still carries a token
            "b": {"operations": [{"name": op(2)}], "nextPageToken": ""},
        }
    )
    client = client_for(transport, "http://127.0.0.1:1")
    names = [o["name"] async for o in iter_pages(client, PARENT)]
    assert names == [op(1), op(2)]


async def test_iter_pages_stops_on_a_repeated_token() -> None:
    from tests.test_client import client_for

    transport = paged(
        {None: {"operations": [], "nextPageToken": "same"}, "same": {"nextPageToken": "same"}}
    )
    client = client_for(transport, "http://127.0.0.1:1")
    with pytest.raises(ListingError, match="repeated page token"):
        async for _ in iter_pages(client, PARENT):
            pass


def test_every_listed_entry_ends_in_one_record_and_only_its_own_are_targets() -> None:
    targets: list[Target] = []
    results: list[OperationResult] = []
    resolver = Resolver(Selection(), targets.append, results.append)
    entries: list[object] = [
        {"name": op(1)},
        {"name": op(1, "projects/victim/locations/l")},
        {},
        {"name": 7},
        [op(2)],
        {"name": op(2)},
        {"name": op(1)},  # the same operation again (pages shift): one target
    ]
    for position, entry in enumerate(entries, start=1):
        resolver.add_listed(PARENT, position, entry)
    assert [t.name for t in targets] == [op(1), op(2)]
    assert [r.outcome for r in results] == [Outcome.ERROR] * 4
    assert {r.name: r.details["message"] for r in results} == {
        f"{PARENT}/operations[#2]": f"listed name is not under {PARENT}/operations/",
        f"{PARENT}/operations[#3]": "listed entry without a name",
        f"{PARENT}/operations[#4]": "listed entry whose name is a JSON number, not a string",
        f"{PARENT}/operations[#5]": "listed entry is a JSON array, not an object",
    }
    assert resolver.stats.listed == 7
    assert resolver.stats.skipped == {"duplicate": 1}


def test_a_dash_parent_scopes_one_segment() -> None:
    targets: list[Target] = []
    resolver = Resolver(Selection(), targets.append, lambda r: None)
    dash = "projects/p/locations/-"
    for position, name in enumerate(
        [op(1, "projects/p/locations/a"), op(2, "projects/q/locations/a"), op(3, "projects/p")],
        start=1,
    ):
        resolver.add_listed(dash, position, {"name": name})
    assert [t.name for t in targets] == [op(1, "projects/p/locations/a")]


def test_out_of_scope_records_follow_the_shard_of_their_name() -> None:
    seen: list[str] = []
    for index in range(3):
        results: list[OperationResult] = []
        resolver = Resolver(Selection(shard=(index, 3)), lambda t: None, results.append)
        for position in range(1, 31):
            resolver.add_listed(PARENT, position, {"name": f"projects/x/operations/{position}"})
        seen += [r.name for r in results]
    assert sorted(seen) == sorted(f"{PARENT}/operations[#{n}]" for n in range(1, 31))


def test_max_selected_raises_the_moment_it_is_passed() -> None:
    targets: list[Target] = []
    resolver = Resolver(Selection(), targets.append, lambda r: None, max_selected=2)
    resolver.add_name(op(1))
    resolver.add_name("not a name")  # invalid lines are records, not selections
    resolver.add_listed(PARENT, 1, {"name": op(2)})
    with pytest.raises(SelectionLimitError, match="more than --max-operations 2"):
        resolver.add_listed(PARENT, 2, {"name": op(3)})
    assert len(targets) == 2


def test_an_overlong_line_is_invalid_and_its_record_keeps_only_the_start() -> None:
    line = op(1) + "x" * 5_000_000
    _, results, _ = resolve([line])
    [record] = results
    assert record.outcome is Outcome.INVALID
    assert record.details == {
        "reason": f"longer than 1024 characters ({len(line)})",
        "length": len(line),
    }
    assert record.name == line[:1024] + "…"
