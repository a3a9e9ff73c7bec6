"""An in-memory Operations API behind the client's transport seam: no sockets, no event-loop I/O.

For engine tests that need exotic interleavings, property tests, and the memory benchmark (a
million names through the engine, where a socket per request would measure the kernel, not us).
Names it was not told about behave as ``default`` without being stored, so a million-name run
keeps this fake's memory flat too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from bulkcancel._transport import CallableTransport, RawResponse

_JSON = "application/json; charset=UTF-8"
_STATUS = {
    400: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    501: "UNIMPLEMENTED",
}

#: Behaviours: what cancel answers and how the operation ends.
#:   cancels          200, then done with error code 1 after ``polls`` GETs
#:   completes        200, then done with a response
#:   never            200, never done
#:   already_done     400 FAILED_PRECONDITION, done with a response
#:   unsupported      501, running
#:   denied           403 on everything
#:   missing          404 on everything
BEHAVIOURS = ("cancels", "completes", "never", "already_done", "unsupported", "denied", "missing")


@dataclass(slots=True)
class MemoryOperation:
    behaviour: str
    polls: int = 0  # GETs after acceptance before it is done
    accepted: int = 0
    gets: int = 0


def _error(status: int, message: str) -> RawResponse:
    body = {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}
    return RawResponse(status, json.dumps(body).encode(), _JSON)


Hook = Callable[[str, str, str], Awaitable[RawResponse | None]]


class MemoryOperations:
    """The fake's state and its request handler. ``transport`` plugs into OperationsClient."""

    def __init__(self, *, default: str = "missing", api_version: str = "v1") -> None:
        if default not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {default!r}")
        self.default = default
        self.operations: dict[str, MemoryOperation] = {}
        self.calls: Counter[str] = Counter()
        self._prefix = f"/{api_version}/"
        #: Called before each request with (method, name, kind); an answer it returns (or a
        #: TransportError it raises) replaces the normal one: fault injection for tests.
        self.hook: Hook | None = None
        self.transport = CallableTransport(self._handle)

    def add(self, name: str, behaviour: str = "cancels", *, polls: int = 0) -> MemoryOperation:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}")
        op = self.operations[name] = MemoryOperation(behaviour, polls)
        return op

    def _op(self, name: str) -> MemoryOperation:
        op = self.operations.get(name)
        return op if op is not None else MemoryOperation(self.default)

    def _json(self, name: str, op: MemoryOperation) -> dict[str, object]:
        body: dict[str, object] = {"name": name, "metadata": {"verb": "deploy"}}
        b = op.behaviour
        finished = b == "already_done" or (
            op.accepted and b in ("cancels", "completes") and op.gets > op.polls
        )
        if finished:
            body["done"] = True
            if b == "cancels":
                body["error"] = {"code": 1, "message": "Operation cancelled by user."}
            else:
                body["response"] = {"@type": "type.googleapis.com/google.protobuf.Empty"}
        return body

    async def _handle(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        parts = urlsplit(url)
        path = parts.path[len(self._prefix) :] if parts.path.startswith(self._prefix) else ""
        if method == "POST" and path.endswith(":cancel"):
            kind, name = "cancel", path[: -len(":cancel")]
        elif path == "operations" or path.endswith("/operations"):
            kind, name = "list", path.rpartition("/operations")[0]
        else:
            kind, name = "get", path
        self.calls[kind] += 1
        if self.hook is not None:
            replaced = await self.hook(method, name, kind)
            if replaced is not None:
                return replaced
        if kind == "list":
            return self._list(name, parse_qs(parts.query))
        op = self._op(name)
        b = op.behaviour
        if b == "denied":
            return _error(403, "permission denied")
        if b == "missing":
            return _error(404, "operation not found")
        if kind == "cancel":
            if b == "unsupported":
                return _error(501, "cancel is not implemented")
            if b == "already_done" or self._json(name, op).get("done"):
                return _error(400, "operation already finished")
            if name in self.operations:
                op.accepted += 1
            return RawResponse(200, b"{}", _JSON)
        if name in self.operations:
            if op.accepted:
                op.gets += 1
        else:
            # Unstored names act as if cancelled earlier: no state kept for a million of them.
            op = MemoryOperation(b, 0, accepted=1, gets=1)
        return RawResponse(200, json.dumps(self._json(name, op)).encode(), _JSON)

    def _list(self, parent: str, query: dict[str, list[str]]) -> RawResponse:
        prefix = f"{parent}/operations/" if parent else "operations/"
        names = [n for n in self.operations if n.startswith(prefix)]
        size = int(query.get("pageSize", ["50"])[0] or 50)
        start = int(query.get("pageToken", ["0"])[0] or 0)
        page = names[start : start + size]
        ops = []
        for name in page:
            op = self.operations[name]
            if op.accepted:
                op.gets += 1
            ops.append(self._json(name, op))
        out: dict[str, object] = {"operations": ops}
        if start + size < len(names):
            out["nextPageToken"] = str(start + size)
        return RawResponse(200, json.dumps(out).encode(), _JSON)
