"""``bulkcancel demo`` and ``bulkcancel fake-server``: the fake Operations API, used for real.

The demo runs the same code path as ``bulkcancel cancel`` against a scripted fake and then
checks every outcome against the script, so it doubles as an end-to-end self-test.
"""

from __future__ import annotations

import json
import random
from typing import Any

import anyio

from bulkcancel import _ui
from bulkcancel._app import drive
from bulkcancel._config import RunConfig
from bulkcancel._models import OperationResult
from bulkcancel.testing import (
    Behavior,
    FakeOperationsServer,
    demo_scenario,
    populate,
    serve_forever,
)


async def run_demo(seed: int, quiet: bool) -> int:
    server, expected = demo_scenario(seed)
    got: dict[str, str] = {}

    def observe(result: OperationResult) -> None:
        got[result.name] = result.outcome.value

    async with server.serve() as base_url:
        _ui.info(
            f"demo: a fake Operations API on {base_url} with {len(expected)} operations over "
            "several locations, some unsupported, some finishing anyway, some never finishing"
        )
        config = RunConfig(
            endpoint=base_url,
            anonymous=True,
            rate=800.0,
            concurrency=32,
            deadline=4.0,
            poll_initial=0.25,
            poll_max=1.0,
            grace=2.0,
            seed=seed,
        )
        options = _ui.Options(yes=True, quiet=quiet)
        await drive(config, list(expected), options, observe=observe)
    mismatches = [
        (name, want, got.get(name, "missing"))
        for name, want in expected.items()
        if got.get(name) != want
    ]
    accepted_twice = [op for op in server.operations() if op.accepted_cancels > 1]
    if mismatches or accepted_twice:
        for name, want, have in mismatches[:20]:
            _ui.error(f"{name}: expected {want}, got {have}")
        for op in accepted_twice[:20]:
            _ui.error(f"{op.name}: received {op.accepted_cancels} accepted cancels")
        _ui.error(f"demo FAILED: {len(mismatches)} outcome(s) differ from the script")
        return 1
    _ui.info(f"demo OK: all {len(expected)} outcomes match what the fake server scripted")
    return 0


async def run_fake_server(kw: dict[str, Any]) -> int:
    server = FakeOperationsServer()
    names = populate(
        server,
        kw["parent"],
        kw["operations"],
        Behavior.CANCELS,
        cancel_delay=kw["cancel_delay"],
    )
    if kw.get("mix") is not None:
        rng = random.Random(kw["mix"])  # noqa: S311 - a scenario, not security
        kinds = [
            Behavior.CANCELS,
            Behavior.COMPLETES_ANYWAY,
            Behavior.ALREADY_DONE,
            Behavior.NOT_CANCELLABLE,
        ]
        for name in names:
            server.add_operation(
                name, rng.choices(kinds, [6, 2, 1, 1])[0], cancel_delay=kw["cancel_delay"]
            )
    if kw.get("expected_out"):
        text = json.dumps(server.expected(), indent=0)
        await anyio.Path(kw["expected_out"]).write_text(text)
    if kw["quota"]:
        server.quota(kw["quota"])
    server.latency = kw["latency"]
    if kw["token"]:
        server.valid_tokens = {kw["token"]}
    if kw["names_out"]:
        await anyio.Path(kw["names_out"]).write_text("\n".join(names) + "\n")

    def ready(url: str) -> None:
        print(url, flush=True)

    await serve_forever(server, kw["host"], kw["port"], on_ready=ready)
    return 0
