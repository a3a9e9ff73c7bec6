"""Name validation: every rejected class of the contract, and properties over arbitrary input."""

from __future__ import annotations

import posixpath
import string
from urllib.parse import urljoin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from bulkcancel._names import (
    ANY_SHAPE,
    DEFAULT_RULES,
    MAX_NAME_LENGTH,
    InvalidNameError,
    NameRules,
    in_our_spelling,
    location_of,
    parent_of,
    parse_parent,
    quota_key,
    shard_of,
)

GOOD = "projects/p-1/locations/us-central1/operations/operation-1700000000-abc_def"


def test_accepts_cloud_deploy_name_and_strips_whitespace() -> None:
    assert DEFAULT_RULES.parse(f"  {GOOD}\n") == GOOD


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("/" + GOOD, "leading '/'"),
        ("https://evil.example/" + GOOD, "scheme"),
        ("//evil.example/" + GOOD, "leading '/'"),
        ("projects//locations/l/operations/o", "empty path segment"),
        ("projects/p/locations/./operations/o", "'.' path segment"),
        ("projects/p/locations/../operations/o", "'..' path segment"),
        ("projects/p/locations/l/operations/o%2F..", "'%'"),
        ("projects/p/locations/l/operations/o?alt=media", "'?'"),
        ("projects/p/locations/l/operations/o#frag", "'#'"),
        ("projects/p/locations/l/operations/o x", "whitespace"),
        ("projects/p/locations/l/operations/o\tx", "whitespace"),
        ("projects\\p/locations/l/operations/o", "backslash"),
        ("projects/p/locations/l/operations/o:cancel", "':'"),
        ("projects/p/locations/l/operations", "operations/{id}"),
        ("projects/p/locations/l/jobs/j", "operations/{id}"),
        ("projects/p/operations/o", "does not match"),
        ("projects/p/locations/l/operations/o/", "empty path segment"),
        ("projects/p/locations/l/operations/ü", "character"),
    ],
)
def test_rejects_each_unsafe_class(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        DEFAULT_RULES.parse(raw)
    assert reason in info.value.reason


def test_shapes_are_configurable() -> None:
    dataproc = NameRules(("projects/*/regions/*/operations/*",))
    assert (
        dataproc.parse("projects/p/regions/r/operations/o") == "projects/p/regions/r/operations/o"
    )
    with pytest.raises(InvalidNameError):
        dataproc.parse(GOOD)
    assert ANY_SHAPE.parse("operations/o") == "operations/o"
    assert ANY_SHAPE.parse("projects/p/databases/(default)/operations/o")
    with pytest.raises(InvalidNameError):
        ANY_SHAPE.parse("projects/p/operations")


def test_parent_rules() -> None:
    assert parse_parent("projects/p/locations/-") == "projects/p/locations/-"
    for bad in ("projects/p/locations", GOOD, "projects/../locations/l", ""):
        with pytest.raises(InvalidNameError):
            parse_parent(bad)


def test_derived_facts() -> None:
    assert parent_of(GOOD) == "projects/p-1/locations/us-central1"
    assert parent_of("operations/x") == ""
    assert quota_key(GOOD) == "projects/p-1/locations/us-central1"
    assert quota_key("projects/p/regions/r/operations/o") == "projects/p/regions/r"
    assert quota_key("projects/p/operations/o") == "projects/p"
    assert quota_key("operations/o") == ""
    assert location_of(GOOD) == "us-central1"
    assert location_of("projects/p/operations/o") is None


def test_shard_is_stable_and_documented() -> None:
    # SHA-256 of the UTF-8 name, first 8 bytes big-endian, mod N: pinned so every process,
    # machine and release agrees.
    assert [shard_of(f"projects/p/locations/l/operations/{i}", 3) for i in range(6)] == [
        shard_of(f"projects/p/locations/l/operations/{i}", 3) for i in range(6)
    ]
    assert shard_of("a", 1) == 0
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"x").digest()[:8], "big") % 7
    assert shard_of("x", 7) == expected


_segment_alphabet = string.ascii_letters + string.digits + "._~()-/%?#:\\ @!$&'*+,;=\t\n" + "é"
names = st.text(alphabet=_segment_alphabet, max_size=60)
prefixed = st.builds(lambda tail: "projects/p/locations/l/operations/" + tail, names)


@settings(max_examples=400, deadline=None)
@given(st.one_of(names, prefixed))
def test_no_accepted_name_can_escape_its_path(raw: str) -> None:
    """Whatever the input, an accepted name yields exactly /{version}/{name}{suffix}, and no URL
    library resolves it anywhere else."""
    try:
        name = ANY_SHAPE.parse(raw)
    except InvalidNameError:
        return
    base = "https://svc.googleapis.com"
    for suffix in ("", ":cancel"):
        path = f"/v1/{name}{suffix}"
        url = base + path
        assert posixpath.normpath(path) == path
        assert URL(url).path == path  # yarl, normalising
        assert URL(url, encoded=True).raw_path == path
        assert urljoin(base + "/", path.lstrip("/")) == url
        assert URL(url).host == "svc.googleapis.com"
        assert URL(url).query_string == ""
        assert URL(url).fragment == ""


@settings(max_examples=200, deadline=None)
@given(names)
def test_validation_is_total(raw: str) -> None:
    """Any string is accepted unchanged (stripped) or rejected with a reason; never a crash."""
    try:
        parsed = DEFAULT_RULES.parse(raw)
    except InvalidNameError as exc:
        reason = exc.reason
        assert reason
    else:
        assert parsed == raw.strip()


def test_length_is_checked_before_anything_else() -> None:
    limit = MAX_NAME_LENGTH
    at_limit = "projects/p/locations/l/operations/" + "x" * (limit - 34)
    assert len(at_limit) == limit
    assert DEFAULT_RULES.parse(at_limit) == at_limit
    with pytest.raises(InvalidNameError, match=f"longer than {limit} characters"):
        DEFAULT_RULES.parse(at_limit + "x")
    # Even a line that is also malformed in every other way is refused for its length first.
    with pytest.raises(InvalidNameError, match="longer than"):
        parse_parent("https://evil/" + "%" * 10_000_000)


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\u202e", "\ufeff", "é"])
def test_control_and_non_ascii_characters_are_refused(char: str) -> None:
    with pytest.raises(InvalidNameError, match="contains"):
        DEFAULT_RULES.parse(f"projects/p/locations/l/operations/a{char}b")


@pytest.mark.parametrize(
    ("name", "ours", "spelled"),
    [
        # The server's number where we gave the ID, and the reverse: the same project.
        ("projects/123456789012/locations/l/operations/o", "projects/my-proj/locations/l",
         "projects/my-proj/locations/l/operations/o"),
        ("projects/my-proj/locations/l/operations/o", "projects/42/locations/l/operations/o",
         "projects/42/locations/l/operations/o"),
        # Two IDs, or two numbers, that differ are two projects: left as they are.
        ("projects/victim/locations/l/operations/o", "projects/my-proj/locations/l",
         "projects/victim/locations/l/operations/o"),
        ("projects/7/locations/l/operations/o", "projects/8/locations/l",
         "projects/7/locations/l/operations/o"),
        # Digits that are not ASCII are no project number; nor is a bare project.
        ("projects/\u0661\u0662/locations/l/operations/o", "projects/my-proj/locations/l",
         "projects/\u0661\u0662/locations/l/operations/o"),
        ("projects/123", "projects/my-proj/locations/l", "projects/123"),
        ("operations/o", "projects/my-proj", "operations/o"),
        ("projects/123/operations/o", "organizations/o/locations/l", "projects/123/operations/o"),
    ],
)  # fmt: skip
def test_a_project_spelled_by_number_is_ours(name: str, ours: str, spelled: str) -> None:
    assert in_our_spelling(name, ours) == spelled
