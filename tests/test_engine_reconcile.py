"""GET or list: ``prefer_list`` weighs cost per settled operation in the resource that binds."""

from __future__ import annotations

from bulkcancel._reconcile import GET_MARGIN, Costs, Parent, Pending, prefer_list


def parent_with(members: int, *, pass_pages: int, page_seconds: float, done: float) -> Parent:
    parent = Parent("projects/p/locations/l")
    for i in range(members):
        name = f"{parent.name}/operations/{i}"
        parent.members[name] = Pending(name, parent.name, None, True, 10.0, 0.5, 0.5)
    parent.full_pass_pages = pass_pages
    parent.pages = pass_pages
    parent.page_seconds = page_seconds
    looks = 100
    parent.looks, parent.finished_looks = looks, round(done * looks)
    return parent


def costs(get_seconds: float) -> Costs:
    measured = Costs()
    measured.record_get(get_seconds)
    return measured


def choose(parent: Parent, due: int, *, binds: bool, pending: bool, get_seconds: float) -> bool:
    return prefer_list(
        parent,
        due,
        rate_binds=binds,
        cancels_pending=pending,
        concurrency=64,
        costs=costs(get_seconds),
    )


def test_a_trickle_of_due_operations_is_listed_when_the_pages_settle_the_rest_too() -> None:
    # 10 pages of 1000; 1 due now, 999 more members that earlier pages showed finished.
    parent = parent_with(1000, pass_pages=10, page_seconds=0.025, done=1.0)
    for binds, pending in ((True, True), (False, True)):
        assert choose(parent, 1, binds=binds, pending=pending, get_seconds=0.01)


def test_gets_win_when_the_pages_would_settle_only_the_due_ones() -> None:
    parent = parent_with(1000, pass_pages=10, page_seconds=0.025, done=0.0)
    assert not choose(parent, 5, binds=True, pending=True, get_seconds=0.01)  # 10 calls > 5
    assert not choose(parent, 5, binds=False, pending=True, get_seconds=0.01)  # 0.25 s > 0.05 s


def test_calls_decide_when_the_rate_binds_however_fast_the_gets() -> None:
    parent = parent_with(300, pass_pages=10, page_seconds=0.5, done=0.0)
    assert choose(parent, 20, binds=True, pending=False, get_seconds=0.001)  # 10 calls < 20
    assert not choose(parent, 20, binds=False, pending=False, get_seconds=0.001)


def test_at_the_tail_gets_must_win_by_the_margin() -> None:
    parent = parent_with(640, pass_pages=4, page_seconds=0.01, done=1.0)
    rounds = 640 // 64
    # Listing costs 0.04 s; GETs for all 640 take 10 rounds.
    just_faster = 0.04 / rounds * 0.9  # GETs a little faster than the walk: still a sweep
    clearly_faster = 0.04 / rounds / (GET_MARGIN * 1.1)
    assert choose(parent, 640, binds=False, pending=False, get_seconds=just_faster)
    assert not choose(parent, 640, binds=False, pending=False, get_seconds=clearly_faster)
