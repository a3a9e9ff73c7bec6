"""Scripted worlds for the fake server: the demo's, and building blocks for tests."""

from __future__ import annotations

import random

from bulkcancel.testing._model import Behavior, Faults, ParentMode
from bulkcancel.testing._server import FakeOperationsServer

__all__ = ["DEMO_LOCATIONS", "demo_scenario"]

DEMO_LOCATIONS = ("us-central1", "europe-west1", "asia-east1")
_MIX = (
    (Behavior.CANCELS, 0.80),
    (Behavior.COMPLETES_ANYWAY, 0.07),
    (Behavior.FAILS_ANYWAY, 0.03),
    (Behavior.NEVER, 0.03),
    (Behavior.ALREADY_DONE, 0.04),
    (Behavior.NOT_CANCELLABLE, 0.03),
)


def demo_scenario(
    seed: int = 0, *, per_location: int = 400, faults: bool = True
) -> tuple[FakeOperationsServer, dict[str, str]]:
    """A realistic bad day: ``3 * per_location`` operations over three locations of one
    project with a mix of behaviours, a legacy service whose cancel answers 501, one whose
    ``:cancel`` is not routed at all, a locked project, names that do not exist, a few
    malformed lines, and a sprinkle of 429s, 503s and resets.

    Returns the server and, per input line, the outcome bulkcancel must report.
    """
    rng = random.Random(seed)  # noqa: S311 - a scenario, not security
    server = FakeOperationsServer()
    expected: dict[str, str] = {}
    behaviors = [b for b, _ in _MIX]
    weights = [w for _, w in _MIX]
    for location in DEMO_LOCATIONS:
        parent = f"projects/demo-shop/locations/{location}"
        for i in range(per_location):
            behavior = rng.choices(behaviors, weights)[0]
            name = f"{parent}/operations/operation-{seed}-{location}-{i:05d}"
            server.add_operation(
                name,
                behavior,
                cancel_delay=rng.uniform(0.0, 1.5),
                age=rng.uniform(60, 86_400),
                target=rng.choice(("prod", "staging", "canary")),
                verb=rng.choice(("deploy", "render", "verify")),
            )
    for parent, mode, count in (
        ("projects/demo-legacy/locations/us-east1", ParentMode.UNSUPPORTED, 30),
        ("projects/demo-workflows/locations/us-east1", ParentMode.UNROUTED, 20),
        ("projects/demo-locked/locations/us-central1", ParentMode.DENIED, 10),
    ):
        server.set_mode(parent, mode)
        for i in range(count):
            server.add_operation(f"{parent}/operations/operation-{i:05d}", Behavior.CANCELS)
    expected.update(server.expected())
    for i in range(10):
        name = f"projects/demo-shop/locations/us-central1/operations/expired-{i:03d}"
        expected[name] = "not_found"
    for line in (
        "projects/demo-shop/locations/us-central1/operations/../../../secrets",
        "projects/demo-shop/locations/us-central1/operations/op?alt=media",
        "https://evil.example/v1/projects/x/locations/y/operations/z",
    ):
        expected[line] = "invalid"
    if faults:
        server.faults = Faults(
            throttle=0.01, throttle_hinted=0.005, unavailable=0.01, reset=0.003, seed=seed
        )
    names = list(expected)
    rng.shuffle(names)
    return server, {name: expected[name] for name in names}
