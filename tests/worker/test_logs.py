"""LOG_FORMAT=json: the worker's lines about a job are JSON objects with its id, endpoint and
outcome, and an endpoint's API key appears in no log line."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from llmqueue.calls.types import CallResult, Target
from llmqueue.jobs import job_submit
from llmqueue.jobs.claims import AttemptResult, Claim
from llmqueue.models import Job, Outcome, Status
from llmqueue.worker import logs as worker_logs
from tests.factories import chat_spec, make_endpoint, make_user
from tests.fixtures import wait_until

KEY = "sk-live-do-not-log-4f9a"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The worker's attempt logger through the settings' JSON formatter, into a buffer."""
    options = dict(settings.LOGGING["formatters"]["json"])
    formatter = import_string(options.pop("()"))(**options)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(worker_logs.__name__)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _result(outcome: Outcome, *, error: str = "", status: int = 200) -> AttemptResult:
    target = Target(id=3, name="gpu-a", base_url="http://x/v1", api_key=KEY, timeout_s=5)
    claim = Claim(
        job_id=42,
        token="t",
        kind="chat",
        payload={},
        attempt=2,
        max_attempts=3,
        target=target,
        model="m-small",
    )
    call = CallResult(
        target=target,
        started_at=dt.datetime.now(dt.UTC),
        duration_ms=12.34,
        outcome=outcome,
        http_status=status,
        error=error,
    )
    return AttemptResult(claim=claim, call=call)


def test_a_worker_line_about_a_job_is_json_with_its_fields(json_lines):
    worker_logs.attempt_log(_result(Outcome.SUCCESS))
    worker_logs.attempt_log(_result(Outcome.REJECTED, error="HTTP 400: bad", status=400))
    first, second = (json.loads(line) for line in json_lines.getvalue().splitlines())
    assert first["job_id"] == 42 and first["endpoint"] == "gpu-a" and first["model"] == "m-small"
    assert first["outcome"] == "success" and first["level"] == "DEBUG"
    assert first["message"] == "job 42 attempt 2 on gpu-a: success"
    assert first["logger"] == "llmqueue.worker.logs" and first["duration_ms"] == 12.3
    assert second["outcome"] == "rejected" and second["level"] == "INFO"
    assert second["http_status"] == 400 and second["message"].endswith("(HTTP 400: bad)")
    assert KEY not in json_lines.getvalue()


def test_settings_choose_json_by_environment():
    assert settings.LOGGING["handlers"]["console"]["formatter"] in settings.LOGGING["formatters"]


@pytest.mark.integration
def test_a_cluster_logging_json_at_debug_names_jobs_and_never_the_key(cluster, standin):
    make_endpoint(name="keyed", base_url=standin.base_url, api_key=KEY)
    job, _ = job_submit(owner=make_user(), spec=chat_spec("hello"))
    c = cluster(LOG_FORMAT="json", LOG_LEVEL="DEBUG", Q_LOG_LEVEL="DEBUG")
    wait_until(
        lambda: Job.objects.get(pk=job.pk).status == Status.SUCCEEDED, timeout=30, what="the job"
    )
    c.stop()
    text = c.output()
    assert KEY not in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    about = [r for r in records if r.get("job_id") == job.pk]
    assert about and about[0]["endpoint"] == "keyed" and about[0]["outcome"] == "success"
