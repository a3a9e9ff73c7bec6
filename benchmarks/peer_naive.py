"""A naive client: a fixed rate ceiling, and a fixed 1 s cool-down for everyone after any 429.

``python -m benchmarks.peer_naive URL NAMES_FILE CONCURRENCY RATE OUTCOMES_JSON`` cancels and
GETs each name; a 429 pauses all sending for one second and the request is tried again (up to
30 times); 5xx and resets are retried after 0.1 s (up to 5 times). It writes each name's outcome
as the contract would call it and prints one JSON line of counts. What a careful script writer
would do in an afternoon: the yardstick an adaptive pacer must beat.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._common import outcome_of


async def main(
    url: str, names_file: str, concurrency: int, rate: float, outcomes_file: str
) -> dict[str, int]:
    with open(names_file, encoding="utf-8") as stream:  # noqa: ASYNC230 - before any I/O
        names = [line.strip() for line in stream if line.strip()]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)
    loop = asyncio.get_running_loop()
    state = {"next_slot": loop.time(), "paused_until": 0.0}
    counts = {"requests": 0, "throttled": 0, "retried": 0}
    outcomes: dict[str, str] = {}

    async def turn() -> None:
        while True:
            now = loop.time()
            if now < state["paused_until"]:
                await asyncio.sleep(state["paused_until"] - now)
                continue
            slot = max(state["next_slot"], now)
            state["next_slot"] = slot + 1.0 / rate
            if slot > now:
                await asyncio.sleep(slot - now)
            return

    async def send(
        session: aiohttp.ClientSession, method: str, path: str
    ) -> tuple[int, bool, dict[str, Any] | None]:
        throttles = failures = 0
        while True:
            await turn()
            counts["requests"] += 1
            try:
                async with session.request(method, url + path, allow_redirects=False) as response:
                    raw = await response.read()
                    status, ctype = response.status, response.content_type
            except aiohttp.ClientError:
                status, ctype, raw = 0, "", b""
            if status == 429 and throttles < 30:
                throttles += 1
                counts["throttled"] += 1
                state["paused_until"] = loop.time() + 1.0
                continue
            if (status == 0 or (status >= 500 and status != 501)) and failures < 5:
                failures += 1
                counts["retried"] += 1
                await asyncio.sleep(0.1)
                continue
            body = json.loads(raw) if ctype == "application/json" and raw else None
            return status, "html" in ctype, body

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                name = queue.get_nowait()
                cancel_status, html, _ = await send(session, "POST", f"/v1/{name}:cancel")
                get_status, _, body = await send(session, "GET", f"/v1/{name}")
                outcomes[name] = outcome_of(cancel_status, html, get_status, body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    Path(outcomes_file).write_text(json.dumps(outcomes))  # noqa: ASYNC240 - after all I/O
    return counts


if __name__ == "__main__":
    url, names, concurrency, rate, out = sys.argv[1:6]
    print(json.dumps(asyncio.run(main(url, names, int(concurrency), float(rate), out))))
