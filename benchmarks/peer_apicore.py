"""google-api-core's ``operations_v1.AsyncOperationsRestClient``: cancel + get per name.

``python -m benchmarks.peer_apicore URL NAMES_FILE CONCURRENCY`` prints one JSON line of counts
(its default retry settings: it retries 503 only; anything else raises and is counted).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import google.cloud.deploy_v1  # noqa: F401 - registers Cloud Deploy's metadata types
from google.api_core import exceptions, operations_v1
from google.auth.aio.credentials import AnonymousCredentials


async def main(url: str, names_file: str, concurrency: int) -> dict[str, Any]:
    with open(names_file, encoding="utf-8") as stream:  # noqa: ASYNC230 - before any I/O
        names = [line.strip() for line in stream if line.strip()]
    # A host with its scheme is used as is (url_scheme applies to bare hosts only).
    transport = operations_v1.AsyncOperationsRestTransport(
        host=url,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
    )
    client = operations_v1.AsyncOperationsRestClient(transport=transport)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)
    counts: dict[str, Any] = {"ok": 0, "failed": 0, "cancelled": 0, "errors": {}}

    async def worker() -> None:
        while not queue.empty():
            name = queue.get_nowait()
            try:
                await client.cancel_operation(name=name)
                operation = await client.get_operation(name=name)
            except exceptions.GoogleAPICallError as exc:
                counts["failed"] += 1
                kind = type(exc).__name__
                counts["errors"][kind] = counts["errors"].get(kind, 0) + 1
                continue
            counts["ok"] += 1
            if operation.done and operation.error.code == 1:
                counts["cancelled"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    session = getattr(transport, "_session", None)  # the transport has no public close()
    if session is not None:
        await session.close()
    return counts


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
