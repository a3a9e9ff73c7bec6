"""Whether the run's first answers say it is doomed: the endpoint unreachable, wrong, or the
credentials rejected. The client tells :class:`FailFast` what it sees and stops the run (one
line for people) when it says so.

* ``UNREACHABLE``: no HTTP answer at all to the run's first 16 attempts, or a call that ran out
  of tries while nothing in the run had an HTTP answer yet (a few calls can exhaust their
  tries before the 16 are in).
* ``WRONG_ENDPOINT``: non-JSON 404 pages to 4 GET or list calls before any Google JSON answer
  (a cancel's 404 may be an operation's own).
* ``UNAUTHENTICATED``: 8 answers of 401 before any call ended in an answer under 500.

(A certificate that does not verify is final at once, never retried: the client stops the run
itself when the transport says so.)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from bulkcancel._answers import Answer, AnswerKind
from bulkcancel._models import StopReason

__all__ = ["Doomed", "FailFast"]

#: why the run stops, and one line for people
Doomed = tuple[StopReason, str]

_AUTH_GIVE_UP = 8  # this many 401s before any success: the credentials are wrong, stop early
_UNREACHABLE_AFTER = 16  # the run's first attempts all without an HTTP answer: stop early
_WRONG_ENDPOINT_AFTER = 4  # GET/list answered by non-JSON 404 pages before any Google JSON


class FailFast:
    """What the run's answers so far say of the endpoint (``endpoint``: named in the line)."""

    __slots__ = ("_endpoint", "_google_answered", "_heard", "_unanswered", "_unrouted",
                 "successes")  # fmt: skip

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._heard = False  # any attempt had an HTTP answer
        self._unanswered = 0  # attempts without one, until one had
        self._google_answered = False
        self._unrouted: list[str] = []
        #: calls that ended in an answer under 500 (not a transport failure)
        self.successes = 0

    def answered(self, kind: str, url: str, answer: Answer) -> Doomed | None:
        """Every attempt's answer (``kind``: cancel, get or list; ``url``: what was asked)."""
        if answer.kind is AnswerKind.TRANSPORT:
            if not self._heard:
                self._unanswered += 1
                if self._unanswered >= _UNREACHABLE_AFTER:
                    return self._unreachable(answer)
            return None
        self._heard = True
        if answer.kind in (AnswerKind.OK, AnswerKind.API_ERROR):
            self._google_answered = True
        if self._google_answered or kind == "cancel":
            return None
        if answer.kind is AnswerKind.HTTP_ERROR and answer.status == 404:
            self._unrouted.append(urlsplit(url).path)
            if len(self._unrouted) >= _WRONG_ENDPOINT_AFTER:
                return (
                    StopReason.WRONG_ENDPOINT,
                    f"{self._endpoint} answered {len(self._unrouted)} GET/list calls with "
                    f"non-JSON 404 pages and nothing else (e.g. {self._unrouted[0]}): "
                    "check --endpoint and --api-version",
                )
        return None

    def gave_up(self, answer: Answer) -> Doomed | None:
        """A call ran out of tries (``answer``: its last). If no request of the run has had an
        HTTP answer yet, that is proof enough that the endpoint is unreachable, even before the
        run's first ``_UNREACHABLE_AFTER`` attempts are in."""
        if answer.kind is AnswerKind.TRANSPORT and not self._heard:
            return self._unreachable(answer)
        return None

    def unauthenticated(self, count: int) -> Doomed | None:
        """The run's ``count``-th answer of 401."""
        if not self.successes and count >= _AUTH_GIVE_UP:
            return (
                StopReason.UNAUTHENTICATED,
                f"{self._endpoint} rejected the credentials (401) on the first {count} requests",
            )
        return None

    def _unreachable(self, answer: Answer) -> Doomed:
        return (
            StopReason.UNREACHABLE,
            f"no answer from {self._endpoint}: the first {self._unanswered} requests "
            f"failed ({answer.message})",
        )
