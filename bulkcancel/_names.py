"""Operation and parent names: validation, shapes, and the few facts derived from a name.

A name is a *relative resource name* (AIP-122): ``/``-separated segments ending in
``operations/{id}``. It is pasted verbatim into a URL path, so validation is strict and
character-based: a name either consists only of characters that no URL library will ever
re-interpret, or it is rejected. We never percent-encode and never let a library "resolve" a path.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

#: Characters a segment may hold: RFC 3986 unreserved characters plus parentheses (Firestore's
#: ``(default)`` database). Nothing here is a delimiter in a path, query or fragment, and none of
#: them is changed by URL normalisation, so ``/{version}/{name}`` reaches the server unchanged.
_SEGMENT_CHARS = "A-Za-z0-9._~()\\-"
_BAD_CHAR = re.compile(f"[^{_SEGMENT_CHARS}/]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")

#: Longest name or parent accepted, in characters. Real operation names are about 100
#: characters; a name past this is an input mistake (or a hostile listing), and sending it would
#: put a URL of that size on the wire and into the journal several times over.
MAX_NAME_LENGTH = 1024

#: Cloud Deploy's shape, the default service.
CLOUD_DEPLOY_PATTERNS: tuple[str, ...] = ("projects/*/locations/*/operations/*",)


class InvalidNameError(ValueError):
    """The input is not a name we may send. ``reason`` is a short phrase for the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(char: str) -> str:
    if char.isspace():
        return "whitespace"
    if char == "\\":
        return "a backslash"
    if char in "%?#":
        return f"'{char}'"
    if char == ":":
        return "':' (a scheme, port or custom verb)"
    return f"the character {char!r}"


def _check_segments(text: str) -> list[str]:
    """Shared rules for operation and parent names; returns the segments.

    Length first, then characters, before any other work on the text: whatever else a name
    may be, it is short and made of safe characters.
    """
    if len(text) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"longer than {MAX_NAME_LENGTH} characters ({len(text)})")
    bad = _BAD_CHAR.search(text)
    if bad is not None:
        # The most telling phrase for the offending character: a URL is named as such.
        if text.startswith("/"):
            raise InvalidNameError("leading '/' (give a relative resource name)")
        if _SCHEME.match(text):
            raise InvalidNameError("a scheme or host; give a resource name, not a URL")
        raise InvalidNameError(f"contains {_describe(bad.group())}")
    if not text:
        raise InvalidNameError("empty name")
    if text.startswith("/"):
        raise InvalidNameError("leading '/' (give a relative resource name)")
    segments = text.split("/")
    for segment in segments:
        if not segment:
            raise InvalidNameError("empty path segment")
        if segment in (".", ".."):
            raise InvalidNameError(f"'{segment}' path segment")
    return segments


@dataclass(frozen=True, slots=True)
class NameRules:
    """Which operation name shapes a run accepts.

    ``patterns`` use ``*`` for exactly one segment, e.g. ``projects/*/locations/*/operations/*``.
    ``None`` accepts any shape ending in ``operations/{id}``.
    """

    patterns: tuple[str, ...] | None = CLOUD_DEPLOY_PATTERNS

    def _matches(self, segments: list[str]) -> bool:
        if self.patterns is None:
            return True
        shapes = _shapes(self.patterns)
        return any(
            len(parts) == len(segments)
            and all(p is None or p == s for p, s in zip(parts, segments, strict=True))
            for parts in shapes
        )

    def parse(self, raw: str) -> str:
        """Return the validated name (surrounding whitespace stripped) or raise InvalidNameError."""
        text = raw.strip()
        segments = _check_segments(text)
        # Not "collection/id pairs": singleton resources (AIP-156) such as Vertex AI's
        # .../ragEngineConfig/operations/{id} have an odd number of segments.
        if len(segments) < 2 or segments[-2] != "operations":
            raise InvalidNameError("does not end in operations/{id}")
        if not self._matches(segments):
            expected = " or ".join(self.patterns or ())
            raise InvalidNameError(f"does not match {expected}")
        return text


@functools.lru_cache(maxsize=64)
def _shapes(patterns: tuple[str, ...]) -> tuple[tuple[str | None, ...], ...]:
    """Each pattern's segments, ``*`` as None: split once per rule set, not once per name."""
    return tuple(tuple(None if p == "*" else p for p in pattern.split("/")) for pattern in patterns)


DEFAULT_RULES = NameRules()
ANY_SHAPE = NameRules(patterns=None)


def parse_parent(raw: str) -> str:
    """Validate a parent to list operations under (``projects/P/locations/L`` and the like)."""
    text = raw.strip()
    segments = _check_segments(text)
    if len(segments) % 2:
        raise InvalidNameError("a parent is collection/id pairs, e.g. projects/P/locations/L")
    if segments[-2] == "operations":
        raise InvalidNameError("that is an operation name, not a parent")
    return text


def parent_of(name: str) -> str:
    """The collection owner a name lives under: what ``list`` is called on. ``""`` at the root."""
    head, _, _ = name.rpartition("/operations/")
    return head


def in_our_spelling(name: str, ours: str) -> str:
    """``name`` as the server gave it, with its project spelled as in ``ours`` (a name or a
    parent we sent) when the server spells the one project the other way: its number where we
    gave its ID, or the other way round. Some APIs answer and list with the project number
    (``projects/123456789012/...``) whatever the request said; GCP project IDs start with a
    letter, so an all-digit project segment is always a number, and an ID against a number is
    the same project named twice. Anything else comes back unchanged (two IDs, or two numbers,
    that differ are two projects)."""
    if not (name.startswith("projects/") and ours.startswith("projects/")):
        return name
    theirs, _, rest = name[len("projects/") :].partition("/")
    mine, _, _ = ours[len("projects/") :].partition("/")
    if not (theirs and mine and rest) or _is_number(theirs) == _is_number(mine):
        return name
    return f"projects/{mine}/{rest}"


def _is_number(segment: str) -> bool:
    return segment.isascii() and segment.isdigit()


def quota_key(name: str) -> str:
    """Where a request's quota is counted: per project and region, as Google meters it.

    ``projects/P/locations/L/...`` and ``projects/P/regions/R/...`` give the first four segments;
    other shapes give their first two (``projects/P``), or ``""`` for a root ``operations/x``.
    """
    segments = name.split("/", 4)
    if len(segments) >= 4 and segments[0] == "projects" and segments[2] in ("locations", "regions"):
        return "/".join(segments[:4])
    if len(segments) >= 3 and segments[0] != "operations":
        return "/".join(segments[:2])
    return ""


def location_of(name: str) -> str | None:
    """The ``locations/{L}`` value of a name, if it has one."""
    segments = name.split("/")
    for i in range(0, len(segments) - 1, 2):
        if segments[i] == "locations":
            return segments[i + 1]
    return None


def shard_of(name: str, count: int) -> int:
    """Stable shard index of a name: SHA-256 of its UTF-8 bytes, first 8 bytes big-endian, mod N.

    The same in every process, every Python version and every machine (unlike ``hash()``).
    """
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count
