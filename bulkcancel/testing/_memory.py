"""An in-memory Operations API behind the client's transport seam: no sockets, no event-loop I/O.

For engine tests that need exotic interleavings, property tests, and the memory benchmark (a
million names through the engine, where a socket per request would measure the kernel, not us).
It answers from the same model as the HTTP fake (one behaviour enum, one status map), keeps no
request log, and lets names it was not told about act as ``default`` without being stored, so
a million-name run keeps this fake's memory flat too.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from bulkcancel._transport import CallableTransport, RawResponse, TransportError
from bulkcancel.testing._model import Behavior, FakeOperation
from bulkcancel.testing._world import OperationsModel

#: The behaviours by name (``Behavior`` values; ``"completes"`` is accepted for
#: ``completes_anyway``). An operation added here is done only after ``polls`` GETs following
#: the accepted cancel; see :class:`~bulkcancel.testing.Behavior` for what each one answers.
BEHAVIOURS = tuple(b.value for b in Behavior)

#: One stored operation (the model's: ``behaviour``, ``polls``, ``accepted``, ``gets``).
MemoryOperation = FakeOperation

Hook = Callable[[str, str, str], Awaitable[RawResponse | None]]


class MemoryOperations:
    """The model and its request handler. ``transport`` plugs into OperationsClient."""

    def __init__(
        self,
        *,
        default: str = "missing",
        api_version: str = "v1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        behaviour = _behaviour(default)
        self.default = behaviour.value
        self.model = OperationsModel(api_version=api_version, clock=clock, keep_log=False)
        if behaviour is not Behavior.MISSING:
            self.model.unknown = behaviour
        #: name -> stored operation
        self.operations: dict[str, FakeOperation] = {}
        self.calls: Counter[str] = Counter()
        #: Called before each request with (method, name, kind); an answer it returns (or a
        #: TransportError it raises) replaces the normal one: fault injection for tests.
        self.hook: Hook | None = None
        self.transport = CallableTransport(self._handle)

    def add(self, name: str, behaviour: str = "cancels", *, polls: int = 0) -> FakeOperation:
        op = self.model.add_operation(name, _behaviour(behaviour), polls=polls)
        self.operations[name] = op
        return op

    async def _handle(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        parts = urlsplit(url)
        raw = parts.path + (f"?{parts.query}" if parts.query else "")
        kind, name = self.model.route(method, parts.path)
        self.calls[kind] += 1
        if self.hook is not None:
            replaced = await self.hook(method, name, kind)
            if replaced is not None:
                return replaced
        reply = self.model.handle(method, raw, headers, routed=(kind, name))
        if reply.status == 0:
            raise TransportError("connection reset by the in-memory fake")
        return RawResponse(
            reply.status, reply.body, reply.content_type, reply.headers.get("Retry-After")
        )


def _behaviour(value: str) -> Behavior:
    try:
        return Behavior(value)
    except ValueError:
        raise ValueError(f"unknown behaviour {value!r}") from None
