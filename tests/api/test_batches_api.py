"""/api/batches/: the caller's batches, their results for a key, cancel in one statement, retry."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from llmqueue.jobs import jobs_submit_many
from llmqueue.keys import apikey_create
from llmqueue.models import Batch, BatchStatus, Job, Status
from tests.factories import chat_spec

pytestmark = pytest.mark.django_db


def _batch(owner, n=3):
    batch, jobs = jobs_submit_many(owner=owner, specs=[chat_spec() for _ in range(n)], name="b")
    return batch, jobs


def test_list_and_detail_show_only_my_batches_with_counts(api, user, other_user, echo_endpoint):
    mine, _ = _batch(user)
    theirs, _ = _batch(other_user)
    r = api.get("/api/batches/")
    assert r.status_code == 200
    assert [b["id"] for b in r.json()["results"]] == [mine.pk]
    body = api.get(f"/api/batches/{mine.pk}/").json()
    assert body["status"] == "in_progress"
    assert body["counts"]["queued"] == 3 and body["counts"]["total"] == 3
    assert body["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert api.get(f"/api/batches/{theirs.pk}/").status_code == 404
    assert api.post(f"/api/batches/{theirs.pk}/cancel/").status_code == 404


def test_results_are_jsonl_for_an_api_key(user, echo_endpoint):
    batch, jobs = _batch(user, 2)
    Job.objects.filter(pk=jobs[0].pk).update(
        status=Status.SUCCEEDED, result={"ok": 1}, finished_at=timezone.now()
    )
    plain, _ = apikey_create(owner=user, name="k")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    r = client.get(f"/api/batches/{batch.pk}/results/")
    assert r.status_code == 200 and r["Content-Type"] == "application/jsonl"
    lines = [json.loads(x) for x in b"".join(r.streaming_content).splitlines()]
    assert lines == [
        {
            "id": f"batch_req_{jobs[0].pk}",
            "custom_id": None,
            "response": {"status_code": 200, "request_id": f"req_{jobs[0].pk}", "body": {"ok": 1}},
            "error": None,
        }
    ]


def test_cancel_is_one_update_of_the_queued_jobs_and_the_batch_ends(api, user, echo_endpoint):
    batch, jobs = _batch(user, 50)
    Job.objects.filter(pk=jobs[0].pk).update(status=Status.SUCCEEDED, result={"ok": 1})
    with CaptureQueriesContext(connection) as q:
        r = api.post(f"/api/batches/{batch.pk}/cancel/")
    assert r.status_code == 200, r.content
    job_updates = [
        x["sql"] for x in q.captured_queries if x["sql"].startswith('UPDATE "llmqueue_job"')
    ]
    cancels = [sql for sql in job_updates if "SET \"status\" = 'cancelled'" in sql]
    assert len(cancels) == 1, job_updates  # one statement for the 49, not one each
    body = r.json()
    assert body["cancelled"] == 49
    assert body["batch"]["status"] == "cancelled"
    assert body["batch"]["request_counts"] == {"total": 50, "completed": 1, "failed": 49}
    assert body["batch"]["output_file"] is not None and body["batch"]["error_file"] is not None
    assert Job.objects.filter(status=Status.CANCELLED).count() == 49
    r = api.post(f"/api/batches/{batch.pk}/cancel/")
    assert r.status_code == 200 and r.json()["cancelled"] == 0


def test_cancelling_an_ended_batch_is_a_409(api, user, echo_endpoint):
    batch, _ = _batch(user, 1)
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.COMPLETED)
    r = api.post(f"/api/batches/{batch.pk}/cancel/")
    assert r.status_code == 409 and r.json()["status"] == "completed"


def test_retry_dead_queues_them_again_and_reopens_the_batch(api, user, echo_endpoint):
    batch, jobs = _batch(user, 2)
    Job.objects.filter(pk=jobs[0].pk).update(status=Status.DEAD, error="no")
    Job.objects.filter(pk=jobs[1].pk).update(status=Status.SUCCEEDED, result={"ok": 1})
    assert api.get(f"/api/batches/{batch.pk}/").json()["status"] == "completed"
    r = api.post(f"/api/batches/{batch.pk}/retry-dead/")
    assert r.status_code == 200
    assert r.json()["queued"] == 1
    assert r.json()["batch"]["status"] == "in_progress"
    assert r.json()["batch"]["output_file"] is None
    assert Job.objects.get(pk=jobs[0].pk).status == Status.QUEUED


def test_a_batch_past_its_window_ends_expired_when_read(api, user, echo_endpoint):
    batch, jobs = _batch(user, 3)
    Job.objects.filter(pk=jobs[0].pk).update(status=Status.SUCCEEDED, result={"ok": 1})
    past = timezone.now()
    Batch.objects.filter(pk=batch.pk).update(deadline=past)
    Job.objects.filter(batch=batch).update(deadline=past)
    body = api.get(f"/api/batches/{batch.pk}/").json()
    assert body["status"] == "expired"
    assert body["counts"]["expired"] == 2
