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
    """``bulkcancel fake-server``: script the fake from flags, serve it, print how to use it."""
    import shlex
    import sys

    from bulkcancel._errors import ConfigError
    from bulkcancel.testing import ParentMode, RequestRecord

    def pairs(flag: str, values: tuple[str, ...]) -> list[tuple[str, str]]:
        out = []
        for value in values:
            key, sep, setting = value.partition("=")
            if not sep or not key or not setting:
                raise ConfigError(f"--{flag} wants LOCATION=VALUE, not {value!r}")
            out.append((key, setting))
        return out

    parents = list(kw["parent"]) or ["projects/demo/locations/us-central1"]
    server = FakeOperationsServer(seed=kw["seed"])
    names: list[str] = []
    for parent in parents:
        names += populate(
            server, parent, kw["operations"], Behavior.CANCELS, cancel_delay=kw["cancel_delay"]
        )
    if kw.get("mix") is not None:
        rng = random.Random(kw["mix"])  # noqa: S311 - a scenario, not security
        kinds = [
            Behavior.CANCELS,
            Behavior.COMPLETES_ANYWAY,
            Behavior.FAILS_ANYWAY,
            Behavior.ALREADY_DONE,
            Behavior.NOT_CANCELLABLE,
        ]
        for name in names:
            server.add_operation(
                name, rng.choices(kinds, [6, 1, 1, 1, 1])[0], cancel_delay=kw["cancel_delay"]
            )
    rates: dict[str, float] = {}
    for location, rate in pairs("location-quota", kw["location_quota"]):
        try:
            rates[location] = float(rate)
        except ValueError:
            raise ConfigError(f"--location-quota {location}: {rate!r} is not a rate") from None
    try:
        server.personality(
            kw["personality"],
            rate=kw["quota"],
            window=kw["window"],
            background_share=kw["background_share"],
            location_rates=rates,
            seed=kw["seed"],
        )
    except ValueError as exc:
        raise ConfigError(f"--personality: {exc}") from None
    projects = sorted({"/".join(p.split("/")[:2]) for p in parents})
    for where, mode in pairs("location-mode", kw["location_mode"]):
        if mode not in set(ParentMode):
            known = ", ".join(ParentMode)
            raise ConfigError(f"--location-mode {where}: unknown mode {mode!r} (known: {known})")
        targets = [where] if where.startswith("projects/") else []
        targets += [f"{project}/locations/{where}" for project in projects if not targets]
        for target in targets:
            server.set_mode(target, mode)
    if kw.get("runaway"):
        rate, _, seconds = kw["runaway"].partition("/")
        try:
            for parent in parents:
                server.runaway(parent, rate=float(rate), duration=float(seconds))
        except ValueError as exc:
            raise ConfigError(f"--runaway wants RATE/SECONDS (20/10): {exc}") from None
    server.dash_listing = kw["dash_listing"]
    server.partial_success = kw["partial_success"]
    missing = [f"{parents[0]}/operations/missing-{i:06d}" for i in range(kw["missing"])]
    if kw.get("expected_out"):
        expected = server.expected() | {name: "not_found" for name in missing}
        await anyio.Path(kw["expected_out"]).write_text(json.dumps(expected, indent=0))
    server.latency = kw["latency"]
    server.latency_jitter = kw["latency_jitter"]
    if kw["token"]:
        server.valid_tokens = {kw["token"]}
    if kw["names_out"]:
        await anyio.Path(kw["names_out"]).write_text("\n".join(names + missing) + "\n")
    if kw["request_log"]:
        log = open(kw["request_log"], "a", encoding="utf-8")  # noqa: ASYNC230, SIM115 - tiny lines

        def write(record: RequestRecord) -> None:
            log.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")
            log.flush()

        server.on_record = write

    def ready(url: str) -> None:
        print(url, flush=True)
        auth = ["--token", kw["token"]] if kw["token"] else ["--anonymous"]
        command = ["bulkcancel", "cancel", "--endpoint", url, *auth]
        for parent in parents:
            command += ["--parent", parent]
        print(f"try: {shlex.join([*command, '--dry-run'])}", file=sys.stderr, flush=True)

    try:
        await serve_forever(server, kw["host"], kw["port"], on_ready=ready)
    finally:
        if kw["request_log"]:
            log.close()
    return 0
