"""The transition table: every action from every state, generated from the table and the Status
enum, so that a new action or state is covered without a new test."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

import llmqueue.jobs
from llmqueue.errors import TransitionError
from llmqueue.jobs.transitions import (
    TRANSITIONS,
    Completion,
    claims_write,
    job_transition,
    jobs_complete,
    jobs_transition,
)
from llmqueue.models import Job, Status
from tests.factories import chat_payload, make_endpoint, make_user

pytestmark = pytest.mark.django_db

TOKEN = "a" * 32
PAIRS = list(itertools.product(TRANSITIONS, Status))


def _job(status: Status) -> Job:
    running = status == Status.RUNNING
    return Job.objects.create(
        owner=make_user(),
        model="echo",
        payload=chat_payload(),
        status=status,
        attempts=1 if running else 0,
        lease_token=TOKEN if running else None,
        lease_expires_at=timezone.now() - dt.timedelta(seconds=1) if running else None,
    )


def _snapshot(job: Job) -> dict:
    return Job.objects.filter(pk=job.pk).values().get()


@pytest.mark.parametrize(("action", "status"), PAIRS, ids=[f"{a}-from-{s}" for a, s in PAIRS])
def test_an_action_moves_a_job_from_its_states_and_refuses_every_other(action, status):
    job = _job(status)
    before = _snapshot(job)
    t = TRANSITIONS[action]
    if status in t.source:
        assert job_transition(action, job_id=job.pk, token=TOKEN) is True
        after = _snapshot(job)
        assert after["status"] == t.target
        if t.target != Status.RUNNING:
            assert after["lease_token"] is None
            assert after["lease_expires_at"] is None
    else:
        with pytest.raises(TransitionError) as err:
            job_transition(action, job_id=job.pk, token=TOKEN)
        assert err.value.status == status
        assert err.value.action == action
        assert _snapshot(job) == before
        # the non-strict form, as the drain uses it, says no and changes nothing
        assert job_transition(action, job_id=job.pk, token=TOKEN, strict=False) is False
        assert _snapshot(job) == before


@pytest.mark.parametrize("action", [a for a, t in TRANSITIONS.items() if t.fenced])
def test_a_fenced_action_refuses_a_running_job_leased_to_someone_else(action):
    job = _job(Status.RUNNING)
    before = _snapshot(job)
    with pytest.raises(TransitionError):
        job_transition(action, job_id=job.pk, token="b" * 32)
    assert _snapshot(job) == before
    with pytest.raises(ValueError, match="lease token"):
        job_transition(action, job_id=job.pk)


@pytest.mark.parametrize("action", [a for a, t in TRANSITIONS.items() if not t.fenced])
def test_a_many_jobs_action_moves_only_those_in_its_states(action):
    jobs = {s: _job(s) for s in Status}
    n = jobs_transition(action, where=Q(pk__in=[j.pk for j in jobs.values()]))
    t = TRANSITIONS[action]
    assert n == len(t.source)
    for s, job in jobs.items():
        assert Job.objects.get(pk=job.pk).status == (t.target if s in t.source else s)


@pytest.mark.parametrize("status", list(Status))
def test_the_claim_statement_takes_only_queued_jobs(status):
    endpoint = make_endpoint()
    job = _job(status)
    before = _snapshot(job)
    now = timezone.now()
    with transaction.atomic():
        rows = claims_write({endpoint.pk: [job.pk]}, token="c" * 32, expires=now, started=now)
    if status in TRANSITIONS["claim"].source:
        assert [r[0] for r in rows] == [job.pk]
        after = _snapshot(job)
        assert (after["status"], after["lease_token"]) == (Status.RUNNING, "c" * 32)
        assert after["attempts"] == before["attempts"] + 1
    else:
        assert rows == []
        assert _snapshot(job) == before


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("token", [TOKEN, "b" * 32], ids=["own-lease", "lost-lease"])
def test_the_complete_statement_takes_only_running_jobs_whose_lease_holds(status, token):
    job = _job(status)
    before = _snapshot(job)
    done = Completion(job.pk, token, {"ok": 1}, 3)
    with transaction.atomic():
        won = jobs_complete([done], now=timezone.now())
    if status in TRANSITIONS["complete"].source and token == TOKEN:
        assert won == [done]
        after = _snapshot(job)
        assert (after["status"], after["result"], after["tokens_used"]) == (
            "succeeded",
            {"ok": 1},
            3,
        )
        assert after["lease_token"] is None
    else:
        assert won == []
        assert _snapshot(job) == before


def test_the_complete_statement_writes_the_fences_that_hold_beside_one_lost():
    held, lost = _job(Status.RUNNING), _job(Status.RUNNING)
    done = [Completion(held.pk, TOKEN, {"a": 1}, None), Completion(lost.pk, "b" * 32, {}, None)]
    with transaction.atomic():
        won = jobs_complete(done, now=timezone.now())
    assert won == done[:1]
    assert Job.objects.get(pk=held.pk).status == Status.SUCCEEDED
    assert Job.objects.get(pk=lost.pk).status == Status.RUNNING


def test_the_state_diagram_names_every_action():
    diagram = llmqueue.jobs.__doc__ or ""
    missing = [a for a in TRANSITIONS if a not in diagram]
    assert missing == []
