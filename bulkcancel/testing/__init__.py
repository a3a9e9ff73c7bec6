"""Test doubles that ship with bulkcancel, for its own tests, the demo, benchmarks and users.

* :class:`FakeOperationsServer`: the Operations REST API over real HTTP on loopback, with
  scripted behaviours per operation, parent modes, faults, named quota and fault
  personalities (:class:`Personality`), and a request log.
* :class:`MemoryOperations`: the same model behind the client's transport seam, no sockets.

Both answer from one model (``_model``: behaviours, operations, modes, faults; ``_world``: the
state and every answer; ``_personalities``: quotas and the ways a server says no), so they
speak one vocabulary.
"""

from bulkcancel.testing._memory import BEHAVIOURS, MemoryOperation, MemoryOperations
from bulkcancel.testing._model import (
    Behavior,
    FakeOperation,
    Fault,
    Faults,
    ParentMode,
    RequestRecord,
)
from bulkcancel.testing._personalities import (
    PERSONALITY_HELP,
    Personality,
    Quota,
    parse_personalities,
)
from bulkcancel.testing._producer import RunawayProducer
from bulkcancel.testing._scenarios import DEMO_LOCATIONS, demo_scenario
from bulkcancel.testing._server import STATS_PATH, FakeOperationsServer, populate, serve_forever
from bulkcancel.testing._world import OperationsModel

__all__ = [
    "BEHAVIOURS",
    "DEMO_LOCATIONS",
    "PERSONALITY_HELP",
    "STATS_PATH",
    "Behavior",
    "FakeOperation",
    "FakeOperationsServer",
    "Fault",
    "Faults",
    "MemoryOperation",
    "MemoryOperations",
    "OperationsModel",
    "ParentMode",
    "Personality",
    "Quota",
    "RequestRecord",
    "RunawayProducer",
    "demo_scenario",
    "parse_personalities",
    "populate",
    "serve_forever",
]
