"""The compact seen-names table agrees with a plain set, through every growth."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bulkcancel._seen import SeenNames


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=12), max_size=300))
def test_agrees_with_a_set(names: list[str]) -> None:
    seen = SeenNames()
    plain: set[str] = set()
    for name in names:
        assert seen.add(name) is (name not in plain)
        plain.add(name)
        assert name in seen
    assert len(seen) == len(plain)


def test_grows_past_its_first_table_and_keeps_every_name() -> None:
    seen = SeenNames()
    names = [f"projects/p/locations/l/operations/op-{i}" for i in range(20_000)]
    assert all(seen.add(name) for name in names)
    assert not any(seen.add(name) for name in names)
    assert all(name in seen for name in names)
    assert "projects/p/locations/l/operations/other" not in seen
    assert len(seen) == 20_000
