"""Drain slots: a dead drain's claims go back to the queue at once; a live drain's never do."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from django.db import transaction
from django.utils import timezone

from llmqueue.endpoints.pools import endpoint_in_flight
from llmqueue.jobs import jobs_reap, jobs_submit_many
from llmqueue.jobs.claims import lease_token
from llmqueue.models import DrainSlot, Job, JobAttempt, Outcome, Status
from llmqueue.worker.scheduler import jobs_claim
from llmqueue.worker.slots import (
    cluster_stopping,
    host_name,
    machine_key,
    owner_tag,
    slot_acquire,
    slot_owner,
    slots_reap_dead,
    stop_on_signals,
)
from tests.factories import chat_spec

pytestmark = pytest.mark.django_db


def dead_pid() -> int:
    """The pid of a process of this machine that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def holding(owner: str, *, jobs: int, user, host: str = "h1", number: int = 0, beat_s_ago=0.0):
    """A slot held by ``owner`` (heartbeat ``beat_s_ago``), and ``jobs`` jobs it claimed."""
    beat = timezone.now() - dt.timedelta(seconds=beat_s_ago)
    DrainSlot.objects.create(host=host, number=number, owner=owner, heartbeat_at=beat)
    jobs_submit_many(owner=user, specs=[chat_spec() for _ in range(jobs)])
    with transaction.atomic():
        return jobs_claim(limit=jobs, holder=owner_tag(owner))


def test_owner_tags_prefix_lease_tokens_and_old_owners_have_none():
    owner = slot_owner()
    assert owner.startswith(f"{os.getpid()}-{machine_key()}-")
    assert len(owner) <= 32  # DrainSlot.owner's column, whatever the host name
    assert len(owner_tag(owner)) == 12
    assert owner_tag("123-host-abcd1234") == ""  # from before tags: its leases must lapse


def test_a_dead_pid_gives_its_claims_back_at_once_and_frees_capacity(user, echo_endpoint):
    dead = f"{dead_pid()}-{machine_key()}-{'a' * 12}"
    live = slot_owner()
    lost = holding(dead, jobs=3, user=user, number=0)
    kept = holding(live, jobs=2, user=user, number=1)
    assert all(c.token.startswith("a" * 12) for c in lost)
    assert endpoint_in_flight() == {echo_endpoint.pk: 5}
    assert slots_reap_dead() == 3
    assert endpoint_in_flight() == {echo_endpoint.pk: 2}
    assert set(Job.objects.filter(pk__in=[c.job_id for c in lost]).values_list("status")) == {
        (Status.QUEUED,)
    }
    assert set(Job.objects.filter(pk__in=[c.job_id for c in kept]).values_list("status")) == {
        (Status.RUNNING,)
    }
    assert JobAttempt.objects.filter(outcome=Outcome.LOST).count() == 3
    assert DrainSlot.objects.get(number=0).owner is None
    assert DrainSlot.objects.get(number=1).owner == live
    assert slots_reap_dead() == 0  # once only


def test_another_machine_is_dead_only_once_its_heartbeat_is_stale(user, echo_endpoint):
    fresh = holding("1-elsewhere-" + "b" * 12, jobs=2, user=user, number=0, beat_s_ago=1)
    stale = holding("1-elsewhere-" + "c" * 12, jobs=2, user=user, number=1, beat_s_ago=60)
    assert slots_reap_dead() == 2
    assert {c.job_id for c in stale} == set(
        Job.objects.filter(status=Status.QUEUED).values_list("pk", flat=True)
    )
    assert Job.objects.filter(status=Status.RUNNING).count() == len(fresh)


def test_taking_a_dead_drains_slot_gives_its_claims_back(user, echo_endpoint):
    dead = f"{dead_pid()}-{machine_key()}-{'d' * 12}"
    holding(dead, jobs=2, user=user, host=host_name())
    slot = slot_acquire(host=host_name(), count=1, owner=slot_owner())
    assert slot is not None
    assert Job.objects.filter(status=Status.QUEUED).count() == 2
    assert jobs_reap() == 0


def test_a_task_started_after_its_cluster_began_stopping_stops_at_once():
    stops: list[int] = []
    event = cluster_stopping()
    event.set()
    try:
        with stop_on_signals(stops.append):
            pass
    finally:
        event.clear()
    assert stops


def test_lease_tokens_carry_their_holder_and_reaping_by_holder_needs_one(db):
    token = lease_token("e" * 12)
    assert len(token) == 32 and token.startswith("e" * 12)
    assert lease_token() != lease_token()
    with pytest.raises(ValueError, match="holder"):
        lease_token("x" * 17)
    with pytest.raises(ValueError, match="every claim"):
        jobs_reap(holders=[""])
