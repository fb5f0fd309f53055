"""A drain's reserve, in memory: which claimed job starts next, and when a job claimed behind a
full endpoint may take the place of a finished call (llmqueue.worker.reserve)."""

from __future__ import annotations

import datetime as dt
import itertools

from llmqueue.calls.types import CallOutcome, CallResult, Target
from llmqueue.jobs import AttemptResult, Claim
from llmqueue.models import Outcome
from llmqueue.worker.reserve import Reserve

_ids = itertools.count(1)
A, B = Target(1, "a", "http://a", "", 10.0), Target(2, "b", "http://b", "", 10.0)


def claim(target: Target = A, *, seated: bool = True, priority: int = 5) -> Claim:
    pk = next(_ids)
    return Claim(pk, f"t{pk}", "chat", {}, 1, 5, target, rank=(-priority, 0, pk), seated=seated)


def finished(c: Claim, *, status: int = 200, pause_s: float | None = None) -> AttemptResult:
    ok = status < 300
    call = CallResult(
        target=c.target,
        started_at=dt.datetime.now(dt.UTC),
        duration_ms=10.0,
        outcome=Outcome.SUCCESS if ok else Outcome.RETRY,
        http_status=status,
        health=CallOutcome.SUCCESS if ok else (CallOutcome.FAILURE if status >= 500 else None),
        pause_s=pause_s,
    )
    return AttemptResult(claim=c, call=call)


def filled(*claims: Claim) -> Reserve:
    reserve = Reserve()
    for c in claims:
        reserve.add(c)
    return reserve


def test_seated_claims_start_in_the_queues_order():
    low, high, mid = claim(priority=1), claim(priority=9), claim(priority=5)
    reserve = filled(low, high, mid)
    assert [reserve.next(), reserve.next(), reserve.next(), reserve.next()] == [
        high,
        mid,
        low,
        None,
    ]
    assert reserve.work().seating == []  # none took another call's place


def test_a_claim_behind_an_endpoint_waits_for_a_place_there_to_be_freed():
    running_a, running_b = claim(A), claim(B)
    waiting = claim(A, seated=False, priority=9)
    reserve = filled(waiting)
    assert reserve.next() is None  # the endpoint is full: nothing of it finished yet
    reserve.freed(finished(running_b))
    assert reserve.next() is None  # a place on another endpoint is no place for it
    reserve.freed(finished(running_a))
    assert reserve.next() == waiting
    assert len(reserve) == 0
    assert reserve.work().seating == [waiting]  # the next step writes it to its endpoint


def test_one_freed_place_starts_one_claim_behind_it():
    first, second = claim(A, seated=False, priority=9), claim(A, seated=False)
    reserve = filled(first, second)
    reserve.freed(finished(claim(A)))
    assert reserve.next() == first
    assert reserve.next() is None
    reserve.freed(finished(first))  # a passed-on place is passed on again when it ends
    assert reserve.next() == second
    assert reserve.work().seating == [first, second]


def test_a_claim_behind_and_a_seated_one_start_in_the_queues_order():
    seated, behind = claim(A, priority=3), claim(A, seated=False, priority=7)
    reserve = filled(seated, behind)
    assert reserve.next() == seated  # no place freed yet: the one behind cannot start
    reserve.add(seated2 := claim(A, priority=1))
    reserve.freed(finished(claim(A)))
    assert reserve.next() == behind  # more urgent than the seated one left
    assert reserve.next() == seated2


def test_a_call_that_says_the_endpoint_is_in_trouble_passes_no_place_on():
    reserve = filled(claim(A, seated=False))
    reserve.freed(finished(claim(A), status=503))
    reserve.freed(finished(claim(A), status=429))
    reserve.freed(finished(claim(A), pause_s=30.0))
    assert reserve.next() is None


def test_a_step_gives_up_the_places_not_passed_on():
    waiting = claim(A, seated=False)
    reserve = filled()
    reserve.freed(finished(claim(A)))
    reserve.work()  # that step records the finished call: its place is the queue's again
    reserve.add(waiting)
    assert reserve.next() is None


def test_a_failed_steps_work_goes_to_the_next_step():
    waiting = claim(A, seated=False)
    reserve = filled(waiting)
    reserve.freed(finished(claim(A)))
    assert reserve.next() == waiting
    work = reserve.work()
    reserve.work_failed(work)
    again = reserve.work()
    assert again.seating == [waiting]
    assert not reserve.work()


def test_claims_behind_an_endpoint_that_cannot_take_calls_go_back():
    on_a, on_b, seated = claim(A, seated=False), claim(B, seated=False), claim(B)
    reserve = filled()
    work = reserve.work()
    work.usable = frozenset({A.id})  # B's breaker opened, say
    reserve.work_done(work, [on_a, on_b, seated])
    assert sorted(c.job_id for c in reserve.claims()) == sorted(
        c.job_id for c in (on_a, on_b, seated)
    )  # held (and renewed) until the next step gives it back
    assert reserve.work().giving_back == [on_b]
    assert sorted(c.job_id for c in reserve.claims()) == sorted([on_a.job_id, seated.job_id])


def test_a_step_that_did_not_look_at_the_endpoints_gives_nothing_back():
    on_b = claim(B, seated=False)
    reserve = filled()
    reserve.work_done(reserve.work(), [on_b])  # usable None: the step claimed nothing
    assert reserve.work().giving_back == []
    assert reserve.claims() == [on_b]


def test_behind_room_is_half_the_calls_out_less_those_waiting():
    reserve = filled(claim(A, seated=False))
    running = [claim(A) for _ in range(8)] + [claim(B)]
    assert reserve.behind_room(running) == {A.id: 3}  # 8 // 2 - 1; B: 1 // 2 = 0


def test_clear_takes_out_every_claim():
    claims = [claim(A), claim(A, seated=False), claim(B, seated=False)]
    reserve = filled(*claims)
    work = reserve.work()
    work.usable = frozenset({A.id})
    reserve.work_done(work, [])
    assert sorted(c.job_id for c in reserve.clear()) == sorted(c.job_id for c in claims)
    assert reserve.claims() == [] and len(reserve) == 0
