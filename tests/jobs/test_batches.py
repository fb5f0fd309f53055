"""The batch service: windows, settling (and settling again after a crash mid-way)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from llmqueue.errors import BatchInvalid
from llmqueue.jobs import jobs_submit_many
from llmqueue.jobs.batches import (
    FINALIZING_STALE_S,
    batch_retry_dead,
    batches_settle,
    window_seconds,
)
from llmqueue.models import Batch, BatchStatus, File, Job, Status
from tests.factories import chat_spec

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("window", "seconds"), [("24h", 86400), ("1h", 3600), ("90m", 5400), ("60s", 60)]
)
def test_windows(window, seconds):
    assert window_seconds(window) == seconds


@pytest.mark.parametrize("window", ["25h", "5s", "0h", "1d", "24", 24, None, "-1h", "1.5h"])
def test_a_window_out_of_bounds_is_refused_with_the_rule(window):
    with pytest.raises(BatchInvalid) as err:
        window_seconds(window)
    assert err.value.field == "completion_window" and "10s to 24h" in err.value.message


def test_a_batch_settles_only_once_every_job_ended(user, echo_endpoint):
    batch, jobs = jobs_submit_many(owner=user, specs=[chat_spec(), chat_spec()])
    assert batches_settle() == 0
    Job.objects.filter(pk=jobs[0].pk).update(status=Status.SUCCEEDED, result={"a": 1})
    assert batches_settle() == 0
    Job.objects.filter(pk=jobs[1].pk).update(status=Status.DEAD, error="HTTP 400: no")
    assert batches_settle() == 1
    batch.refresh_from_db()
    assert batch.status == BatchStatus.COMPLETED and batch.ended_at is not None
    assert File.objects.filter(purpose="batch_output").count() == 2
    with batch.error_file.content.open("rb") as handle:
        error_line = handle.read()
    assert b'"code":"request_failed"' in error_line and b"HTTP 400: no" in error_line
    assert batches_settle() == 0  # ended: never again


def test_a_batch_left_finalizing_by_a_dead_process_is_finalized_again(user, echo_endpoint):
    batch, jobs = jobs_submit_many(owner=user, specs=[chat_spec()])
    Job.objects.filter(pk=jobs[0].pk).update(status=Status.SUCCEEDED, result={"a": 1})
    long_ago = timezone.now() - dt.timedelta(seconds=FINALIZING_STALE_S + 1)
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.FINALIZING, finalizing_at=long_ago)
    assert batches_settle() == 1
    batch.refresh_from_db()
    assert batch.status == BatchStatus.COMPLETED and batch.output_file_id is not None
    recent = timezone.now()
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.FINALIZING, finalizing_at=recent)
    assert batches_settle() == 0  # another process is at it


def test_retrying_dead_jobs_of_a_finalizing_batch_reopens_it(user, echo_endpoint):
    batch, jobs = jobs_submit_many(owner=user, specs=[chat_spec()])
    Job.objects.filter(pk=jobs[0].pk).update(status=Status.DEAD, error="no")
    Batch.objects.filter(pk=batch.pk).update(
        status=BatchStatus.FINALIZING, finalizing_at=timezone.now()
    )
    assert batch_retry_dead(batch_id=batch.pk) == 1
    batch.refresh_from_db()
    assert batch.status == BatchStatus.IN_PROGRESS
    assert batches_settle() == 0  # its job is queued again
