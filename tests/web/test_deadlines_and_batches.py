"""Deadlines on the pages (the submit form, a JSONL upload, a job's page) and the Batch API's
batches on the batch pages (status, per-line errors, files, cancel)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from llmqueue import metrics
from llmqueue.jobs import jobs_expire, jobs_submit_many
from llmqueue.models import Batch, BatchStatus, Job, Status
from tests.factories import chat_payload, chat_spec

pytestmark = pytest.mark.django_db

FORM = {"kind": "chat", "model": "echo", "prompt": "hi", "parameters": "{}", "priority": 5}


def test_the_submit_form_takes_expires_in_and_refuses_a_past_deadline(web, echo_endpoint):
    r = web.post("/jobs/new/", {**FORM, "expires_in": 60})
    job = Job.objects.get()
    assert r.status_code == 302
    assert job.deadline is not None and job.deadline > timezone.now()
    r = web.post("/jobs/new/", {**FORM, "deadline": "2020-01-01T00:00"})
    assert r.status_code == 200 and b"is in the past" in r.content
    assert Job.objects.count() == 1


def test_an_upload_gives_every_line_the_files_deadline_unless_a_line_names_its_own(
    web, echo_endpoint
):
    own = (timezone.now() + dt.timedelta(hours=2)).replace(microsecond=0)
    lines = [
        json.dumps(chat_payload("a")),
        json.dumps({"kind": "chat", "payload": chat_payload("b"), "deadline": own.isoformat()}),
    ]
    file = SimpleUploadedFile("r.jsonl", "\n".join(lines).encode())
    r = web.post("/batches/new/", {"file": file, "priority": 5, "expires_in": 600})
    assert r.status_code == 302, r.content
    a, b = Job.objects.order_by("id")
    assert abs((a.deadline - timezone.now()).total_seconds() - 600) < 30
    assert b.deadline == own


def test_an_expired_job_shows_as_such_and_is_counted(
    web, user, echo_endpoint, django_capture_on_commit_callbacks
):
    _, (job,) = jobs_submit_many(owner=user, specs=[chat_spec()])
    Job.objects.filter(pk=job.pk).update(deadline=timezone.now())
    before = metrics.JOBS_FINISHED.labels("expired")._value.get()
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_expire() == 1
    assert metrics.JOBS_FINISHED.labels("expired")._value.get() == before + 1
    page = web.get(f"/jobs/{job.pk}/").content.decode()
    assert "expired" in page and "passed before it ran" in page
    assert "expired" in web.get("/jobs/?status=expired").content.decode()


def test_a_failed_batch_api_batch_names_its_lines_on_its_page(web, user):
    batch = Batch.objects.create(
        owner=user,
        name="in.jsonl",
        status=BatchStatus.FAILED,
        endpoint="/v1/chat/completions",
        errors={
            "object": "list",
            "data": [{"code": "invalid_json", "message": "not JSON", "param": None, "line": 2}],
        },
    )
    page = web.get(f"/batches/{batch.pk}/").content.decode()
    assert "failed" in page and "line 2: not JSON" in page and "Nothing of it was queued" in page
    assert "status-failed" in web.get("/batches/").content.decode()


def test_the_batch_page_cancels_the_queued_jobs(web, user, echo_endpoint):
    batch, _ = jobs_submit_many(owner=user, specs=[chat_spec(), chat_spec()])
    page = web.get(f"/batches/{batch.pk}/").content.decode()
    assert "Cancel the 2 queued jobs" in page
    r = web.post(f"/batches/{batch.pk}/cancel/")
    assert r.status_code == 302
    assert set(Job.objects.values_list("status", flat=True)) == {Status.CANCELLED}
    batch.refresh_from_db()
    assert batch.status == BatchStatus.CANCELLED and batch.error_file_id is not None
    page = web.get(f"/batches/{batch.pk}/").content.decode()
    assert f"/v1/files/file-{batch.error_file_id}/content" in page
    # the page's own session may download it
    r = web.get(f"/v1/files/file-{batch.error_file_id}/content")
    assert r.status_code == 200
    assert b"batch_cancelled" in b"".join(r.streaming_content)
