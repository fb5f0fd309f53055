"""POST/GET /api/jobs/: the public contract of DESIGN.md section 3."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient

from llmqueue.api.serializers import JobSerializer
from llmqueue.jobs import job_submit, jobs_submit_many
from llmqueue.models import Job, Status
from tests.factories import chat_payload, chat_spec

pytestmark = pytest.mark.django_db

JOB_FIELDS = {
    "id",
    "deadline",
    "status",
    "kind",
    "priority",
    "payload",
    "result",
    "error",
    "attempts",
    "max_attempts",
    "endpoint",
    "cache_hit",
    "created_at",
    "started_at",
    "finished_at",
    "idempotency_key",
    "batch",
}


def test_submit_returns_the_job(api, echo_endpoint):
    r = api.post("/api/jobs/", {"payload": chat_payload("hi"), "priority": 7}, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert set(body) == JOB_FIELDS
    assert body["status"] == "queued" and body["kind"] == "chat" and body["priority"] == 7
    assert body["max_attempts"] == 5 and body["cache_hit"] is False and body["endpoint"] is None


def test_anonymous_is_refused(echo_endpoint):
    assert APIClient().post(
        "/api/jobs/", {"payload": chat_payload()}, format="json"
    ).status_code in (401, 403)


def test_token_auth(user, echo_endpoint):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.post("/api/jobs/", {"payload": chat_payload()}, format="json").status_code == 201


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (
            {"payload": {"messages": [{"role": "user", "content": "x"}]}},
            "payload",
            "model: required",
        ),
        ({"payload": {"model": "echo"}}, "payload", "messages: required"),
        ({"kind": "completion", "payload": {"model": "echo"}}, "payload", "prompt: required"),
        ({"kind": "embedding", "payload": {"model": "echo"}}, "payload", "input: required"),
        ({"kind": "image", "payload": chat_payload()}, "kind", "not a valid choice"),
        ({"payload": chat_payload(), "priority": 10}, "priority", "less than or equal to 9"),
        ({"payload": chat_payload(), "priority": -1}, "priority", "greater than or equal to 0"),
        (
            {"payload": chat_payload(), "max_attempts": 0},
            "max_attempts",
            "greater than or equal to 1",
        ),
        ({"payload": chat_payload(), "max_attempts": 99}, "max_attempts", "at most 20"),
        ({"payload": "hello"}, "payload", "dictionary"),
        ({}, "payload", "required"),
        ({"payload": chat_payload(model="gpt-unknown")}, "payload.model", "served models: echo"),
    ],
)
def test_bad_input_names_the_field(api, echo_endpoint, body, field, fragment):
    r = api.post("/api/jobs/", body, format="json")
    assert r.status_code == 400, r.content
    errors = r.json()
    assert field in errors, errors
    assert fragment in json.dumps(errors[field]), errors
    assert Job.objects.count() == 0


def test_payload_over_the_limit_is_413(api, echo_endpoint, settings):
    settings.LLMQUEUE = {"MAX_PAYLOAD_BYTES": 2048}
    r = api.post("/api/jobs/", {"payload": chat_payload("x" * 3000)}, format="json")
    assert r.status_code == 413
    assert "limit is 2048 bytes" in json.dumps(r.json())
    assert Job.objects.count() == 0


def test_idempotency_key_returns_200_with_the_same_job(api, echo_endpoint):
    first = api.post(
        "/api/jobs/", {"payload": chat_payload(), "idempotency_key": "abc"}, format="json"
    )
    again = api.post(
        "/api/jobs/", {"payload": chat_payload("other"), "idempotency_key": "abc"}, format="json"
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]


def test_bulk_all_or_nothing(api, echo_endpoint):
    jobs = [{"payload": chat_payload(str(i))} for i in range(3)] + [{"payload": {"model": "echo"}}]
    r = api.post("/api/jobs/bulk/", {"jobs": jobs}, format="json")
    assert r.status_code == 400
    assert "messages: required" in json.dumps(r.json()["jobs"]["3"])  # errors keyed by index
    assert Job.objects.count() == 0
    r = api.post("/api/jobs/bulk/", {"jobs": jobs[:3]}, format="json")
    assert r.status_code == 201
    created = r.json()["jobs"]
    assert len(created) == 3 and len({j["batch"] for j in created}) == 1
    assert Job.objects.count() == 3


def test_bulk_limits(api, echo_endpoint, settings):
    settings.LLMQUEUE = {"MAX_BULK_JOBS": 2}
    r = api.post("/api/jobs/bulk/", {"jobs": [{"payload": chat_payload()}] * 3}, format="json")
    assert r.status_code == 400 and "at most 2 jobs" in json.dumps(r.json())
    r = api.post(
        "/api/jobs/bulk/",
        {"jobs": [{"payload": chat_payload(), "idempotency_key": "k"}] * 2},
        format="json",
    )
    assert r.status_code == 400 and "also used by jobs[0]" in json.dumps(r.json())
    assert api.post("/api/jobs/bulk/", {"jobs": []}, format="json").status_code == 400


def test_bulk_of_1000_does_not_query_per_job(api, echo_endpoint):
    jobs = [{"payload": chat_payload(str(i))} for i in range(1000)]
    with CaptureQueriesContext(connection) as ctx:
        r = api.post("/api/jobs/bulk/", {"jobs": jobs}, format="json")
    assert r.status_code == 201 and len(r.json()["jobs"]) == 1000
    # batched inserts: SQLite's 999-parameter cap makes ~20 of them, PostgreSQL 2
    assert len(ctx.captured_queries) < 50


def test_a_job_reads_as_drf_would_build_it(user, echo_endpoint):
    # JobSerializer builds its answer directly; DRF's own field-by-field walk over the same
    # fields must give the same, for every state a job can be in.
    class Generic(serializers.ModelSerializer):
        endpoint = serializers.SlugRelatedField(slug_field="name", read_only=True)
        batch = serializers.PrimaryKeyRelatedField(read_only=True)

        class Meta(JobSerializer.Meta):
            pass

    queued = job_submit(owner=user, spec=chat_spec(idempotency_key="k1"))[0]
    _, (in_batch,) = jobs_submit_many(owner=user, specs=[chat_spec()])
    done = job_submit(owner=user, spec=chat_spec())[0]
    Job.objects.filter(pk=done.pk).update(
        status=Status.SUCCEEDED,
        endpoint=echo_endpoint,
        result={"choices": [{"text": "é"}]},
        started_at=timezone.now(),
        finished_at=timezone.now(),
        attempts=2,
    )
    for job in (queued, in_batch, Job.objects.get(pk=done.pk), Job.objects.get(pk=queued.pk)):
        assert JobSerializer(job).data == Generic(job).data
    jobs = list(Job.objects.all())
    assert JobSerializer(jobs, many=True).data == Generic(jobs, many=True).data


def test_list_is_mine_newest_first_and_filters(api, user, other_user, echo_endpoint):
    a = job_submit(owner=user, spec=chat_spec())[0]
    b = job_submit(owner=user, spec=chat_spec())[0]
    job_submit(owner=other_user, spec=chat_spec())
    Job.objects.filter(pk=a.pk).update(status=Status.CANCELLED)
    body = api.get("/api/jobs/").json()
    assert body["count"] == 2 and [j["id"] for j in body["results"]] == [b.pk, a.pk]
    assert [j["id"] for j in api.get("/api/jobs/?status=cancelled").json()["results"]] == [a.pk]
    r = api.get("/api/jobs/?status=bogus")
    assert r.status_code == 400 and "status" in r.json()


@pytest.mark.django_db(transaction=True)
def test_wait_returns_when_the_job_finishes(api, user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]

    def finish():
        time.sleep(0.5)
        Job.objects.filter(pk=job.pk).update(status=Status.SUCCEEDED, result={"ok": True})
        connections.close_all()

    # Another connection commits the change, as a worker would; the waiting request sees it.
    t = threading.Thread(target=finish)
    t.start()
    started = time.monotonic()
    r = api.get(f"/api/jobs/{job.pk}/?wait=10")
    t.join()
    assert r.json()["status"] == "succeeded"
    assert time.monotonic() - started < 10


def test_wait_validation(api, user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    assert api.get(f"/api/jobs/{job.pk}/?wait=61").status_code == 400
    assert "wait" in api.get(f"/api/jobs/{job.pk}/?wait=soon").json()
    assert api.get(f"/api/jobs/{job.pk}/?wait=0").json()["status"] == "queued"


def test_cancel_and_retry_conflicts(api, user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    assert api.post(f"/api/jobs/{job.pk}/retry/").status_code == 409
    r = api.post(f"/api/jobs/{job.pk}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = api.post(f"/api/jobs/{job.pk}/cancel/")
    assert r.status_code == 409 and r.json()["status"] == "cancelled"
    r = api.post(f"/api/jobs/{job.pk}/retry/")
    assert r.status_code == 200 and r.json()["status"] == "queued" and r.json()["attempts"] == 0


def test_stats(api, user, echo_endpoint):
    job_submit(owner=user, spec=chat_spec())
    body = api.get("/api/stats/").json()
    assert body["depth"]["queued"] == 1 and body["depth"]["succeeded"] == 0
    assert body["endpoints"][0]["name"] == "echo-ep" and body["endpoints"][0]["in_flight"] == 0


def test_schema_documents_the_routes(api):
    r = api.get("/api/schema/?format=json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for route in [
        "/api/jobs/",
        "/api/jobs/bulk/",
        "/api/jobs/{id}/",
        "/api/jobs/{id}/cancel/",
        "/api/jobs/{id}/retry/",
        "/api/endpoints/",
        "/api/endpoints/{id}/",
        "/api/stats/",
    ]:
        assert route in paths, route
