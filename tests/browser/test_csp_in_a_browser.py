"""The pages live within their Content-Security-Policy: Chromium enforces it, and reports
every refused script, style or connection on the console."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from llmqueue.jobs import job_submit
from llmqueue.models import Job, JobAttempt, Outcome, Status
from tests.browser.conftest import log_in
from tests.factories import chat_spec, make_endpoint, make_user

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_no_page_breaks_its_policy(page, live_server):
    endpoint = make_endpoint(name="ep-csp")
    user = make_user(staff=True)
    job = job_submit(owner=user, spec=chat_spec())[0]
    now = timezone.now()
    JobAttempt.objects.create(
        job=job,
        number=1,
        endpoint=endpoint,
        endpoint_name=endpoint.name,
        started_at=now,
        duration_ms=500,
        http_status=200,
        outcome=Outcome.SUCCESS,
    )
    Job.objects.filter(pk=job.pk).update(
        status=Status.SUCCEEDED,
        endpoint=endpoint,
        started_at=now,
        finished_at=now + timedelta(seconds=1),
        result={"choices": []},
    )
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    log_in(page, live_server.url, user)
    expect(page.locator(".updated")).to_contain_text("Updated", timeout=10_000)  # it polled
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    bar = page.locator(".timeline-bar span").first
    assert bar.evaluate("el => el.style.width").endswith("%")  # placed by app.js
    page.goto(f"{live_server.url}/keys/")
    page.get_by_label("Name").fill("browser")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_contain_text("lq_")
    page.goto(f"{live_server.url}/admin/llmqueue/job/")
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".swagger-ui .info")).to_be_visible(timeout=20_000)
    assert not refused, refused
    page.goto(f"{live_server.url}/api/redoc/")
    expect(page.get_by_text("llmqueue API").first).to_be_visible(timeout=20_000)
    # Redoc's sidebar links Redocly's logo from their CDN: refused, as a remote load should be.
    assert all("https://cdn.redoc.ly/" in text for text in refused), refused
