"""What the server answered -> the contract's outcome. Pure: no I/O, no clock.

The last GET decides wherever it can: cancellation is best effort, so an accepted cancel proves
nothing and a refused one may still find the operation finished.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._models import Outcome
from bulkcancel._retry import THROTTLE_REASONS

#: google.rpc.Code CANCELLED: what ``error.code`` holds on a cancelled operation (not an HTTP code).
CODE_CANCELLED = 1
_INT32_TEXT = re.compile(r"-?[0-9]{1,10}")
_INT32_RANGE = range(-(2**31), 2**31)


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


def unnamed_refusal(answer: Answer) -> bool:
    """A 400 that names no canonical status (Google JSON without ``status``, or a body that is
    not Google JSON): FAILED_PRECONDITION, INVALID_ARGUMENT and OUT_OF_RANGE all answer 400,
    so it may be an operation that already finished. A GET tells: done, it decides as for
    any refusal; otherwise the refusal stays an ``error`` (never ``unsupported``, which
    needs the server to say so)."""
    return (
        answer.kind in (AnswerKind.API_ERROR, AnswerKind.HTTP_ERROR)
        and answer.status == 400
        and answer.code is None
    )


def needs_get(cancel: Answer) -> bool:
    """After this cancel answer, is a GET worth its call?"""
    return cancel.ok or refused_as_unsupported(cancel) or unnamed_refusal(cancel)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    details: dict[str, Any]


def is_done(operation: Mapping[str, Any]) -> bool:
    """Whether an Operation's JSON says it finished (a missing ``done`` means running).

    Only JSON ``true`` counts: ``done`` is a proto3 bool, whose JSON form is ``true``/``false``
    and nothing else (``"true"`` is refused by every proto3 JSON parser).
    """
    return operation.get("done") is True


def read_int32(value: object) -> int | None:
    """A proto3 JSON int32: a number or a numeric string (``1``, ``"1"``, ``1.0``), in range.

    None for anything else, booleans above all: ``true`` is not ``1`` on the wire, whatever
    Python's ``True == 1`` says.
    """
    match value:
        case bool():
            return None
        case int():
            number = value
        case float() if value.is_integer():
            number = int(value)
        case str() if _INT32_TEXT.fullmatch(value):
            number = int(value)
        case _:
            return None
    return number if number in _INT32_RANGE else None


def malformed(operation: Mapping[str, Any]) -> str | None:
    """Why an Operation's JSON cannot be read as one, in the fields classification reads; None
    when it can. What a proto3 JSON parser would refuse is refused here too (a ``null`` is the
    field's default, as proto3 JSON says)."""
    done = operation.get("done")
    if done is not None and not isinstance(done, bool):
        return f"done is {_quote(done)}, not true or false"
    error = operation.get("error")
    if error is None:
        return None
    if not isinstance(error, Mapping):
        return f"error is {_quote(error)}, not an object"
    code = error.get("code")
    if code is not None and read_int32(code) is None:
        return f"error.code is {_quote(code)}, not an int32"
    return None


def _quote(value: object) -> str:
    return json.dumps(value, default=str)[:100]


def done_outcome(operation: Mapping[str, Any]) -> Verdict | None:
    """Classify a finished operation from its JSON, or None while it is still running.

    An Operation that cannot be read (see ``malformed``) is an ``error``, whether or not it
    claims to be done: we cannot tell cancelled from completed, nor running from finished.
    """
    problem = malformed(operation)
    if problem is not None:
        return Verdict(Outcome.ERROR, {"malformed_operation": problem})
    if not is_done(operation):
        return None
    error = operation.get("error")
    if isinstance(error, Mapping):
        code = read_int32(error.get("code"))
        message = error.get("message")
        details: dict[str, Any] = {
            "error_code": code,
            "error_message": message if isinstance(message, str) else _message(message),
        }
        if code == CODE_CANCELLED:
            return Verdict(Outcome.CANCELLED, details)
        return Verdict(Outcome.COMPLETED_ANYWAY, {"finished_with": "error", **details})
    finished_with = "response" if "response" in operation else "neither"
    return Verdict(Outcome.COMPLETED_ANYWAY, {"finished_with": finished_with})


def _message(value: object) -> str:
    return "" if value is None else _quote(value)


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
