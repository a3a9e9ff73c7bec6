"""The URL bulkcancel builds is exactly the one Google's discovery documents prescribe.

``tests/data/discovery_cancel_methods.json`` is an excerpt of the discovery documents shipped in
google-api-python-client (every v1 ``operations.cancel`` mapped as ``{version}/{+name}:cancel``):
root URL, service path, flat path and the name pattern. For each one, a name matching the pattern
must validate and produce the flat path's URL, character for character.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bulkcancel._names import ANY_SHAPE
from tests._support import NoAuth

DATA = json.loads((Path(__file__).parent / "data" / "discovery_cancel_methods.json").read_text())
METHODS: list[dict[str, Any]] = DATA["methods"]


def sample_name(pattern: str) -> str:
    """A concrete name for a discovery pattern like ``^projects/[^/]+/operations/[^/]+$``."""
    body = pattern.removeprefix("^").removesuffix("$")
    counter = iter(range(1, 100))
    return re.sub(r"\[\^/\]\+|\.\*", lambda _: f"id-{next(counter)}", body)


def expected_url(method: dict[str, Any], name: str) -> str:
    """Fill the flat path's ``{xId}`` placeholders with the name's segments that the pattern
    leaves open, in order (literal segments such as ``locations/global`` stay as they are)."""
    body = method["pattern"].removeprefix("^").removesuffix("$")
    pattern = re.sub(r"\[\^/\]\+|\.\*", "*", body).split("/")
    ids = iter(seg for seg, pat in zip(name.split("/"), pattern, strict=True) if pat == "*")
    flat = re.sub(r"\{[^}]+\}", lambda _: next(ids), method["flatPath"])
    return str(method["rootUrl"]) + str(method["servicePath"]) + flat


def test_the_excerpt_covers_enough_apis() -> None:
    assert len({m["api"] for m in METHODS}) >= 20


@pytest.mark.parametrize("method", METHODS, ids=[m["id"] for m in METHODS])
def test_cancel_url_matches_flat_path(method: dict[str, Any]) -> None:
    from bulkcancel._client import OperationsClient
    from bulkcancel._limits import RateGovernor

    name = ANY_SHAPE.parse(sample_name(method["pattern"]))
    assert re.fullmatch(method["pattern"].strip("^$"), name)
    # The path prefix is the version, sometimes with more (dns/v1, v1/admin, v1/operations).
    version = method["path"].removesuffix("/{+name}:cancel")
    assert version != method["path"]
    endpoint = method["rootUrl"] + method["servicePath"].rstrip("/")
    client = OperationsClient(
        transport=None,  # type: ignore[arg-type]  # URL building only
        endpoint=endpoint,
        api_version=version,
        tokens=NoAuth(),
        governor=RateGovernor(1),
        concurrency=1,
    )
    if method["servicePath"]:
        # A service path already carries the version: bulkcancel's endpoint is the root.
        pytest.skip("service path holds the version")
    assert client.url(name + ":cancel") == expected_url(method, name)
