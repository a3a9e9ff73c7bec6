"""The floor: a bare aiohttp loop, POST ``:cancel`` then GET per name, no limiter, no retry.

``python -m benchmarks.peer_bare URL NAMES_FILE CONCURRENCY`` prints one JSON line of counts.
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp


async def main(url: str, names_file: str, concurrency: int) -> dict[str, int]:
    with open(names_file, encoding="utf-8") as stream:  # noqa: ASYNC230 - before any I/O
        names = [line.strip() for line in stream if line.strip()]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)
    counts = {"ok": 0, "failed": 0, "cancelled": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                name = queue.get_nowait()
                async with session.post(f"{url}/v1/{name}:cancel", json={}) as response:
                    await response.read()
                    ok = response.status == 200
                async with session.get(f"{url}/v1/{name}") as response:
                    body = await response.json()
                counts["ok" if ok else "failed"] += 1
                if body.get("done") and body.get("error", {}).get("code") == 1:
                    counts["cancelled"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
