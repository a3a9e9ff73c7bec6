"""What the server answered, read once: Google's error envelope, retry hints, quota metadata,
the kinds of failure.

The ground floor of the client side: pure, no I/O. The client turns every HTTP exchange into an
``Answer``; classification and the engine read Answers and never raw HTTP. Text that came from the
server is scrubbed of the credential the client sent (``secrets``) before it is parsed, so a
server that echoes the Authorization header cannot put the token into a report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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
    THROTTLED = "throttled"  # not sent again: the key's or the call's throttle budget ran out


#: What a redacted credential becomes in server-supplied text.
REDACTED = "[REDACTED]"


@dataclass(frozen=True, slots=True)
class QuotaInfo:
    """ErrorInfo quota metadata of a throttle answer (all optional, as servers send what they
    like): ``quota_limit`` is a name such as ``ApiRequestsPerMinutePerProjectPerRegion``."""

    metric: str | None = None
    limit: str | None = None
    limit_value: float | None = None
    location: str | None = None

    @property
    def per_second(self) -> float | None:
        """The limit as requests per second when it is a per-minute (or per-second) rate with
        a positive value; None otherwise ("0" means no quota at all, not a rate)."""
        if self.limit_value is None or self.limit_value <= 0 or not self.limit:
            return None
        name = self.limit.lower()
        if "perminute" in name or "per minute" in name:
            return self.limit_value / 60.0
        if "persecond" in name or "per second" in name:
            return self.limit_value
        return None

    @property
    def project_wide(self) -> bool:
        """The quota is counted for the whole project, not per region: ``quota_location:
        global``, or a limit whose name names no region, location or zone."""
        if self.location is not None:
            return self.location == "global"
        if self.limit is None:
            return False
        name = self.limit.lower()
        return not any(word in name for word in ("region", "location", "zone"))

    @property
    def regional(self) -> bool:
        """The quota is counted per region (or zone): ``quota_location`` names one, or the
        limit's name names a region, location or zone. Such a key's walls are its own, however
        often they coincide with another region's (synchronized per-minute windows turn for
        every region at once). The other side of :attr:`project_wide`, when either is said."""
        said = self.location is not None or self.limit is not None
        return said and not self.project_wide


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
    quota: QuotaInfo | None = None
    attempts: int = 0
    throttled: int = 0
    #: another try cannot change it (a TLS failure, an answer about another operation)
    final: bool = False

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


def scrub(body: bytes, secrets: Iterable[bytes]) -> bytes:
    """``body`` with every secret replaced by ``[REDACTED]``."""
    for secret in secrets:
        if secret and secret in body:
            body = body.replace(secret, REDACTED.encode())
    return body


def scrub_text(text: str, secrets: Iterable[bytes]) -> str:
    """Like :func:`scrub`, for text (a transport error's message)."""
    for secret in secrets:
        word = secret.decode("utf-8", "replace")
        if word and word in text:
            text = text.replace(word, REDACTED)
    return text


def interpret(raw: RawResponse, secrets: Iterable[bytes] = ()) -> Answer:
    """Turn a raw response into an Answer. Pure. ``secrets`` (the credential sent) are removed
    from the body before anything reads it."""
    status = raw.status
    if raw.oversized:
        return Answer(AnswerKind.OVERSIZED, status, message="response body over the size cap")
    if 300 <= status < 400:
        return Answer(AnswerKind.REDIRECT, status, message="redirect not followed")
    parsed: Any = None
    body = scrub(raw.body, secrets) if raw.body else raw.body
    if body == b"{}":
        parsed = {}  # a cancel's google.protobuf.Empty: most answers of a run
    elif body:
        try:
            # JSON on the wire is UTF-8 (RFC 8259; a BOM is tolerated); decoding it
            # ourselves spares json's encoding detection on every answer.
            parsed = json.loads(body.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            parsed = None
    if 200 <= status < 300:
        if isinstance(parsed, dict):
            return Answer(AnswerKind.OK, status, body=parsed)
        if not body:
            return Answer(AnswerKind.OK, status, body={})
        return Answer(AnswerKind.MALFORMED, status, message="response is not a JSON object")
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        text = body[:200].decode("utf-8", "replace").strip()
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
    for detail in _listed(error.get("details")):
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo"):
            answer.reason = _str(detail.get("reason")) or answer.reason
            answer.quota = _quota(detail.get("metadata")) or answer.quota
        elif kind.endswith("google.rpc.RetryInfo"):
            answer.retry_delay = parse_duration(detail.get("retryDelay"))
    hinted = parse_retry_after(raw.retry_after)
    if hinted is not None:  # Retry-After wins over RetryInfo when both are present
        answer.retry_delay = hinted
    if answer.reason is None:
        for legacy in _listed(error.get("errors")):
            if isinstance(legacy, dict) and legacy.get("reason"):
                answer.reason = _str(legacy.get("reason"))
                break
    return answer


def _listed(value: object) -> list[object]:
    """A JSON array the envelope should hold, or nothing: a server that sends ``"details": 5``
    (or an object, or a string) has sent no details, and is no reason to stop the run."""
    return value if isinstance(value, list) else []


def _quota(metadata: object) -> QuotaInfo | None:
    if not isinstance(metadata, dict):
        return None
    info = QuotaInfo(
        metric=_str(metadata.get("quota_metric")),
        limit=_str(metadata.get("quota_limit")),
        limit_value=_number(metadata.get("quota_limit_value")),
        location=_str(metadata.get("quota_location")),
    )
    return info if info != QuotaInfo() else None


def _number(value: object) -> float | None:
    """A finite non-negative number from a JSON number or numeric string."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if 0 <= number < float("inf") else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
