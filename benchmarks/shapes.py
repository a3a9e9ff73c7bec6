"""Quota shapes the project's fake does not model, on a server of their own.

Sessions 31-33 held the pacer against Operations servers written from the wire facts alone
(``../shared/WIRE.md``), not from the project's fake: this is that server, kept so their
figures can be run again. It is an aiohttp app on loopback that checks its quota before it
looks at the operation, scripts each operation's outcome (about 5% missing, 7% already done,
the rest cancellable) and logs every request; the bulkcancel CLI is run against it (``--rate
200 --concurrency 32``, names from a file) and the run is scored as the quota matrix scores
one: drain (first to last request, as the server saw it) over a floor (the best schedule at
the quota for what the server let through, never under accepted / 200), the share of
requests refused, and whether every outcome was the one scripted.

Shapes: reads and writes on quotas of their own (each 429 naming its quota, or stating its
value); a sliding log; a bucket whose refill halves partway; over quota queued, never refused;
over quota answered 503; a limit stated four times over or under what is enforced; one quota
over three regions (ErrorInfo saying so, or bare 429s); requests in flight capped (a
concurrency limit, refusals at once); a leaky bucket with a queue that refuses what overflows
it (nginx's ``limit_req``, 429 or 503); load shed at random in proportion to the excess rate.

    python -m benchmarks.shapes conc8 nginx --rounds 3
    python -m benchmarks.shapes all --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from aiohttp import web

from benchmarks._common import env, median, save, table

TOLD = 200.0  # the CLI's --rate
CONCURRENCY = 32  # the CLI's --concurrency
PROJECT = "projects/shapes"


class Bucket:
    """A token bucket of ``burst`` tokens refilled at ``rate``/s, or at ``rate2`` from
    ``change_after`` seconds after the server's first request."""

    def __init__(
        self,
        rate: float,
        burst: float,
        rate2: float | None = None,
        change_after: float = 0.0,
        t0: float | None = None,
    ) -> None:
        self.rate, self.burst, self.rate2, self.change_after = rate, burst, rate2, change_after
        self.t0 = t0
        self.tokens, self.stamp = burst, -1.0
        self.admitted: list[float] = []

    def rate_at(self, t: float) -> float:
        if self.rate2 is not None and self.t0 is not None and t >= self.t0 + self.change_after:
            return self.rate2
        return self.rate

    def _refill(self, t: float) -> None:
        if self.stamp < 0:
            self.stamp = t
            return
        a, b = self.stamp, t
        change = self.t0 + self.change_after if self.t0 is not None else None
        if self.rate2 is not None and change is not None and a < change < b:
            self.tokens += (change - a) * self.rate + (b - change) * self.rate2
        else:
            self.tokens += (b - a) * self.rate_at(a)
        self.tokens = min(self.burst, self.tokens)
        self.stamp = t

    def admit(self, t: float) -> bool:
        self._refill(t)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.admitted.append(t)
            return True
        return False

    def reserve(self, t: float) -> float:
        """Never refuse: when this request is served (first come, first served; tokens below
        zero are the queue)."""
        self._refill(t)
        self.tokens -= 1.0
        served = t if self.tokens >= 0 else t - self.tokens / self.rate
        self.admitted.append(served)
        return served

    def oracle(self, count: int, first: float) -> float:
        """Seconds the best client told ``TOLD``/s needs for ``count`` accepts from ``first``:
        each request sent as soon as a token is there."""
        shadow = Bucket(self.rate, self.burst, self.rate2, self.change_after, self.t0)
        at = last = first
        for _ in range(count):
            while not shadow.admit(at):
                shadow._refill(at)
                at += max((1.0 - shadow.tokens) / shadow.rate_at(at), 1e-4)
            last = at
            at += 1.0 / TOLD
        return last - first


class SlidingLog:
    """At most ``n`` requests admitted in any trailing ``window`` seconds."""

    def __init__(self, n: int, window: float) -> None:
        self.n, self.window = n, window
        self.log: deque[float] = deque()
        self.admitted: list[float] = []

    def admit(self, t: float) -> bool:
        while self.log and self.log[0] <= t - self.window:
            self.log.popleft()
        if len(self.log) < self.n:
            self.log.append(t)
            self.admitted.append(t)
            return True
        return False

    def oracle(self, count: int, first: float) -> float:
        shadow = SlidingLog(self.n, self.window)
        at = last = first
        for _ in range(count):
            if not shadow.admit(at):
                at = shadow.log[0] + self.window + 1e-9
                shadow.admit(at)
            last = at
            at += 1.0 / TOLD
        return last - first


@dataclass(frozen=True)
class Shape:
    label: str
    limiter: str  # bucket | log | inflight | nginx | shed
    rate: float = 40.0
    burst: float | None = None  # a bucket's (default: a tenth of a second); nginx's queue
    keying: str = "location"  # location | rw-location (reads and writes apart) | project
    rates_by_class: dict[str, float] | None = None  # rw-location: {"write": r, "read": r}
    log_n: int = 80
    log_window: float = 2.0
    rate2: float | None = None
    change_after: float = 0.0
    refusal: str = "429"  # 429 | 503 | queue
    stated: float | None = None  # quota_limit_value per minute; -1: each class's; -2: current
    errorinfo: bool = True  # False: a bare 429 (status and message only)
    quota_location: str | None = None  # default: the request's region
    locations: dict[str, int] = field(default_factory=lambda: {"us-central1": 250})
    cli_extra: tuple[str, ...] = ()
    inflight: int = 0  # inflight: requests in flight per key past which it refuses
    latency: float = 0.0  # inflight: seconds an accepted request takes


RW = {"write": 20.0, "read": 60.0}
THREE = {"us-central1": 250, "us-east1": 25, "europe-west1": 25}
SHAPES: dict[str, Shape] = {
    "rw": Shape("reads 60/s, writes 20/s, each 429 naming its quota", "bucket",
                keying="rw-location", rates_by_class=RW),
    "rw-get": Shape("reads 60/s, writes 20/s, --reconcile get", "bucket", keying="rw-location",
                    rates_by_class=RW, cli_extra=("--reconcile", "get")),
    "rw-get-readslow": Shape("writes 60/s, reads 20/s, --reconcile get", "bucket",
                             keying="rw-location", rates_by_class={"write": 60.0, "read": 20.0},
                             cli_extra=("--reconcile", "get")),
    "rw-stated": Shape("reads and writes apart, each 429 stating its value", "bucket",
                       keying="rw-location", rates_by_class=RW, stated=-1),
    "log": Shape("sliding log, 80 in any trailing 2 s", "log"),
    "queue": Shape("over quota queued, never refused", "bucket", refusal="queue"),
    "halves": Shape("bucket 50/s halving to 25/s 3 s in, no value stated", "bucket",
                    rate=50.0, rate2=25.0, change_after=3.0),
    "halves-stated": Shape("bucket 50/s halving to 25/s 3 s in, the value stated", "bucket",
                           rate=50.0, rate2=25.0, change_after=3.0, stated=-2),
    "stated-high": Shape("40/s enforced, 160/s stated", "bucket", stated=9600),
    "stated-low": Shape("40/s enforced, 10/s stated", "bucket", stated=600),
    "project3": Shape("one project quota over 3 regions (250/25/25), global stated", "bucket",
                      keying="project", quota_location="global", locations=THREE),
    "project3-bare": Shape("one project quota over 3 regions (250/25/25), bare 429s",
                           "bucket", keying="project", errorinfo=False, locations=THREE),
    "503": Shape("over quota answered 503, not 429", "bucket", refusal="503"),
    "control-stated": Shape("control: bucket 40/s, value stated", "bucket", stated=-2),
    "control": Shape("control: bucket 40/s, no value", "bucket"),
    "conc8": Shape("8 in flight per region, 0.1 s each (80/s), bare 429", "inflight",
                   inflight=8, latency=0.1, errorinfo=False),
    "conc4-slow": Shape("4 in flight per region, 0.2 s each (20/s), bare 429", "inflight",
                        inflight=4, latency=0.2, errorinfo=False),
    "conc16-3": Shape("16 in flight per project over 3 regions, 0.25 s each, bare", "inflight",
                      inflight=16, latency=0.25, errorinfo=False, keying="project",
                      locations={"us-central1": 150, "us-east1": 100, "europe-west1": 50}),
    "nginx": Shape("leaky bucket 40/s, 20 queued, then 429 (nginx limit_req)", "nginx",
                   burst=20, errorinfo=False),
    "nginx-503": Shape("leaky bucket 40/s, 20 queued, then 503 (nginx's default)", "nginx",
                       burst=20, errorinfo=False, refusal="503"),
    "shed": Shape("load shed at random: refused 1 - 40/rate of the last second, bare", "shed",
                  errorinfo=False),
}  # fmt: skip


class Server:
    """One run's server: the operations, their scripted outcomes, the quota, the log."""

    def __init__(self, shape: Shape, seed: int) -> None:
        self.shape = shape
        rng = random.Random(seed)
        self.ops: dict[str, dict[str, Any]] = {}
        self.expected: dict[str, str] = {}
        self.names: list[str] = []
        for loc, count in shape.locations.items():
            for i in range(count):
                name = f"{PROJECT}/locations/{loc}/operations/op-{seed}-{i:04d}"
                self.names.append(name)
                draw = rng.random()
                if draw < 0.05:
                    self.expected[name] = "not_found"
                    continue
                target = f"{PROJECT}/locations/{loc}/targets/t"
                metadata = {"@type": "type.googleapis.com/google.cloud.deploy.v1.OperationMetadata",
                            "verb": "create", "target": target}  # fmt: skip
                op: dict[str, Any] = {"name": name, "metadata": metadata}
                if draw < 0.12:
                    op["done"] = True
                    op["response"] = {"@type": "type.googleapis.com/google.protobuf.Empty"}
                    self.expected[name] = "completed_anyway"
                else:
                    self.expected[name] = "cancelled"
                self.ops[name] = op
        self.limiters: dict[str, Bucket | SlidingLog] = {}
        self.in_flight: dict[str, int] = {}
        self.queue_free = 0.0  # nginx: when the queue serves its next request
        self.arrivals: deque[float] = deque()  # shed: the last second's arrivals
        self.shed_rng = random.Random(seed + 1000)
        self.accepted = 0
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # (tests: their own)
        self.t0: float | None = None
        self.log: list[dict[str, Any]] = []

    def key_of(self, kind: str, loc: str) -> tuple[str, str]:
        cls = "write" if kind == "cancel" else "read"
        if self.shape.keying == "project":
            return "project", cls
        if self.shape.keying == "rw-location":
            return f"{loc}/{cls}", cls
        return loc, cls

    def limiter(self, key: str, cls: str) -> Bucket | SlidingLog:
        lim = self.limiters.get(key)
        if lim is None:
            shape = self.shape
            if shape.limiter == "log":
                lim = SlidingLog(shape.log_n, shape.log_window)
            else:
                rate = shape.rates_by_class[cls] if shape.rates_by_class else shape.rate
                burst = shape.burst if shape.burst is not None else max(1.0, rate / 10)
                lim = Bucket(rate, burst, shape.rate2, shape.change_after, self.t0)
            self.limiters[key] = lim
        return lim

    def refusal(self, cls: str, loc: str, key: str) -> web.Response:
        shape = self.shape
        if shape.refusal == "503":
            body = {"error": {"code": 503, "message": "The service is currently unavailable.",
                              "status": "UNAVAILABLE"}}  # fmt: skip
            return web.json_response(body, status=503)
        err: dict[str, Any] = {
            "code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": "Quota exceeded for quota metric 'API requests' and limit "
                       "'API requests per minute' of service 'clouddeploy.googleapis.com'.",
        }  # fmt: skip
        if shape.errorinfo:
            metric = "clouddeploy.googleapis.com/api_requests"
            limit = "ApiRequestsPerMinutePerProjectPerRegion"
            if shape.keying == "project":
                limit = "ApiRequestsPerMinutePerProject"
            elif shape.keying == "rw-location":
                metric = f"clouddeploy.googleapis.com/{cls}_requests"
                limit = f"{cls.capitalize()}RequestsPerMinutePerProjectPerRegion"
            metadata = {"quota_metric": metric, "quota_limit": limit,
                        "quota_location": shape.quota_location or loc,
                        "consumer": "projects/123456",
                        "service": "clouddeploy.googleapis.com"}  # fmt: skip
            if shape.stated == -2:  # the truth, as enforced now
                lim = self.limiters[key]
                assert isinstance(lim, Bucket)
                metadata["quota_limit_value"] = str(round(lim.rate_at(time.monotonic()) * 60))
            elif shape.stated == -1 and shape.rates_by_class:
                metadata["quota_limit_value"] = str(round(shape.rates_by_class[cls] * 60))
            elif shape.stated is not None:
                metadata["quota_limit_value"] = str(round(shape.stated))
            err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                               "reason": "RATE_LIMIT_EXCEEDED", "domain": "googleapis.com",
                               "metadata": metadata}]  # fmt: skip
        return web.json_response({"error": err}, status=429)

    async def admit(self, key: str, cls: str, now: float, entry: dict[str, Any]) -> bool:
        """The quota's word on one request (waiting where the shape queues or holds it)."""
        shape = self.shape
        if shape.limiter == "inflight":
            held = self.in_flight.get(key, 0)
            if held >= shape.inflight:
                return False
            self.in_flight[key] = held + 1
            try:
                await self.sleep(shape.latency)
            finally:
                self.in_flight[key] -= 1
        elif shape.limiter == "nginx":
            turn = max(now, self.queue_free)
            if (turn - now) * shape.rate > (shape.burst or 0.0) + 1e-6:
                return False
            self.queue_free = turn + 1.0 / shape.rate
            entry["served"] = turn - (self.t0 or now)
            await self.sleep(turn - now)
        elif shape.limiter == "shed":
            self.arrivals.append(now)
            while self.arrivals[0] < now - 1.0:
                self.arrivals.popleft()
            if self.shed_rng.random() < 1.0 - shape.rate / len(self.arrivals):
                return False
        elif shape.refusal == "queue":
            lim = self.limiter(key, cls)
            assert isinstance(lim, Bucket)
            served = lim.reserve(now)
            entry["served"] = served - (self.t0 or now)
            await self.sleep(served - now)
        elif not self.limiter(key, cls).admit(now):
            return False
        self.accepted += 1
        return True

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        kind, name = "", request.path.removeprefix("/v1/")
        parts = name.split("/")
        if request.method == "POST" and name.endswith(":cancel"):
            kind, name = "cancel", name.removesuffix(":cancel")
        elif request.method == "GET" and len(parts) in (5, 6) and parts[4] == "operations":
            kind = "get" if len(parts) == 6 else "list"
        if not kind or parts[:1] != ["projects"] or parts[2:3] != ["locations"]:
            return web.Response(status=404, text="<html>not found</html>", content_type="text/html")
        loc = parts[3]
        key, cls = self.key_of(kind, loc)
        entry: dict[str, Any] = {"t": now - self.t0, "kind": kind, "key": key}
        self.log.append(entry)
        entry["ok"] = await self.admit(key, cls, now, entry)
        if not entry["ok"]:
            return self.refusal(cls, loc, key)
        return self.answer(kind, name)

    def answer(self, kind: str, name: str) -> web.Response:
        if kind == "list":
            ops = [op for n, op in self.ops.items() if n.startswith(name + "/")]
            return web.json_response({"operations": ops})
        op = self.ops.get(name)
        if op is None:
            body = {"error": {"code": 404, "message": f"Operation {name} not found.",
                              "status": "NOT_FOUND"}}  # fmt: skip
            return web.json_response(body, status=404)
        if kind == "get":
            return web.json_response(op)
        if op.get("done"):
            body = {"error": {"code": 400, "status": "FAILED_PRECONDITION",
                              "message": "Operation has already completed."}}  # fmt: skip
            return web.json_response(body, status=400)
        op["done"] = True
        op["error"] = {"code": 1, "message": "Operation was cancelled."}
        op["metadata"]["requestedCancellation"] = True
        return web.json_response({})

    def floor(self) -> float:
        """The least time the shape allows for what it accepted (never under accepted /
        ``TOLD``): per key, the best schedule at its quota; requests in flight capped, the
        accepts of the busiest key times their latency over the cap."""
        shape, least = self.shape, self.accepted / TOLD
        if shape.limiter in ("nginx", "shed"):
            return max(least, self.accepted / shape.rate)
        if shape.limiter == "inflight":
            per_key: dict[str, int] = {}
            for entry in self.log:
                per_key[entry["key"]] = per_key.get(entry["key"], 0) + entry.get("ok", False)
            cap = min(shape.inflight, CONCURRENCY)
            return max(least, max(per_key.values()) * shape.latency / cap)
        spans = [least]
        for key, lim in self.limiters.items():
            if lim.admitted:
                first = min(e["t"] for e in self.log if e["key"] == key) + (self.t0 or 0.0)
                spans.append(lim.oracle(len(lim.admitted), first))
        return max(spans)


async def run_once(shape: Shape, seed: int, work: Path, cli: list[str]) -> dict[str, Any]:
    """One run of the CLI against a fresh server of this shape; its scores."""
    server = Server(shape, seed)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    names, report = work / f"names-{seed}.txt", work / f"report-{seed}.json"
    names.write_text("\n".join(server.names) + "\n")
    report.unlink(missing_ok=True)
    command = [*cli, "cancel", "--names-file", str(names), "--anonymous",
               "--endpoint", f"http://127.0.0.1:{port}", "--yes", "--quiet",
               "--rate", f"{TOLD:g}", "--concurrency", str(CONCURRENCY), "--deadline", "60",
               "--report", str(report), *shape.cli_extra]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env()
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 300.0)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    await runner.cleanup()
    got: dict[str, str] = {}
    if report.exists():
        got = {r["name"]: r["outcome"] for r in json.loads(report.read_text())["operations"]}
    wrong = sorted(n for n, want in server.expected.items() if got.get(n) != want)
    log = server.log
    refused = sum(not e.get("ok", False) for e in log)
    ends = [e.get("served", e["t"]) for e in log]
    drain = max(ends) - min(e["t"] for e in log) if log else 0.0
    floor = server.floor()
    return {
        "drain": drain, "floor": floor, "x": drain / floor if floor else float("nan"),
        "requests": len(log), "refused_share": refused / len(log) if log else 0.0,
        "exact": not wrong, "wrong": wrong[:5], "exit": proc.returncode,
        "stderr_tail": err.decode(errors="replace")[-400:],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("shapes", nargs="+", help=f"'all' or any of: {', '.join(SHAPES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cli", default=f"{sys.executable} -m bulkcancel",
        help="the command to run (default: this Python's bulkcancel); another tree's, to compare",
    )  # fmt: skip
    args = parser.parse_args(argv)
    chosen = list(SHAPES) if args.shapes == ["all"] else args.shapes
    unknown = [s for s in chosen if s not in SHAPES]
    if unknown or args.rounds < 1:
        parser.error(f"unknown shape {unknown[0]!r}" if unknown else "--rounds must be 1 or more")
    results: dict[str, list[dict[str, Any]]] = {}
    with TemporaryDirectory() as tmp:
        for shape_id in chosen:
            for seed in range(1, args.rounds + 1):
                run = asyncio.run(run_once(SHAPES[shape_id], seed, Path(tmp), args.cli.split()))
                results.setdefault(shape_id, []).append(run)
                if not run["exact"]:
                    print(f"{shape_id} round {seed}: wrong {run['wrong']}", file=sys.stderr)
    rows: list[list[object]] = []
    for shape_id, runs in results.items():
        xs = [r["x"] for r in runs]
        rows.append([shape_id, SHAPES[shape_id].label, f"{median(xs):.2f}",
                     f"{min(xs):.2f}-{max(xs):.2f}",
                     f"{median([r['refused_share'] for r in runs]):.1%}",
                     f"{sum(r['exact'] for r in runs)}/{len(runs)}"])  # fmt: skip
    print(
        table(
            f"shapes the fake does not model: told {TOLD:g}/s, {CONCURRENCY} in flight, "
            f"median of {args.rounds} round(s)",
            ["shape", "what", "x floor", "rounds", "refused", "exact"],
            rows,
        )
    )
    out = {"rounds": args.rounds, "results": results}
    print(f"-> {save('shapes-' + '-'.join(chosen) if args.shapes != ['all'] else 'shapes', out)}")
    return out


if __name__ == "__main__":
    main()
