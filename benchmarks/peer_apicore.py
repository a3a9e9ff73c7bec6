"""google-api-core's ``operations_v1.AsyncOperationsRestClient``: cancel + get per name.

``python -m benchmarks.peer_apicore URL NAMES_FILE CONCURRENCY [OUTCOMES_JSON]`` prints one JSON
line of counts (its default retry settings: it retries 503 only, and the google-auth async
session under it tries a 429, 500, 503, 504 or 408 three times in all; what still fails raises
and is counted) and, when asked, writes each name's outcome as the contract would call it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import google.cloud.deploy_v1  # noqa: F401 - registers Cloud Deploy's metadata types
from google.api_core import exceptions, operations_v1
from google.auth.aio.credentials import AnonymousCredentials

from benchmarks._common import outcome_of


async def main(
    url: str, names_file: str, concurrency: int, outcomes_file: str | None = None
) -> dict[str, Any]:
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
    outcomes: dict[str, str] = {}

    def status_of(exc: exceptions.GoogleAPICallError) -> int:
        return int(exc.code or 0)

    async def worker() -> None:
        while not queue.empty():
            name = queue.get_nowait()
            cancel_status, html = 200, False
            try:
                await client.cancel_operation(name=name)
            except exceptions.GoogleAPICallError as exc:
                cancel_status, html = status_of(exc), "<html" in str(exc).lower()
            except Exception:  # a reset surfaces as the transport's own error, not an API error
                cancel_status = 0
            try:
                operation = await client.get_operation(name=name)
            except Exception as exc:  # as above: counted, not fatal to the run
                counts["failed"] += 1
                kind = type(exc).__name__
                counts["errors"][kind] = counts["errors"].get(kind, 0) + 1
                status = status_of(exc) if isinstance(exc, exceptions.GoogleAPICallError) else 0
                outcomes[name] = outcome_of(cancel_status, html, status, None)
                continue
            counts["ok" if cancel_status == 200 else "failed"] += 1
            body: dict[str, Any] = {"done": operation.done}
            if operation.HasField("error"):
                body["error"] = {"code": operation.error.code}
            outcomes[name] = outcome_of(cancel_status, html, 200, body)
            if operation.done and operation.error.code == 1:
                counts["cancelled"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    session = getattr(transport, "_session", None)  # the transport has no public close()
    if session is not None:
        await session.close()
    if outcomes_file:
        Path(outcomes_file).write_text(json.dumps(outcomes))  # noqa: ASYNC240 - after all I/O
    return counts


if __name__ == "__main__":
    extra = sys.argv[4] if len(sys.argv) > 4 else None
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), extra))))
