"""What the server answered, read once: Google's error envelope, retry hints, the kinds of failure.

The ground floor of the client side: pure, no I/O. The client turns every HTTP exchange into an
``Answer``; classification and the engine read Answers and never raw HTTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bulkcancel._retry import parse_duration, parse_retry_after
from bulkcancel._transport import RawResponse


class AnswerKind(StrEnum):
    OK = "ok"  # 2xx with a JSON object
    API_ERROR = "api_error"  # Google's error envelope
    HTTP_ERROR = "http_error"  # an error status without Google JSON (HTML 404/502, plain text)
    TRANSPORT = "transport"  # no HTTP answer
    OVERSIZED = "oversized"  # body over the cap
    MALFORMED = "malformed"  # 2xx whose body is not a JSON object
    REDIRECT = "redirect"  # 3xx: never followed
    STOPPED = "stopped"  # not sent: the client was stopped before this attempt


@dataclass(slots=True)
class Answer:
    """The last answer to one logical call, after retries, and what it took to get it."""

    kind: AnswerKind
    status: int = 0
    body: dict[str, Any] | None = None
    code: str | None = None  # canonical status name: NOT_FOUND, FAILED_PRECONDITION, ...
    reason: str | None = None  # ErrorInfo reason (or legacy errors[].reason)
    message: str | None = None
    retry_delay: float | None = None
    attempts: int = 0
    throttled: int = 0

    @property
    def ok(self) -> bool:
        return self.kind is AnswerKind.OK

    def summary(self) -> dict[str, Any]:
        """What the report keeps about a failed call."""
        out: dict[str, Any] = {"kind": self.kind.value}
        if self.status:
            out["http_status"] = self.status
        if self.code:
            out["code"] = self.code
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message[:500]
        return out


def interpret(raw: RawResponse) -> Answer:
    """Turn a raw response into an Answer. Pure."""
    status = raw.status
    if raw.oversized:
        return Answer(AnswerKind.OVERSIZED, status, message="response body over the size cap")
    if 300 <= status < 400:
        return Answer(AnswerKind.REDIRECT, status, message="redirect not followed")
    parsed: Any = None
    if raw.body:
        try:
            parsed = json.loads(raw.body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
    if 200 <= status < 300:
        if isinstance(parsed, dict):
            return Answer(AnswerKind.OK, status, body=parsed)
        if not raw.body:
            return Answer(AnswerKind.OK, status, body={})
        return Answer(AnswerKind.MALFORMED, status, message="response is not a JSON object")
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        text = raw.body[:200].decode("utf-8", "replace").strip()
        kind = "HTML" if "html" in raw.content_type.lower() else "non-JSON"
        return Answer(
            AnswerKind.HTTP_ERROR,
            status,
            message=f"{kind} error page: {text[:120]}".strip(),
            retry_delay=parse_retry_after(raw.retry_after),
        )
    answer = Answer(
        AnswerKind.API_ERROR,
        status,
        code=_str(error.get("status")),
        message=_str(error.get("message")),
    )
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo"):
            answer.reason = _str(detail.get("reason")) or answer.reason
        elif kind.endswith("google.rpc.RetryInfo"):
            answer.retry_delay = parse_duration(detail.get("retryDelay"))
    hinted = parse_retry_after(raw.retry_after)
    if hinted is not None:  # Retry-After wins over RetryInfo when both are present
        answer.retry_delay = hinted
    if answer.reason is None:
        for legacy in error.get("errors") or ():
            if isinstance(legacy, dict) and legacy.get("reason"):
                answer.reason = _str(legacy.get("reason"))
                break
    return answer


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
