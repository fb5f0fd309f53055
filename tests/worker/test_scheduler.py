"""The scheduler's plan, in memory: candidates, seats and buckets in, assignments out. No
database (the endpoints' seats and the buckets are built as the storage would load them)."""

from __future__ import annotations

import itertools

from llmqueue.calls.types import Target
from llmqueue.endpoints.pools import Pools, Seat
from llmqueue.limits.ledger import USER_RPM, Ledger
from llmqueue.policies.breaker import BreakerSettings, BreakerState
from llmqueue.policies.buckets import Bucket, BucketState
from llmqueue.worker.scheduler import Candidate, plan_assignments

NOW = 1_000_000.0
_ids = itertools.count(1)


def seat(endpoint_id: int, room: int, *, behind: int = 0, floor: int = 0) -> Seat:
    target = Target(endpoint_id, f"ep{endpoint_id}", "http://x", "", 10.0)
    return Seat(endpoint_id, 1, 0, room, None, 0.0, target, BreakerState(), False, behind, floor)


def pools(**by_model: list[Seat]) -> Pools:
    return Pools(by_model, BreakerSettings(), [])


def candidate(model: str = "m", *, owner: int = 1, priority: int = 5, pin: int | None = None):
    pk = next(_ids)
    return Candidate((-priority, 0, pk), model, owner, 10, pin)


def ledger(**per_owner_rpm: int) -> Ledger:
    """A ledger whose buckets are already loaded: one requests-per-minute bucket per owner."""
    book = Ledger({}, NOW)
    for owner, rpm in per_owner_rpm.items():
        key = (USER_RPM, owner.removeprefix("u"))
        book.specs[key] = spec = Bucket.per_minute(rpm)
        book.states[key] = book._loaded[key] = BucketState.full(spec, NOW)
    return book


def plan(candidates, *, limit=100, seats=None, book=None, startable=None):
    seats = seats if seats is not None else pools(m=[seat(1, 100)])
    return plan_assignments(
        sorted(candidates), limit=limit, pools=seats, ledger=book or ledger(), seats=startable
    )


def test_jobs_are_planned_in_the_queues_order_up_to_the_limit():
    low, high, mid = candidate(priority=1), candidate(priority=9), candidate(priority=5)
    planned, held = plan([low, high, mid], limit=2)
    assert [a.job_id for a in planned] == [high.rank[2], mid.rank[2]]
    assert [a.rank for a in planned] == [high.rank, mid.rank]
    assert held == {}


def test_no_endpoint_gets_more_than_its_room_and_the_rest_wait():
    seats = pools(m=[seat(1, 2), seat(2, 1)])
    planned, _ = plan([candidate() for _ in range(5)], seats=seats)
    assert sorted(a.endpoint_id for a in planned) == [1, 1, 2]
    assert {a.endpoint_id: a.target.name for a in planned} == {1: "ep1", 2: "ep2"}


def test_a_model_without_seats_waits_and_others_go():
    planned, held = plan([candidate("other"), candidate("m")])
    assert [a.target.id for a in planned] == [1]
    assert held == {}


def test_a_pinned_job_goes_only_to_its_endpoint_and_waits_if_it_is_full():
    seats = pools(m=[seat(1, 5), seat(2, 0)])
    to_two, to_one = candidate(pin=2, priority=9), candidate(pin=1)
    planned, _ = plan([to_two, to_one], seats=seats)
    assert [(a.job_id, a.endpoint_id) for a in planned] == [(to_one.rank[2], 1)]


def test_an_owner_over_their_rate_limit_waits_while_others_go():
    book = ledger(u1=2)
    jobs = [candidate(owner=1, priority=9) for _ in range(4)] + [candidate(owner=2)]
    planned, held = plan(jobs, book=book)
    assert [a.job_id for a in planned] == [jobs[0].rank[2], jobs[1].rank[2], jobs[4].rank[2]]
    assert held == {USER_RPM: 2}
    assert not any(a.tokens_charged for a in planned)  # no tokens-per-minute bucket


def test_a_full_endpoint_takes_jobs_behind_it_only_up_to_what_the_drain_may_hold():
    seats = pools(m=[seat(1, 2, behind=3)])
    planned, _ = plan([candidate() for _ in range(10)], seats=seats)
    assert [a.seated for a in planned] == [True, True, False, False, False]
    assert seats.room() == {"m": 0}


def test_jobs_wait_behind_a_full_endpoint_only_when_no_endpoint_has_room():
    seats = pools(m=[seat(1, 0, behind=5), seat(2, 2)])
    planned, _ = plan([candidate() for _ in range(4)], seats=seats)
    assert [(a.endpoint_id, a.seated) for a in planned] == [
        (2, True),
        (2, True),
        (1, False),
        (1, False),
    ]


def test_a_pinned_job_waits_behind_its_own_endpoint_only():
    seats = pools(m=[seat(1, 3), seat(2, 0, behind=1)])
    pinned = [candidate(pin=2), candidate(pin=2)]
    planned, _ = plan(pinned, seats=seats)
    assert [(a.endpoint_id, a.seated) for a in planned] == [(2, False)]


def test_jobs_beyond_what_the_drain_can_start_wait_behind_and_leave_the_room_to_others():
    seats = pools(m=[seat(1, 6, behind=2, floor=3)])  # max_concurrency 6: half kept for calls
    planned, _ = plan([candidate() for _ in range(10)], seats=seats, startable=4)
    assert [a.seated for a in planned] == [True] * 4 + [False] * 2
    assert seats.by_model["m"][0].room == 2  # another drain's calls can have them


def test_a_reserve_takes_places_of_an_endpoint_with_room_to_spare():
    seats = pools(m=[seat(1, 100, behind=5, floor=50)])
    planned, _ = plan([candidate() for _ in range(10)], seats=seats, startable=4)
    assert [a.seated for a in planned] == [True] * 10  # the balancer's shares stay exact
