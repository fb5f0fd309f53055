"""Jobs claimed behind a full endpoint, in the database: they count against no endpoint until
they take the place of a finished call, in the step that records that call."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone

from llmqueue.calls.types import CallOutcome
from llmqueue.endpoints.pools import endpoint_in_flight, endpoints_learn
from llmqueue.jobs import claims_seat, job_submit, jobs_claim_planned, jobs_record
from llmqueue.models import Endpoint, Job, Status
from llmqueue.worker.scheduler import jobs_schedule
from tests.factories import attempt, chat_spec, make_endpoint

pytestmark = pytest.mark.django_db


def claim(limit: int, behind: dict[int, int] | None = None):
    with transaction.atomic():
        now = timezone.now()
        schedule = jobs_schedule(limit=limit, now=now, behind=behind)
        return jobs_claim_planned(plan=schedule.plan, now=now), schedule.usable


def succeed(claims) -> None:
    results = [attempt(c, http_status=200, health=CallOutcome.SUCCESS, body={}) for c in claims]
    jobs_record(results)
    endpoints_learn(r.call for r in results)


@pytest.fixture
def full(user):
    """An endpoint capped at 4, proven (off probation), with 4 calls out and 20 jobs queued."""
    ep = make_endpoint(max_concurrency=4)
    for i in range(21):
        job_submit(owner=user, spec=chat_spec(f"job {i}"))
    first, _ = claim(1)
    with transaction.atomic():
        succeed(first)
    seated, _ = claim(10)
    assert len(seated) == 4
    return ep, seated


def test_jobs_behind_a_full_endpoint_count_against_nothing(full):
    ep, _ = full
    behind, usable = claim(10, {ep.pk: 3})
    assert [c.seated for c in behind] == [False] * 3
    assert usable == {ep.pk}
    assert endpoint_in_flight() == {ep.pk: 4}
    rows = Job.objects.filter(pk__in=[c.job_id for c in behind])
    assert {(j.status, j.endpoint_id) for j in rows} == {(Status.RUNNING, None)}
    assert {c.target.id for c in behind} == {ep.pk}  # where each will go


def test_taking_a_finished_calls_place_keeps_the_count(full):
    ep, seated = full
    behind, _ = claim(10, {ep.pk: 3})
    with transaction.atomic():
        assert claims_seat(behind[:2]) == 2
        succeed(seated[:2])
    assert endpoint_in_flight() == {ep.pk: 4}
    assert set(
        Job.objects.filter(pk__in=[c.job_id for c in behind[:2]]).values_list(
            "endpoint_id", flat=True
        )
    ) == {ep.pk}


def test_a_claim_whose_lease_was_lost_is_not_written(full):
    ep, _ = full
    behind, _ = claim(10, {ep.pk: 1})
    Job.objects.filter(pk=behind[0].job_id).update(lease_token="someone else")
    assert claims_seat(behind) == 0
    assert Job.objects.get(pk=behind[0].job_id).endpoint_id is None


def test_nothing_waits_behind_an_endpoint_on_probation(user):
    ep = make_endpoint(max_concurrency=2)
    for i in range(5):
        job_submit(owner=user, spec=chat_spec(f"job {i}"))
    claims, _ = claim(5, {ep.pk: 3})
    assert [c.seated for c in claims] == [True, True]  # no success yet: probation


def test_an_endpoint_that_cannot_take_calls_is_not_usable(full):
    ep, _ = full
    Endpoint.objects.filter(pk=ep.pk).update(paused_until=timezone.now().timestamp() + 60)
    claims, usable = claim(10, {ep.pk: 3})
    assert claims == [] and usable == frozenset()
