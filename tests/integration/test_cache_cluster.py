"""The response cache end to end: a real qcluster, a real stand-in endpoint, a real database.

Upstream calls are counted from the stand-in's own log (GET /log).
"""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from llmqueue.jobs import JobSpec, job_submit
from llmqueue.models import TERMINAL, CacheEntry, Job, Status
from tests.factories import chat_payload, make_endpoint, make_user
from tests.fixtures import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def client_of(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def submit(api: APIClient, payload: dict) -> dict:
    r = api.post("/api/jobs/", {"payload": payload}, format="json")
    assert r.status_code == 201, r.content
    return r.json()


def finished(job_id: int) -> Job | None:
    job = Job.objects.get(pk=job_id)
    return job if job.status in TERMINAL else None


def test_same_request_twice_calls_upstream_once_per_scope(cluster, standin, settings):
    alice, bob = make_user(), make_user()
    make_endpoint(base_url=standin.base_url)
    cluster()
    question = chat_payload(f"what is 6 x 7? {uuid.uuid4().hex}")

    first = submit(client_of(alice), question)
    done = wait_until(lambda: finished(first["id"]), timeout=30, what="the first job")
    assert done.status == Status.SUCCEEDED and len(standin.calls()) == 1

    second = submit(client_of(alice), question)
    assert second["status"] == "succeeded" and second["cache_hit"] is True
    assert second["result"] == done.result
    assert len(standin.calls()) == 1  # no second call

    # Another user: private by default, so a call of their own.
    theirs = submit(client_of(bob), question)
    assert theirs["status"] == "queued" and theirs["cache_hit"] is False
    wait_until(lambda: finished(theirs["id"]), timeout=30, what="bob's job")
    assert len(standin.calls()) == 2

    # A shared model: one answer for everyone.
    settings.LLMQUEUE = {"CACHE_SHARED_MODELS": "echo"}
    public = chat_payload(f"the capital of France? {uuid.uuid4().hex}")
    first = submit(client_of(alice), public)
    wait_until(lambda: finished(first["id"]), timeout=30, what="the shared job")
    assert len(standin.calls()) == 3
    for user in (bob, make_user()):
        hit = submit(client_of(user), public)
        assert hit["status"] == "succeeded" and hit["cache_hit"] is True
    assert len(standin.calls()) == 3


def test_fifty_twins_submitted_while_the_first_runs_make_one_call(cluster, standin):
    owner = make_user()
    make_endpoint(base_url=standin.base_url)
    standin.control(latency_ms=3000)
    cluster()
    question = chat_payload(f"a slow question {uuid.uuid4().hex}")
    api = client_of(owner)
    leader = submit(api, question)
    wait_until(
        lambda: Job.objects.get(pk=leader["id"]).status == Status.RUNNING,
        timeout=30,
        what="the first job to run",
    )
    # 50 identical jobs while it runs: 25 one by one, 25 in one bulk request
    twins = [submit(api, question)["id"] for _ in range(25)]
    r = api.post("/api/jobs/bulk/", {"jobs": [{"payload": question}] * 25}, format="json")
    assert r.status_code == 201
    twins += [j["id"] for j in r.json()["jobs"]]
    assert Job.objects.filter(pk__in=twins, follows_id=leader["id"]).count() == 50
    wait_until(
        lambda: Job.objects.filter(pk__in=twins, status=Status.SUCCEEDED).count() == 50,
        timeout=60,
        what="the 50 twins",
    )
    leader_job = Job.objects.get(pk=leader["id"])
    assert leader_job.status == Status.SUCCEEDED
    assert len(standin.calls()) == 1  # exactly one upstream call for 51 jobs
    for job in Job.objects.filter(pk__in=twins):
        assert job.cache_hit and job.result == leader_job.result and job.attempts == 0
    assert CacheEntry.objects.count() == 1


def test_when_the_leader_fails_each_follower_runs_on_its_own(cluster, standin):
    owner = make_user()
    make_endpoint(base_url=standin.base_url)
    standin.control(latency_ms=1000, fail_next=1, fail_status=400)
    question = chat_payload(f"doomed {uuid.uuid4().hex}")
    leader, _ = job_submit(owner=owner, spec=JobSpec(kind="chat", payload=question))
    followers = [
        job_submit(owner=owner, spec=JobSpec(kind="chat", payload=question))[0] for _ in range(3)
    ]
    assert all(f.follows_id == leader.pk for f in followers)
    cluster()
    ids = [f.pk for f in followers]
    wait_until(
        lambda: Job.objects.filter(pk__in=[leader.pk, *ids], status__in=TERMINAL).count() == 4,
        timeout=60,
        what="the leader to fail and its followers to finish",
    )
    assert Job.objects.get(pk=leader.pk).status == Status.DEAD
    assert (
        Job.objects.filter(pk__in=ids, status=Status.SUCCEEDED, follows__isnull=True).count() == 3
    )
    assert len(standin.calls()) == 4  # the failed call, then one each


def test_warming_fills_the_cache_through_the_queue(cluster, standin, tmp_path):
    owner = make_user()
    make_endpoint(base_url=standin.base_url)
    cluster()
    tag = uuid.uuid4().hex
    lines = [chat_payload(f"faq {i} {tag}") for i in range(5)]
    path = tmp_path / "faq.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in [*lines, lines[0]]) + "\n")
    out = io.StringIO()
    call_command(
        "llmqueue_cache_warm",
        str(path),
        "--user",
        owner.username,
        "--wait",
        "--timeout",
        "60",
        "--poll",
        "0.2",
        stdout=out,
    )
    assert "done 6/6: 6 succeeded" in out.getvalue()
    assert len(standin.calls()) == 5  # the duplicate line followed the first
    for payload in lines:
        hit = submit(client_of(owner), payload)
        assert hit["cache_hit"] is True
    assert len(standin.calls()) == 5
