"""What the server answered -> the contract's outcome. Pure: no I/O, no clock.

The last GET decides wherever it can: cancellation is best effort, so an accepted cancel proves
nothing and a refused one may still find the operation finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._models import Outcome
from bulkcancel._retry import THROTTLE_REASONS

#: google.rpc.Code CANCELLED: what ``error.code`` holds on a cancelled operation (not an HTTP code).
CODE_CANCELLED = 1


def is_denied(answer: Answer) -> bool:
    """401/403 that is not throttling in disguise."""
    return answer.status in (401, 403) and answer.reason not in THROTTLE_REASONS


def is_not_found(answer: Answer) -> bool:
    """Google's JSON NOT_FOUND (an HTML 404 means an unrouted method, not a missing operation)."""
    return answer.kind is AnswerKind.API_ERROR and (
        answer.code == "NOT_FOUND" or (answer.code is None and answer.status == 404)
    )


def refused_as_unsupported(answer: Answer) -> bool:
    """Cancel answers after which the operation may still be running and only a GET can tell:
    501 UNIMPLEMENTED, an unrouted (non-JSON) 404, FAILED_PRECONDITION, or a JSON NOT_FOUND."""
    if answer.status == 501 or answer.code == "UNIMPLEMENTED":
        return True
    if answer.kind is AnswerKind.HTTP_ERROR and answer.status == 404:
        return True
    return answer.code == "FAILED_PRECONDITION" or is_not_found(answer)


def needs_get(cancel: Answer) -> bool:
    """After this cancel answer, is a GET worth its call?"""
    return cancel.ok or refused_as_unsupported(cancel)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    details: dict[str, Any]


def is_done(operation: Mapping[str, Any]) -> bool:
    """Whether an Operation's JSON says it finished (a missing ``done`` means running)."""
    return operation.get("done") is True


def done_outcome(operation: Mapping[str, Any]) -> Verdict | None:
    """Classify a finished operation from its JSON, or None while it is still running."""
    if not is_done(operation):
        return None
    error = operation.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        details: dict[str, Any] = {"error_code": code, "error_message": error.get("message", "")}
        if code == CODE_CANCELLED:
            return Verdict(Outcome.CANCELLED, details)
        return Verdict(Outcome.COMPLETED_ANYWAY, {"finished_with": "error", **details})
    finished_with = "response" if "response" in operation else "neither"
    return Verdict(Outcome.COMPLETED_ANYWAY, {"finished_with": finished_with})


def classify(
    cancel: Answer | None,
    last_get: Answer | None,
    *,
    accepted: bool,
    deadline_passed: bool = False,
) -> Verdict:
    """The outcome of one operation from the cancel answer and the last GET.

    ``cancel`` is None when no cancel was sent in this run (``accepted`` then says whether a
    previous run's cancel was accepted, from the journal). ``last_get`` may be a GET answer or an
    entry found by listing, wrapped as an OK Answer.
    """
    details: dict[str, Any] = {}
    if cancel is not None and not cancel.ok:
        details["cancel_error"] = cancel.summary()
    if last_get is not None and last_get.ok and last_get.body is not None:
        finished = done_outcome(last_get.body)
        if finished is not None:
            details.update(finished.details)
            if not accepted and cancel is not None:
                details["already_done"] = True
            return Verdict(finished.outcome, details)
    if last_get is not None and not last_get.ok:
        details["get_error"] = last_get.summary()

    if accepted:
        if last_get is None or last_get.ok:
            # Accepted and, as far as we last saw, still running.
            details["deadline_passed"] = deadline_passed
            return Verdict(Outcome.STILL_RUNNING, details)
        return _after_failed_get(last_get, details)

    if cancel is None:
        return Verdict(Outcome.NOT_ATTEMPTED, details)
    if is_denied(cancel):
        return Verdict(Outcome.PERMISSION_DENIED, details)
    if not refused_as_unsupported(cancel):
        return Verdict(Outcome.ERROR, details)
    # Refused in a way only the operation's state can explain.
    if last_get is None:
        return Verdict(Outcome.ERROR, details)
    if last_get.ok:
        return Verdict(Outcome.UNSUPPORTED, details)
    return _after_failed_get(last_get, details)


def _after_failed_get(last_get: Answer, details: dict[str, Any]) -> Verdict:
    """When the last GET itself failed, it decides: gone, denied, or an error."""
    if is_not_found(last_get):
        return Verdict(Outcome.NOT_FOUND, details)
    if is_denied(last_get):
        return Verdict(Outcome.PERMISSION_DENIED, details)
    return Verdict(Outcome.ERROR, details)
