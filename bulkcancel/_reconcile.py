"""What the reconciler knows about each operation and each parent, and how it picks GET or list.

Pure bookkeeping, no I/O: the engine (``_engine.py``) does the calls and feeds the measurements
back here.

Why a choice at all: a list page settles up to a page of operations for one call, a GET settles
one. When the ``--rate`` (the quota) binds, calls are the cost and a page that carries more than
one of our operations wins. When the rate does not bind, time is the cost: pages of one listing
come one after another (each needs the previous page's token), GETs go out side by side, so a
long walk through many pages can take longer than the GETs it would save.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bulkcancel._answers import Answer

#: weight of the newest sample in the running averages below
_EWMA = 0.2


@dataclass(eq=False, slots=True)
class Pending:
    """An operation in the reconciler: cancel answered (or accepted in an earlier run)."""

    name: str
    parent: str
    cancel: Answer | None
    accepted: bool
    deadline_at: float
    interval: float
    #: when it next wants a look. Deferring it (its parent's listing is busy) moves its heap
    #: entry, not this: a page that shows it after this time settles or reschedules it.
    due: float
    calls: int = 0
    last_get: Answer | None = None
    force_get: bool = False
    settled: bool = False
    #: the parent's pass number when it joined: any pass numbered higher must list it
    joined_pass: int = 0
    #: the last pass whose pages showed it
    seen_pass: int = -1
    #: the sequence number of its live heap entry: an entry with another number is stale
    #: (the operation was rescheduled since, by a look that a page gave it); -1 while it is
    #: off the heap, taken for a job
    ticket: int = -1
    #: (pass, page index in it, token) of the page that listed it while its cancel was not
    #: answered yet: where a later pass finds it, once it is
    wire_page: tuple[int, int, str | None] | None = None
    #: its next GET is the first look after its cancel was accepted in this run (see
    #: ``FirstLook``); a page that shows it first takes that away
    first_look: bool = False


@dataclass(eq=False, slots=True)
class Parent:
    """One parent's operations awaiting reconciliation, and what listing it has cost so far.

    A *pass* walks the listing from the first page to the last. A pass may be paused (its next
    page token kept in ``cursor``) and resumed by a later sweep: sweeps that start while cancels
    are still going out stop where the cancels have not arrived yet, instead of walking ahead.
    """

    name: str
    members: dict[str, Pending] = field(default_factory=dict)
    sweeping: bool = False
    #: the token of the page to fetch next in the current pass; None: the pass starts afresh
    cursor: str | None = None
    #: the token a sweep paused at, once: a second visit walks on (no pause twice in one place)
    paused_at: str | None = None
    in_pass: bool = False
    pass_no: int = 0
    pass_pages: int = 0
    #: pages of the last complete pass, once one completed
    full_pass_pages: int | None = None
    pages: int = 0
    found: int = 0
    no_list: bool = False
    #: members that joined since the last sweep ended
    joined: int = 0
    #: seconds for one page (running average), entries per page (running average)
    page_seconds: float = 0.0
    page_entries: float = 0.0
    next_sweep: float = 0.0
    #: our unsettled operations the pages showed, and how many of them were finished
    looks: int = 0
    finished_looks: int = 0
    #: operations a page listed while their cancel was not answered yet -> ``Pending.wire_page``
    #: (handed over when they join; a name whose cancel needs no GET leaves its entry here, so
    #: it holds at most the names taken from the input that never joined)
    wire_pages: dict[str, tuple[int, int, str | None]] = field(default_factory=dict)

    def record_page(self, seconds: float, entries: int) -> None:
        if self.pages <= 1:
            self.page_seconds, self.page_entries = seconds, float(entries)
        else:
            self.page_seconds += _EWMA * (seconds - self.page_seconds)
            self.page_entries += _EWMA * (entries - self.page_entries)

    def record_look(self, finished: bool) -> None:
        """A page showed one of our unsettled operations, finished or still running."""
        self.looks += 1
        self.finished_looks += finished

    def done_share(self) -> float:
        """Of our operations the pages showed unsettled, the share already finished."""
        return self.finished_looks / self.looks if self.looks else 0.0

    def pages_left(self) -> int | None:
        """Pages the current (or next) pass still has to walk, when a complete pass told us."""
        if self.full_pass_pages is None:
            return None
        done = self.pass_pages if self.in_pass else 0
        return max(1, self.full_pass_pages - done)

    def wasteful(self) -> bool:
        """Listing has cost more calls than it found operations of ours: most of this parent is
        other operations (or a server paging out nothing), and GETs are cheaper."""
        return self.pages > 8 and self.pages > self.found


#: ``FirstLook``: a look that finds the operation done shortens the delay by this factor, one
#: that finds it still running lengthens it by ``1 / _SHRINK ** _DONE_PER_RUNNING``: the delay
#: settles where about 7 first looks in 8 find the operation done.
_SHRINK = 0.9
_DONE_PER_RUNNING = 7
#: the shortest first-look delay, as a share of ``poll_initial``
_FLOOR_SHARE = 1 / 50


@dataclass(slots=True)
class FirstLook:
    """How long after an accepted cancel its first GET waits, learnt from the server.

    A cancel is best effort and asynchronous: only a later look tells ``cancelled`` from
    ``completed_anyway``, and how soon an operation shows ``done`` after its cancel is the
    server's own latency. A fixed ``poll_initial`` is too short for a server whose cancels take
    seconds (GETs that find nothing) and, on one whose operations are done by the time the
    cancel is answered, a pause of ``poll_initial`` after the last cancel that the run waits for.

    So the delay starts at ``poll_initial`` and adapts to what first looks find, multiplicatively
    (as a congestion window does): each one that finds the operation done shortens it by
    ``_SHRINK``, each one that finds it still running lengthens it seven times as much, never
    past ``poll_initial`` nor below a fiftieth of it. It settles where about 7 first looks in 8
    find the operation done. A server whose cancels are slow keeps the delay at
    ``poll_initial``: the same looks, the same requests as a fixed delay. One whose cancels
    settle at once gets its looks within tens of milliseconds, with no more requests either
    (a look that finds the operation done is the one look it needed)."""

    ceiling: float
    delay: float = 0.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        self.delay = self.ceiling
        self.floor = self.ceiling * _FLOOR_SHARE

    def found(self, *, done: bool) -> None:
        """A first look found the operation done, or still running."""
        if done:
            self.delay = max(self.floor, self.delay * _SHRINK)
        else:
            self.delay = min(self.ceiling, self.delay / _SHRINK**_DONE_PER_RUNNING)


@dataclass(slots=True)
class Costs:
    """Running measurements the choice between GET and list rests on."""

    #: seconds for one GET, from the first GET timed; until then from the cancels (one
    #: request for one operation as well), so that a run that only listed can still tell
    get_seconds: float = 0.0
    gets: int = 0
    cancels: int = 0

    def record_get(self, seconds: float) -> None:
        self.gets += 1
        if self.gets == 1:
            self.get_seconds = seconds
        else:
            self.get_seconds += _EWMA * (seconds - self.get_seconds)

    def record_cancel(self, seconds: float) -> None:
        if self.gets:
            return
        self.cancels += 1
        if self.cancels == 1:
            self.get_seconds = seconds
        else:
            self.get_seconds += _EWMA * (seconds - self.get_seconds)

    @property
    def timed(self) -> bool:
        return self.gets > 0 or self.cancels > 0


#: in time terms, GETs must beat a sweep by this factor to be chosen: a sweep that costs about
#: the same time saves calls (the production limit), and the measurements are noisy
GET_MARGIN = 2.0


def prefer_list(
    parent: Parent,
    due: int,
    *,
    rate_binds: bool,
    cancels_pending: bool,
    concurrency: int,
    costs: Costs,
) -> bool:
    """Whether a sweep of ``parent`` beats GETs for its ``due`` operations, by cost per settled
    operation in the resource that binds.

    A sweep settles the due operations and every other member its pages show finished (the
    share measured on earlier pages); a GET settles one.

    - The rate binds: calls. Pages per settled operation against one call.
    - Otherwise, while cancels are still going out: slot-seconds (requests x measured latency).
      The client's in-flight slots are what the cancels need; a sweep holds one slot for its
      pages one after another, GETs hold one slot each.
    - Otherwise (only reconciliation is left): wall time. Pages come one after another, GETs
      go out ``concurrency`` at a time; GETs must win by ``GET_MARGIN`` (a tie saves calls).

    Without a complete pass (or a GET) to go by, listing is tried: it measures."""
    pages = parent.pages_left()
    if pages is None:
        return True
    settles = due + (len(parent.members) - due) * parent.done_share()
    if rate_binds or not costs.timed or parent.pages == 0:
        return pages <= settles
    list_time = pages * parent.page_seconds
    if cancels_pending:
        return list_time <= settles * costs.get_seconds
    rounds = -(-due // max(1, concurrency))  # GETs go out side by side, concurrency at a time
    return list_time <= GET_MARGIN * rounds * costs.get_seconds
