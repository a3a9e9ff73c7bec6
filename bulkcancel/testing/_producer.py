"""The runaway producer: operations that keep appearing under a parent for a while.

What ``--until-quiet`` is for: a bad automation or a retrying controller creating operations
while they are being cancelled. The producer is pure, like the model that owns it: nothing runs
in the background. Operation ``i`` is created at ``start + i / rate`` on the model's clock, and
appears the first time the model answers a request at or after that moment (the model catches
up before every answer), with its ``createTime`` set to when it was created. So it works the
same on a real clock (``fake-server --runaway``) and on a test's virtual one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bulkcancel.testing._model import Behavior

__all__ = ["RunawayProducer"]


@dataclass(slots=True)
class RunawayProducer:
    """``rate`` new operations per second under ``parent``, from ``start`` for ``duration``
    seconds (model clock); names ``{parent}/operations/{prefix}{i:06d}``."""

    parent: str
    rate: float
    duration: float
    start: float
    behavior: Behavior = Behavior.CANCELS
    prefix: str = "runaway-"
    cancel_delay: float = 0.0
    #: operations created so far
    made: int = 0

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"a runaway producer needs a positive rate, not {self.rate!r}")
        if not (self.duration >= 0 and math.isfinite(self.duration)):
            raise ValueError(f"a runaway producer needs a duration >= 0, not {self.duration!r}")

    @property
    def total(self) -> int:
        """How many it creates in all: one at ``start``, then one every ``1/rate`` seconds
        while ``duration`` lasts."""
        return math.floor(self.duration * self.rate + 1e-9) + 1

    @property
    def ends_at(self) -> float:
        """When the last one is created (model clock)."""
        return self.start + (self.total - 1) / self.rate

    def name(self, index: int) -> str:
        return f"{self.parent}/operations/{self.prefix}{index:06d}"

    def names(self) -> list[str]:
        """Every name it creates (or will)."""
        return [self.name(i) for i in range(self.total)]

    def due(self, now: float) -> list[tuple[str, float]]:
        """The operations to create by ``now`` that are not created yet, with their ages; marks
        them created."""
        if now < self.start:
            return []
        upto = min(self.total, math.floor((now - self.start) * self.rate + 1e-9) + 1)
        out = [(self.name(i), now - (self.start + i / self.rate)) for i in range(self.made, upto)]
        self.made = max(self.made, upto)
        return out
