"""Test doubles that ship with bulkcancel, for its own tests, the demo, benchmarks and users.

* :class:`FakeOperationsServer`: the Operations REST API over real HTTP on loopback, with
  scripted behaviours per operation, parent modes, faults, a quota and a request log.
* :class:`MemoryOperations`: the same vocabulary behind the client's transport seam, no sockets.
"""

from bulkcancel.testing._fake import (
    Behavior,
    FakeOperation,
    FakeOperationsServer,
    Fault,
    Faults,
    ParentMode,
    RequestRecord,
    populate,
    serve_forever,
)
from bulkcancel.testing._memory import BEHAVIOURS, MemoryOperation, MemoryOperations
from bulkcancel.testing._scenarios import DEMO_LOCATIONS, demo_scenario

__all__ = [
    "BEHAVIOURS",
    "DEMO_LOCATIONS",
    "Behavior",
    "FakeOperation",
    "FakeOperationsServer",
    "Fault",
    "Faults",
    "MemoryOperation",
    "MemoryOperations",
    "ParentMode",
    "RequestRecord",
    "demo_scenario",
    "populate",
    "serve_forever",
]
