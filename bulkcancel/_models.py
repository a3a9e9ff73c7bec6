"""The vocabulary of a run: outcomes, per-operation results and the report.

This module is the ground floor: it imports nothing of ours, so every other module may use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """How one target ended. The string values are the contract: users' scripts match on them."""

    CANCELLED = "cancelled"
    COMPLETED_ANYWAY = "completed_anyway"
    UNSUPPORTED = "unsupported"
    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    STILL_RUNNING = "still_running"
    ERROR = "error"
    INVALID = "invalid"
    NOT_ATTEMPTED = "not_attempted"


class StopReason(StrEnum):
    """Why a run stopped before every target was worked through. The values appear in reports
    (``stopped``) and in ``not_attempted`` records' ``reason``; each maps to one exit code."""

    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM or Engine.stop() by a library caller
    UNAUTHENTICATED = "unauthenticated"  # the server rejected the credentials (exit 4)
    UNREACHABLE = "unreachable"  # connection failures or TLS failure on every first answer (exit 5)
    WRONG_ENDPOINT = "wrong_endpoint"  # every first answer says the endpoint is wrong (exit 5)
    JOURNAL_FAILED = "journal_failed"  # progress could not be recorded (exit 6)


#: Outcomes that count as success for the exit code: the operation is no longer running.
SUCCESS_OUTCOMES = frozenset({Outcome.CANCELLED, Outcome.COMPLETED_ANYWAY})


def empty_totals() -> dict[str, int]:
    """Every outcome key, zeros included, in contract order."""
    return {outcome.value: 0 for outcome in Outcome}


@dataclass(slots=True)
class OperationResult:
    """The settled fate of one target.

    ``details`` holds what helps a person or a script understand the outcome: the server's error
    code and message, the HTTP status, request and retry counts. Its keys are merged into the
    report record beside ``name`` and ``outcome``.
    """

    name: str
    outcome: Outcome
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"name": self.name, "outcome": self.outcome.value}
        record.update(self.details)
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> OperationResult:
        details = {k: v for k, v in record.items() if k not in ("name", "outcome")}
        return cls(name=str(record["name"]), outcome=Outcome(record["outcome"]), details=details)


@dataclass(frozen=True, slots=True)
class Target:
    """One operation to act on, after validation and de-duplication."""

    name: str
    #: A previous run (the journal) saw this cancel accepted: reconcile only, never re-send.
    accepted_before: bool = False
    #: The operation as a listing returned it; when already done, no call is needed at all.
    listed: Mapping[str, Any] | None = None
    #: Already settled before the run (an invalid line, or finished in a previous run): the
    #: engine only passes it on, so every record flows through one emit path in input order.
    result: OperationResult | None = None


@dataclass(slots=True)
class Report:
    """Everything a run found out: one record per target, totals by outcome, and run metadata."""

    operations: list[OperationResult] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=empty_totals)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_results(
        cls, results: Iterable[OperationResult], meta: Mapping[str, Any] | None = None
    ) -> Report:
        report = cls(meta=dict(meta or {}))
        for result in results:
            report.add(result)
        return report

    def add(self, result: OperationResult) -> None:
        self.operations.append(result)
        self.totals[result.outcome.value] += 1

    @property
    def ok(self) -> bool:
        """True when every target ended ``cancelled`` or ``completed_anyway``."""
        return all(r.outcome in SUCCESS_OUTCOMES for r in self.operations)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schema_version": 1, "totals": dict(self.totals)}
        body.update(self.meta)
        body["operations"] = [r.to_json() for r in self.operations]
        return body
