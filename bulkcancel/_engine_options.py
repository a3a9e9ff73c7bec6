"""What one engine run is told (``EngineOptions``, ``ReconcileMode``) and what it counts of
its reconciling (``EngineStats``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["EngineOptions", "EngineStats", "ReconcileMode"]


class ReconcileMode(StrEnum):
    GET = "get"  # one GET per operation per poll
    LIST = "list"  # sweeps of each parent's listing settle a page of operations per call
    AUTO = "auto"  # per parent, whichever costs less (calls when the rate binds, else time)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    concurrency: int = 32
    deadline: float = 120.0
    poll_initial: float = 0.5
    poll_factor: float = 1.5
    poll_max: float = 10.0
    reconcile: ReconcileMode = ReconcileMode.AUTO
    #: auto mode lists a parent when at least this many of its operations await reconciliation.
    list_threshold: int = 8
    list_page_size: int = 500
    #: after a complete pass over a parent's listing, the next pass starts no sooner than this
    #: (while cancels are still going out; after that a rest would only lengthen the tail).
    sweep_gap: float = 1.0
    #: most pages one sweep fetches; past it the sweep ends and the parent goes to GET.
    sweep_page_budget: int = 2_000
    #: after a graceful stop, how long accepted cancels are still reconciled.
    grace: float = 5.0
    #: at most this many operations between "taken from the input" and "settled": the input
    #: waits for the reconciler beyond it, so memory stays flat however long the input.
    max_pending: int = 20_000

    def __post_init__(self) -> None:
        # A zero poll interval would let the reconciler go round without ever waiting.
        positive = {"poll_initial": self.poll_initial, "poll_max": self.poll_max}
        for label, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be a positive number of seconds, not {value!r}")
        if not self.poll_factor >= 1:
            raise ValueError(f"poll_factor must be at least 1, not {self.poll_factor!r}")
        for label, value in {"deadline": self.deadline, "grace": self.grace}.items():
            if not value >= 0:
                raise ValueError(f"{label} must not be negative, not {value!r}")
        counts = {
            "concurrency": self.concurrency,
            "max_pending": self.max_pending,
            "sweep_page_budget": self.sweep_page_budget,
            "list_threshold": self.list_threshold,
        }
        for label, count in counts.items():
            if count < 1:
                raise ValueError(f"{label} must be at least 1, not {count!r}")
        if self.list_page_size < 0 or self.sweep_gap < 0:
            raise ValueError("list_page_size and sweep_gap must not be negative")


@dataclass(slots=True)
class EngineStats:
    sweeps: int = 0
    sweep_pages: int = 0
    #: every operation a listing settled
    settled_by_list: int = 0
    list_disabled: list[str] = field(default_factory=list)
