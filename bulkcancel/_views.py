"""Words and tables that explain a run: what the exit code means, how to resume, what a selection
skipped, what is running (for a dry run), who acts where. Pure functions of report data; the
only rich object built here is a :class:`rich.table.Table`, drawn by whoever prints it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

__all__ = [
    "EXIT_MEANINGS",
    "age_text",
    "count_place",
    "exit_lines",
    "listing_fields",
    "places_touched",
    "running_table",
    "selection_line",
    "short_reason",
]

EXIT_MEANINGS = {
    0: "every target ended cancelled or completed_anyway",
    1: "internal error (a bug): please report it with the message above",
    2: "refused before any cancel was sent (usage, input or confirmation)",
    3: "the run finished; some targets ended in another outcome",
    4: "no credentials, or the server rejected them on every first request",
    5: "stopped early: the API could not be reached, or the endpoint is wrong",
    6: "progress could not be recorded (journal or report); see the fallback path above",
    130: "interrupted (Ctrl-C / SIGINT); the report holds what was done",
    143: "terminated (SIGTERM); the report holds what was done",
}
#: Exit codes after which running the same command again picks up where this run stopped.
_RESUMABLE = frozenset({5, 6, 130, 143})
_SKIP_WORDS = {
    "target": "by --target",
    "verb": "by --verb",
    "older_than": "by --older-than",
    "match": "by --match",
    "duplicate": "duplicates",
    "other_shard": "in other shards",
}
_HTML = re.compile(r"<!doctype|<html|<head|<body|<title", re.IGNORECASE)
_TITLE = re.compile(r"<title[^>]*>(.*?)(?:</title|$)", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>?")
_LOCATION = re.compile(r"(?:^|/)locations/([^/]+)/")
_PLACE = re.compile(r"^((?:projects|organizations|folders)/[^/]+(?:/locations/[^/]+)?)/")
_PLACES_KEPT = 1000


def short_reason(text: str) -> str:
    """An error message whose body is an HTML page becomes the page's ``<title>``: what a proxy
    or a load balancer says ("Error 404 (Not Found)!!1"), without the markup."""
    found = _HTML.search(text)
    if found is None:
        return text
    prefix = text[: found.start()].rstrip(" :")
    match = _TITLE.search(text, found.start())
    title = _TAG.sub("", html.unescape(match.group(1))) if match else ""
    title = " ".join(title.split()) or "an HTML error page"
    return f"{prefix}: {title}" if prefix else title


def exit_lines(
    code: int,
    *,
    dry_run: bool = False,
    journal: str | None = None,
    stopped: str | None = None,
    why_shown: bool = True,
) -> list[str]:
    """What ``code`` means, and what to do next (resume, look at the report). ``why_shown``:
    the summary table with its 'why' column was printed above (``--format table``); otherwise
    the reasons are in the records on stdout."""
    meaning = EXIT_MEANINGS.get(code, "see the documentation")
    if code == 0 and dry_run:
        meaning = "dry run: every target is valid; nothing was sent"
    elif code == 3 and dry_run:
        meaning = "dry run: some inputs are invalid or a listing failed; nothing was sent"
    elif code == 3:
        meaning += " (see 'why' above)" if why_shown else " (see each record's 'reason')"
    if stopped and code not in (130, 143):
        meaning += f" (stopped: {stopped})"
    lines = [f"exit {code}: {meaning}"]
    if code in _RESUMABLE:
        if journal:
            lines.append(
                f"to resume: run the same command again with --journal {journal}; "
                "finished work is not redone"
            )
        else:
            lines.append("to make a rerun resume instead of starting over, add --journal PATH")
    elif code == 0 and dry_run:
        lines.append("to cancel them: run the same command without --dry-run")
    return lines


def selection_line(selection: Mapping[str, Any]) -> str:
    """``{"given": 0, "listed": 278, "selected": 178, "skipped": {"target": 100}}`` ->
    ``278 listed; 178 selected; skipped: 100 by --target`` (and ``N invalid`` after
    ``selected`` when some inputs were not names at all)."""
    parts = []
    for key in ("given", "listed"):
        if selection.get(key):
            parts.append(f"{selection[key]} {key}")
    parts.append(f"{selection.get('selected', 0)} selected")
    if selection.get("invalid"):
        parts.append(f"{selection['invalid']} invalid")
    skipped = selection.get("skipped") or {}
    if skipped:
        words = [
            f"{count} {_SKIP_WORDS.get(reason, 'by ' + reason)}"
            for reason, count in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))
            if count
        ]
        parts.append("skipped: " + ", ".join(words))
    return "; ".join(parts)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:  # since 3.11 this reads RFC 3339 with nanoseconds ("...:00.123456789Z") too
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def listing_fields(operation: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields a record gets from a listed Operation: ``create_time``, ``target``, ``verb``
    (when its metadata has them) and ``state`` (running, done, cancel_requested)."""
    if not isinstance(operation, Mapping):
        return {}
    metadata = operation.get("metadata")
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    fields: dict[str, Any] = {}
    for key, source in (("create_time", "createTime"), ("target", "target"), ("verb", "verb")):
        value = meta.get(source)
        if isinstance(value, str) and value:
            fields[key] = value
    if operation.get("done") is True:
        fields["state"] = "done"
    elif meta.get("requestedCancellation") is True or meta.get("cancelRequested") is True:
        fields["state"] = "cancel_requested"
    else:
        fields["state"] = "running"
    return fields


def age_text(created: object, now: datetime) -> str:
    """``3d 4h``, ``2h 5m``, ``12m``, ``40s``; empty when the time is unknown."""
    when = _parse_time(created)
    if when is None:
        return ""
    seconds = max(0, int((now - when).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def _last(path: object) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if path else ""


def running_table(
    records: Iterable[Mapping[str, Any]], *, now: datetime | None = None, limit: int = 50
) -> Table:
    """ "What is running": per operation its id, location, verb, target, age and state. Takes
    report records (``name`` plus :func:`listing_fields`); shows at most ``limit`` rows."""
    now = now or datetime.now(UTC)
    table = Table(title="what the selection holds", title_justify="left")
    table.add_column("operation", overflow="fold")
    table.add_column("location", overflow="fold")
    table.add_column("verb", overflow="fold")
    table.add_column("target", overflow="fold")
    table.add_column("age", justify="right", no_wrap=True)
    table.add_column("state", overflow="fold")
    shown = more = 0
    for record in records:
        if record.get("outcome") == "invalid":
            continue
        if shown >= limit:
            more += 1
            continue
        name = str(record.get("name", ""))
        location = _LOCATION.search(name)
        table.add_row(
            _last(name),
            location.group(1) if location else "",
            str(record.get("verb", "")),
            _last(record.get("target")),
            age_text(record.get("create_time"), now),
            str(record.get("state", "")),
        )
        shown += 1
    if more:
        table.caption = f"… and {more} more (the report has every one)"
    return table


def places_touched(names: Iterable[str]) -> dict[str, int]:
    """How many names per project/location (``projects/p/locations/l``), for the prompt and the
    report. At most 1000 places are kept; the rest are counted under ``other``."""
    places: dict[str, int] = {}
    for name in names:
        count_place(places, name)
    return places


def count_place(places: dict[str, int], name: str) -> None:
    """Count one name in ``places`` (see :func:`places_touched`)."""
    match = _PLACE.match(name)
    place = match.group(1) if match else "other"
    if place not in places and len(places) >= _PLACES_KEPT:
        place = "other"
    places[place] = places.get(place, 0) + 1
