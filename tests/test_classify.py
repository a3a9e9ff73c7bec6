"""Classification as a table: every row of the contract's outcome table, and the edges."""

from __future__ import annotations

from typing import Any

import pytest

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._classify import classify, done_outcome, needs_get, read_int32
from bulkcancel._models import Outcome

NAME = "projects/p/locations/l/operations/o"


def ok(body: dict[str, Any] | None = None) -> Answer:
    return Answer(AnswerKind.OK, 200, body={} if body is None else body)


def running() -> Answer:
    return ok({"name": NAME, "metadata": {}})


def done(**extra: Any) -> Answer:
    return ok({"name": NAME, "done": True, **extra})


def api(status: int, code: str, reason: str | None = None) -> Answer:
    return Answer(AnswerKind.API_ERROR, status, code=code, reason=reason, message=code.lower())


HTML_404 = Answer(AnswerKind.HTTP_ERROR, 404, message="HTML error page: <!DOCTYPE html>")
UNIMPLEMENTED = api(501, "UNIMPLEMENTED")
PRECONDITION = api(400, "FAILED_PRECONDITION")
NOT_FOUND = api(404, "NOT_FOUND")
DENIED = api(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED")
UNAUTH = api(401, "UNAUTHENTICATED")
CANCELLED_OP = done(error={"code": 1, "message": "Operation cancelled by user."})
#: 400s that name no canonical status: FAILED_PRECONDITION (already finished) or another
BARE_400 = Answer(AnswerKind.API_ERROR, 400, message="Operation has already completed.")
TEXT_400 = Answer(AnswerKind.HTTP_ERROR, 400, message="Bad Request")
COMPLETED = Outcome.COMPLETED_ANYWAY

ROWS: list[tuple[str, Answer | None, Answer | None, bool, bool, Outcome]] = [
    # (case, cancel, last GET, accepted, deadline passed, outcome)
    ("accepted then cancelled", ok(), CANCELLED_OP, True, False, Outcome.CANCELLED),
    (
        "accepted, finished with a response",
        ok(),
        done(response={}),
        True,
        False,
        Outcome.COMPLETED_ANYWAY,
    ),
    (
        "accepted, finished with another error",
        ok(),
        done(error={"code": 13, "message": "x"}),
        True,
        False,
        Outcome.COMPLETED_ANYWAY,
    ),
    ("accepted, finished with neither", ok(), done(), True, False, Outcome.COMPLETED_ANYWAY),
    (
        "already finished: FAILED_PRECONDITION then done",
        PRECONDITION,
        done(response={}),
        False,
        False,
        Outcome.COMPLETED_ANYWAY,
    ),
    ("501 while running", UNIMPLEMENTED, running(), False, False, Outcome.UNSUPPORTED),
    ("HTML 404 while GET finds it", HTML_404, running(), False, False, Outcome.UNSUPPORTED),
    (
        "FAILED_PRECONDITION while running",
        PRECONDITION,
        running(),
        False,
        False,
        Outcome.UNSUPPORTED,
    ),
    ("501 but it finished meanwhile", UNIMPLEMENTED, CANCELLED_OP, False, False, Outcome.CANCELLED),
    ("cancel and GET both 404", NOT_FOUND, NOT_FOUND, False, False, Outcome.NOT_FOUND),
    ("HTML 404 and GET 404", HTML_404, NOT_FOUND, False, False, Outcome.NOT_FOUND),
    ("403 denied", DENIED, None, False, False, Outcome.PERMISSION_DENIED),
    ("401", UNAUTH, None, False, False, Outcome.PERMISSION_DENIED),
    ("unsupported then GET denied", UNIMPLEMENTED, DENIED, False, False, Outcome.PERMISSION_DENIED),
    ("accepted, GET denied", ok(), DENIED, True, False, Outcome.PERMISSION_DENIED),
    ("accepted, still running at deadline", ok(), running(), True, True, Outcome.STILL_RUNNING),
    ("accepted, gone afterwards", ok(), NOT_FOUND, True, False, Outcome.NOT_FOUND),
    ("accepted, GET keeps failing", ok(), api(503, "UNAVAILABLE"), True, False, Outcome.ERROR),
    ("persistent 503", api(503, "UNAVAILABLE"), None, False, False, Outcome.ERROR),
    ("HTML 502", Answer(AnswerKind.HTTP_ERROR, 502), None, False, False, Outcome.ERROR),
    ("reset", Answer(AnswerKind.TRANSPORT, message="reset"), None, False, False, Outcome.ERROR),
    ("redirect", Answer(AnswerKind.REDIRECT, 302), None, False, False, Outcome.ERROR),
    ("oversized", Answer(AnswerKind.OVERSIZED, 200), None, False, False, Outcome.ERROR),
    ("malformed", Answer(AnswerKind.MALFORMED, 200), None, False, False, Outcome.ERROR),
    ("INVALID_ARGUMENT", api(400, "INVALID_ARGUMENT"), None, False, False, Outcome.ERROR),
    ("400 naming no status, then done", BARE_400, done(response={}), False, False, COMPLETED),
    ("plain-text 400, then done", TEXT_400, CANCELLED_OP, False, False, Outcome.CANCELLED),
    ("400 naming no status, still running", BARE_400, running(), False, False, Outcome.ERROR),
    ("400 naming no status, GET 404", BARE_400, NOT_FOUND, False, False, Outcome.ERROR),
    (
        "429 retries spent",
        api(429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED"),
        None,
        False,
        False,
        Outcome.ERROR,
    ),
    (
        "throttling 403 retries spent",
        api(403, "PERMISSION_DENIED", "rateLimitExceeded"),
        None,
        False,
        False,
        Outcome.ERROR,
    ),
    (
        "unsupported but GET failed",
        UNIMPLEMENTED,
        api(500, "INTERNAL"),
        False,
        False,
        Outcome.ERROR,
    ),
    (
        "resumed: accepted earlier, cancelled now",
        None,
        CANCELLED_OP,
        True,
        False,
        Outcome.CANCELLED,
    ),
    ("never attempted", None, None, False, False, Outcome.NOT_ATTEMPTED),
]


@pytest.mark.parametrize(
    ("cancel", "last_get", "accepted", "passed", "outcome"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_contract_table(
    cancel: Answer | None, last_get: Answer | None, accepted: bool, passed: bool, outcome: Outcome
) -> None:
    assert classify(cancel, last_get, accepted=accepted, deadline_passed=passed).outcome is outcome


def test_completed_anyway_keeps_error_code_and_message() -> None:
    verdict = classify(ok(), done(error={"code": 13, "message": "boom"}), accepted=True)
    assert verdict.details["error_code"] == 13
    assert verdict.details["error_message"] == "boom"
    assert verdict.details["finished_with"] == "error"


def test_failures_keep_the_servers_words() -> None:
    verdict = classify(DENIED, None, accepted=False)
    assert verdict.details["cancel_error"] == {
        "kind": "api_error",
        "http_status": 403,
        "code": "PERMISSION_DENIED",
        "reason": "IAM_PERMISSION_DENIED",
        "message": "permission_denied",
    }


def test_which_cancel_answers_need_a_get() -> None:
    assert needs_get(ok())
    for answer in (UNIMPLEMENTED, HTML_404, PRECONDITION, NOT_FOUND, BARE_400, TEXT_400):
        assert needs_get(answer)
    assert not needs_get(Answer(AnswerKind.OVERSIZED, 400))
    for answer in (DENIED, UNAUTH, api(400, "INVALID_ARGUMENT"), Answer(AnswerKind.TRANSPORT)):
        assert not needs_get(answer)


def test_every_outcome_but_invalid_is_reachable_by_classification() -> None:
    reached = {row[-1] for row in ROWS}
    assert reached == set(Outcome) - {Outcome.INVALID}


# ---- proto3 JSON as it is: int32 accepts numbers and numeric strings, bool only true/false ----

PROTO3_SHAPES: list[tuple[str, dict[str, Any], Outcome, dict[str, Any]]] = [
    ("code 1", {"done": True, "error": {"code": 1}}, Outcome.CANCELLED, {"error_code": 1}),
    ("code '1'", {"done": True, "error": {"code": "1"}}, Outcome.CANCELLED, {"error_code": 1}),
    ("code 1.0", {"done": True, "error": {"code": 1.0}}, Outcome.CANCELLED, {"error_code": 1}),
    (
        "code '13'",
        {"done": True, "error": {"code": "13"}},
        Outcome.COMPLETED_ANYWAY,
        {"error_code": 13},
    ),
    (
        "code null (the default, 0)",
        {"done": True, "error": {"code": None, "message": "m"}},
        Outcome.COMPLETED_ANYWAY,
        {"error_code": None, "error_message": "m"},
    ),
    (
        "code true",
        {"done": True, "error": {"code": True}},
        Outcome.ERROR,
        {"malformed_operation": "error.code is true, not an int32"},
    ),
    (
        "code '1.0'",
        {"done": True, "error": {"code": "1.0"}},
        Outcome.ERROR,
        {"malformed_operation": 'error.code is "1.0", not an int32'},
    ),
    (
        "code ' 1'",
        {"done": True, "error": {"code": " 1"}},
        Outcome.ERROR,
        {"malformed_operation": 'error.code is " 1", not an int32'},
    ),
    ("code 1.5", {"done": True, "error": {"code": 1.5}}, Outcome.ERROR, {}),
    ("code 2**31", {"done": True, "error": {"code": 2**31}}, Outcome.ERROR, {}),
    ("code as object", {"done": True, "error": {"code": {"v": 1}}}, Outcome.ERROR, {}),
    (
        "error a string",
        {"done": True, "error": "CANCELLED"},
        Outcome.ERROR,
        {"malformed_operation": 'error is "CANCELLED", not an object'},
    ),
    (
        "done 'true'",
        {"done": "true", "error": {"code": 1}},
        Outcome.ERROR,
        {"malformed_operation": 'done is "true", not true or false'},
    ),
    ("done 1", {"done": 1, "error": {"code": 1}}, Outcome.ERROR, {}),
    ("done false", {"done": False, "error": {"code": 1}}, Outcome.STILL_RUNNING, {}),
    ("done null", {"done": None}, Outcome.STILL_RUNNING, {}),
    (
        "message not a string",
        {"done": True, "error": {"code": 1, "message": ["a"]}},
        Outcome.CANCELLED,
        {"error_message": '["a"]'},
    ),
]


@pytest.mark.parametrize(
    ("body", "outcome", "details"),
    [row[1:] for row in PROTO3_SHAPES],
    ids=[row[0] for row in PROTO3_SHAPES],
)
def test_proto3_shapes(body: dict[str, Any], outcome: Outcome, details: dict[str, Any]) -> None:
    verdict = classify(ok(), ok({"name": NAME, **body}), accepted=True)
    assert verdict.outcome is outcome
    assert details.items() <= verdict.details.items()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(1, 1), ("1", 1), ("-2147483648", -(2**31)), (7.0, 7)],
        *[(True, None), (False, None), ("+1", None), ("1e0", None), ("1_0", None), ("", None)],
        *[(None, None), ("2147483648", None)],
    ],
)
def test_read_int32(value: object, expected: int | None) -> None:
    assert read_int32(value) == expected


def test_a_malformed_listed_entry_is_an_error_without_a_call() -> None:
    verdict = done_outcome({"name": NAME, "done": True, "error": {"code": True}})
    assert verdict is not None
    assert verdict.outcome is Outcome.ERROR
    assert done_outcome({"name": NAME, "metadata": {}}) is None
