"""Which requests of a quota key share its quota: its cancels and its reads, together or apart.

Cloud Batch meters writes and reads apart (6,000 and 15,000 a minute per region), Cloud Deploy
all requests together. A key's cancels and its reads (GETs, list pages) are paced by one pacer
until they prove metered apart; from then on its reads ask their turns of a pacer of their own,
``KEY|reads`` (:data:`READS`), and the two are never merged again. Two things prove it:

* ErrorInfo (:meth:`Metering.told`): a throttle's quota named for its own kind (a cancel's
  ``write_requests``, a read's ``read_requests``), or the throttles of a key's cancels and of its
  reads naming two quotas;
* with bare 429s, who is refused (:meth:`Metering.answered`): a quarter or more of the key's
  last 32 cancels refused while not one of its last 32 reads was, the two spans overlapping.

The project's sharing of one quota between keys (:mod:`bulkcancel._sharing`) owns this: it asks
which key a request asks its turn of (:meth:`Metering.key_for`), tells it every answer of a key
paced on its own, and takes keys whose kinds were paced apart as walled by quotas of their own.
"""

from __future__ import annotations

import math
import re
from collections import deque
from typing import TYPE_CHECKING

from bulkcancel._answers import QuotaInfo
from bulkcancel._pacer import KeyPacer

if TYPE_CHECKING:
    from bulkcancel._limits import RateGovernor

__all__ = ["READS", "Metering"]

#: The suffix of a key's reads (GET, list) once they are paced apart from its cancels.
READS = "|reads"
#: a quota's metric or limit named for one kind of request (``write_requests``,
#: ``ReadRequestsPerMinutePerProjectPerRegion``): the other kind is metered apart
_METER = re.compile(r"(read|write)[ _]?requests", re.IGNORECASE)

_KINDS_SEEN = 32  # a key's last answers of each kind (cancels, reads) kept ...
_KINDS_REFUSED = 0.25  # ... its cancels refused this share of them, not one of its reads:
_KINDS_OVERLAP = 1.0  # ... both within this many seconds of each other: metered apart


class Metering:
    """The keys whose reads are paced apart from their cancels, and the evidence for the rest.

    One per :class:`~bulkcancel._sharing.QuotaSharing`; asks the governor for the clock, the
    reads' new pacer, and to wake the requests waiting at the key's."""

    def __init__(self, governor: RateGovernor) -> None:
        self._governor = governor
        #: key -> for its cancels (False) and its reads (True), the quota ErrorInfo last named
        #: for them (metric, limit) and the per-second value it stated (see :meth:`told`)
        self._meters: dict[str, dict[bool, tuple[tuple[str | None, str | None], float | None]]]
        self._meters = {}
        self._apart: set[str] = set()  # keys whose reads are paced apart (key + READS)
        #: key -> its last answers of each kind (True: reads), (when, refused), while it paces
        #: both kinds with one pacer (see :meth:`answered`)
        self._seen: dict[str, dict[bool, deque[tuple[float, bool]]]] = {}

    def key_for(self, key: str, *, read: bool) -> str:
        """The key a request of ``key`` asks its turn of: ``key`` itself, or for a read (a GET
        or a list page) ``key + READS`` once its reads and cancels proved metered apart."""
        return key + READS if read and key in self._apart else key

    def told(self, key: str, quota: QuotaInfo, pacer: KeyPacer, *, read: bool) -> bool:
        """A throttle of ``key`` (paced by ``pacer``) whose ErrorInfo named its quota. When
        that quota is named for its own kind (a cancel's ``write_requests`` or
        ``WriteRequestsPerMinute...``, a read's ``read_requests``: Google's names for such
        quotas), or the throttles of a key's cancels and of its reads name two quotas
        (ErrorInfo's ``quota_metric`` or ``quota_limit`` differ), the reads get a pacer of
        their own from then on, at the rate the key had and each capped at the value its own
        throttles stated, and this returns True: the walls of both are their own quotas'.
        (One pacer for both: its cancels were refused half the time while its reads all went
        through, a share that held when the rate moved and was taken for background, 20% of
        requests refused; or it held near twice the write quota while reads took half its
        turns, 1.26-1.40x the floor.) Only on what ErrorInfo names here: one name for both
        keeps one pacer, and bare 429s are judged by who they refuse (:meth:`answered`). (A
        read's own throttle, this one or one in flight, reaches the reads' pacer with its
        value: see RateGovernor.report.)"""
        named = (quota.metric, quota.limit)
        base = key.removesuffix(READS)
        if named == (None, None) or base in self._apart:
            return False
        meters = self._meters.setdefault(base, {})
        meters[read] = (named, quota.per_second)
        other = meters.get(not read)
        own = _METER.search(" ".join(n for n in named if n is not None))
        says = own is not None and (own.group(1).lower() == "read") == read
        if not (says or (other is not None and other[0] != named)):
            return False
        reads = self._pace_apart(base, pacer)
        writes = meters.get(False, (named, None))[1]
        pacer.state_limit(writes if writes is not None else math.inf)
        stated = meters.get(True, (named, None))[1]
        if stated is not None:
            reads.state_limit(stated)
        return True

    def answered(self, key: str, pacer: KeyPacer, *, read: bool, throttled: bool) -> None:
        """An answer to a request of ``key``, paced by its own ``pacer`` (``read``: a GET or a
        list page). With bare 429s nothing names the quotas, but who is refused tells: a key
        paced as one whose last 32 cancels had a quarter or more refused while not one of its
        last 32 reads was, the two spans overlapping (within a second of each other), meters
        its reads apart from its cancels (one quota refuses both kinds alike: none of 32 reads
        refused where a quarter of the cancels are is a chance of one in ten thousand). Its
        reads get a pacer of their own, as when ErrorInfo names the two quotas (writes at
        50/s, reads at 125/s, bare 429s, read back by GET: 1.10x the floor and 16.4% of 429s,
        the one pacer holding the reads to the cancels' pace and its cancels refused at the
        reads')."""
        if key.endswith(READS) or key in self._apart:
            return
        now = self._governor.now()
        seen = self._seen.setdefault(key, {})
        answers = seen.get(read)
        if answers is None:
            answers = seen[read] = deque(maxlen=_KINDS_SEEN)
        answers.append((now, throttled))
        cancels, reads = seen.get(False), seen.get(True)
        if (
            not throttled
            or read
            or cancels is None
            or reads is None
            or len(cancels) < _KINDS_SEEN
            or len(reads) < _KINDS_SEEN
        ):
            return
        if any(refused for _, refused in reads):
            return
        if sum(refused for _, refused in cancels) < _KINDS_REFUSED * _KINDS_SEEN:
            return
        if now - reads[-1][0] > _KINDS_OVERLAP or reads[0][0] < cancels[0][0] - _KINDS_OVERLAP:
            return  # (the reads must be this key's lately, beside these cancels)
        self._pace_apart(key, pacer)

    def _pace_apart(self, base: str, pacer: KeyPacer) -> KeyPacer:
        """From now on ``base``'s reads ask their turns of a pacer of their own (returned),
        which starts at the rate ``pacer`` (the key's) had; reads waiting at ``pacer`` move to
        it at once (before, they kept their places behind the key's cancels: a key at 10/s
        whose reads were paced apart 7 s into its run still granted every other turn of its
        own, 1-3 s later, to reads asked at 3.5-4.3 s)."""
        self._apart.add(base)
        self._seen.pop(base, None)
        reads = self._governor.pacer(base + READS)
        reads.rate = pacer.rate
        self._governor.wake_turns(pacer)  # (reads waiting there queue at their own)
        return reads
