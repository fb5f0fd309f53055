"""A drain's reserve: the jobs it has claimed and not started yet, and where each may start.

Two kinds of claims wait here:

- **seated**: claimed with a place of its endpoint's ``max_concurrency`` (the endpoint's
  count, ``endpoint_in_flight``, already holds it). A drain seats the jobs it has places free
  to start (``DRAIN_CONCURRENCY``), and more only while the endpoint has room to spare (over
  half its max_concurrency, ``Seat.floor``), where the balancer's shares stay exact;
- **behind**: every other claim. It counts against no endpoint yet. It starts only in the
  place of one of this drain's own calls to its endpoint that finished, and the next step
  writes it to the endpoint (``claims_seat``) in the same transaction that records the
  finished call. The endpoint's count never grows for it, and never counts fewer calls than
  are out. A drain may hold behind an endpoint half as many jobs as it has calls out there.

So an endpoint's ``max_concurrency`` counts calls, never a reserve. Before, the reserve held
places like calls: a full endpoint's place, freed by a finished call, stayed empty until the
drain's next step recorded the call and claimed another job (with two drains sharing an
endpoint capped at 64 the queue reached 0.88 of the direct-call ceiling, against 0.94 below
the cap; now 0.95: bench/throughput.py, figures in the README), and a drain with fewer places
than the cap held places in its reserve that another drain's calls could have used.

A place is passed on only after a call that says the endpoint is fine (not a failure, not a
429, no Retry-After): a failing endpoint gets no more calls this way than the breaker allows
(on probation it has no seats to wait behind, ``dispatch_pools``). The claims behind an
endpoint that can no longer take calls (its breaker opened, it was paused, disabled or found
unhealthy) go back to the queue (``Reserve.work_done``).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

from llmqueue.calls.types import CallOutcome
from llmqueue.jobs import AttemptResult, Claim

_Heap = list[tuple[tuple[int, int, int], Claim]]


@dataclasses.dataclass
class StepWork:
    """What a drain's step does for its reserve, besides recording calls and claiming jobs,
    and what the reserve learns from it."""

    #: claims that took a place of the drain's finished calls: written to their endpoints
    seating: list[Claim]
    #: claims behind endpoints that can no longer take calls: given back to the queue
    giving_back: list[Claim]
    #: how many claims may wait behind each endpoint (``Reserve.behind_room``)
    behind: dict[int, int] = dataclasses.field(default_factory=dict)
    #: how many claims may take a place of an endpoint's room: those the drain can start
    seats: int | None = None
    #: the endpoints that can take calls, as the step's plan saw them (None: not looked at)
    usable: frozenset[int] | None = None

    def __bool__(self) -> bool:
        return bool(self.seating or self.giving_back)


class Reserve:
    """One drain's claimed jobs that wait for a place, each kind in the queue's order."""

    def __init__(self) -> None:
        self._seated: _Heap = []
        self._behind: defaultdict[int, _Heap] = defaultdict(list)
        #: places of this drain's finished calls (not yet recorded), by endpoint, that a claim
        #: behind it may take
        self._free: Counter[int] = Counter()
        #: claims that took such a place since the last step: the next step writes them to
        #: their endpoints
        self._seating: list[Claim] = []
        #: claims behind endpoints that can no longer take calls: the next step releases them
        self._giving_back: list[Claim] = []

    def __len__(self) -> int:
        return len(self._seated) + sum(len(h) for h in self._behind.values())

    @property
    def seated(self) -> int:
        """The claims here that hold a place of their endpoint's room."""
        return len(self._seated)

    def claims(self) -> list[Claim]:
        """Every claim held here (their leases are renewed with the drain's calls)."""
        heaps = [self._seated, *self._behind.values()]
        return [*(c for heap in heaps for _, c in heap), *self._giving_back]

    def add(self, claim: Claim) -> None:
        heap = self._seated if claim.seated else self._behind[claim.target.id]
        heapq.heappush(heap, (claim.rank, claim))

    def freed(self, result: AttemptResult) -> None:
        """A call of this drain finished: its place may pass to a claim behind its endpoint,
        unless the call says the endpoint is in trouble."""
        call = result.call
        if call.health is CallOutcome.FAILURE or call.http_status == 429 or call.pause_s:
            return
        self._free[call.target.id] += 1

    def next(self) -> Claim | None:
        """The claim to start in the drain's next free place: the first in the queue's order
        among the seated ones and those behind an endpoint where a place was freed."""
        best: _Heap | None = None
        best_endpoint = 0
        if self._seated:
            best = self._seated
        for endpoint_id, heap in self._behind.items():
            if heap and self._free[endpoint_id] > 0 and (best is None or heap[0] < best[0]):
                best, best_endpoint = heap, endpoint_id
        if best is None:
            return None
        _, claim = heapq.heappop(best)
        if best is not self._seated:
            self._free[best_endpoint] -= 1
            self._seating.append(claim)
        return claim

    def work(self) -> StepWork:
        """For a step that records every call finished so far: the claims to write to their
        endpoints, and those to give back. The places not passed on are given up: that step
        frees them."""
        work = StepWork(self._seating, self._giving_back)
        self._seating, self._giving_back = [], []
        self._free.clear()
        return work

    def work_failed(self, work: StepWork) -> None:
        """The step failed: the next one does its work."""
        self._seating[:0] = work.seating
        self._giving_back[:0] = work.giving_back

    def work_done(self, work: StepWork, claims: Iterable[Claim]) -> None:
        """The step committed: its claims wait here, and those behind an endpoint it found
        unusable go back to the queue with the next step."""
        for claim in claims:
            self.add(claim)
        if work.usable is not None:
            gone = [e for e, heap in self._behind.items() if heap and e not in work.usable]
            self._giving_back += [c for e in gone for _, c in self._behind.pop(e)]

    def behind_room(self, running: Iterable[Claim]) -> dict[int, int]:
        """How many more claims may wait behind each endpoint: half the drain's calls out
        there (like the reserve's half of the drain's places), less those already waiting."""
        out = Counter(c.target.id for c in running)
        room = {e: n // 2 - len(self._behind.get(e, ())) for e, n in out.items()}
        return {e: n for e, n in room.items() if n > 0}

    def clear(self) -> list[Claim]:
        """Take out every claim (a stopping drain gives them back)."""
        claims = self.claims()
        self._seated.clear()
        self._behind.clear()
        self._giving_back.clear()
        return claims
