from __future__ import annotations

import pytest
from django.urls import reverse

from llmqueue.jobs import job_submit, jobs_submit_many
from llmqueue.models import Endpoint, Job, Status
from tests.factories import chat_spec, make_endpoint

pytestmark = pytest.mark.django_db


def dead_job(owner):
    job = job_submit(owner=owner, spec=chat_spec())[0]
    Job.objects.filter(pk=job.pk).update(status=Status.DEAD, attempts=5, error="HTTP 503: down")
    return job


def test_add_endpoint_in_the_admin(admin_web):
    r = admin_web.post(
        "/admin/llmqueue/endpoint/add/",
        {
            "name": "local-vllm",
            "base_url": "http://127.0.0.1:8001/v1/",
            "api_key": "sk-abc",
            "served_models": "llama, qwen",
            "weight": 1,
            "max_concurrency": 16,
            "timeout_s": 60,
            "enabled": "on",
        },
    )
    assert r.status_code == 302, r.content.decode()[:3000]
    ep = Endpoint.objects.get()
    assert (
        ep.base_url == "http://127.0.0.1:8001/v1"
        and ep.served_models == ["llama", "qwen"]
        and ep.api_key == "sk-abc"
    )
    page = admin_web.get(f"/admin/llmqueue/endpoint/{ep.pk}/change/").content.decode()
    assert "sk-abc" not in page and 'type="password"' in page


def test_endpoint_form_errors(admin_web):
    r = admin_web.post(
        "/admin/llmqueue/endpoint/add/",
        {
            "name": "x",
            "base_url": "http://h/v1",
            "served_models": " , ",
            "weight": 1,
            "max_concurrency": 1,
            "timeout_s": 0,
            "enabled": "on",
        },
    )
    page = r.content.decode()
    assert (
        r.status_code == 200
        and "name at least one model" in page
        and "between 0.1 and 3600" in page
    )


def test_enable_disable_actions(admin_web):
    ep = make_endpoint()
    admin_web.post("/admin/llmqueue/endpoint/", {"action": "disable", "_selected_action": [ep.pk]})
    ep.refresh_from_db()
    assert not ep.enabled
    admin_web.post("/admin/llmqueue/endpoint/", {"action": "enable", "_selected_action": [ep.pk]})
    ep.refresh_from_db()
    assert ep.enabled


def test_dead_letters_section_lists_only_dead_jobs_and_retries_them(admin_web, user, echo_endpoint):
    dead = dead_job(user)
    alive = job_submit(owner=user, spec=chat_spec())[0]
    page = admin_web.get(reverse("admin:llmqueue_deadletter_changelist")).content.decode()
    assert f"/admin/llmqueue/deadletter/{dead.pk}/change/" in page
    assert f"/admin/llmqueue/deadletter/{alive.pk}/change/" not in page
    r = admin_web.post(
        reverse("admin:llmqueue_deadletter_changelist"),
        {"action": "retry_selected", "_selected_action": [dead.pk]},
        follow=True,
    )
    assert "Queued 1 job(s) again." in r.content.decode()
    dead.refresh_from_db()
    assert dead.status == Status.QUEUED and dead.attempts == 0 and dead.error == ""


def test_retry_button_on_a_dead_letters_page(admin_web, user, echo_endpoint):
    dead = dead_job(user)
    page = admin_web.get(
        reverse("admin:llmqueue_deadletter_change", args=[dead.pk])
    ).content.decode()
    retry_url = reverse("admin:llmqueue_deadletter_retry", args=[dead.pk])
    assert retry_url in page and "HTTP 503: down" in page
    r = admin_web.post(retry_url)
    assert r.status_code == 302 and r["Location"] == reverse(
        "admin:llmqueue_job_change", args=[dead.pk]
    )
    dead.refresh_from_db()
    assert dead.status == Status.QUEUED
    # a second click finds it no longer dead, and says so
    r = admin_web.post(retry_url, follow=True)
    assert f"Cannot retry job {dead.pk}: it is queued" in r.content.decode()


def test_jobs_admin_is_read_only_with_attempts_inline(admin_web, user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    page = admin_web.get(reverse("admin:llmqueue_job_change", args=[job.pk]))
    assert page.status_code == 200 and "attempt" in page.content.decode().lower()
    assert admin_web.get("/admin/llmqueue/job/add/").status_code == 403
    r = admin_web.get("/admin/llmqueue/job/?status__exact=queued&priority__exact=5")
    assert r.status_code == 200 and f"/admin/llmqueue/job/{job.pk}/change/" in r.content.decode()


def test_dead_letters_grouped_by_error(admin_web, user, echo_endpoint):
    a, b, c = (dead_job(user) for _ in range(3))
    Job.objects.filter(pk=a.pk).update(error="gave up after 5 attempts; last error: HTTP 503: down")
    Job.objects.filter(pk=b.pk).update(error="gave up after 3 attempts; last error: HTTP 503: down")
    Job.objects.filter(pk=c.pk).update(error="HTTP 400: bad request")
    url = reverse("admin:llmqueue_deadletter_changelist")
    page = admin_web.get(url).content.decode()
    assert "Dead letters by error" in page
    assert '<a href="?reason=HTTP%20503%3A%20down">HTTP 503: down</a></td><td>2</td>' in page
    assert "HTTP 400: bad request (1)" in page  # the list filter
    page = admin_web.get(url, {"reason": "HTTP 503: down"}).content.decode()
    assert f"/deadletter/{a.pk}/change/" in page and f"/deadletter/{b.pk}/change/" in page
    assert f"/deadletter/{c.pk}/change/" not in page


def test_retry_dead_letters_on_another_endpoint(admin_web, user):
    first = make_endpoint(name="first")
    spare = make_endpoint(name="spare")
    make_endpoint(name="qwen-only", served_models=["qwen"])
    dead = dead_job(user)
    url = reverse("admin:llmqueue_deadletter_changelist")
    page = admin_web.post(
        url, {"action": "retry_on_endpoint", "_selected_action": [dead.pk]}
    ).content.decode()
    assert "Retry on another endpoint" in page and f'value="{dead.pk}"' in page
    assert f'value="{spare.pk}">' in page and "serves none of these models" in page
    r = admin_web.post(
        url,
        {
            "action": "retry_on_endpoint",
            "_selected_action": [dead.pk],
            "apply": "1",
            "endpoint": spare.pk,
        },
        follow=True,
    )
    assert "Queued 1 job(s) again, pinned to spare." in r.content.decode()
    dead.refresh_from_db()
    assert dead.status == Status.QUEUED and dead.pinned_endpoint == spare != first


def test_job_lists_show_endpoint_badges_and_link_batches(admin_web, user, echo_endpoint):
    batch, (job,) = jobs_submit_many(owner=user, specs=[chat_spec()])
    Job.objects.filter(pk=job.pk).update(endpoint=echo_endpoint)
    url = reverse("admin:llmqueue_job_changelist")
    page = admin_web.get(url).content.decode()
    endpoint_url = reverse("admin:llmqueue_endpoint_change", args=[echo_endpoint.pk])
    assert f'class="llmq-badge llmq-ok" href="{endpoint_url}"' in page
    assert f"?batch__id__exact={batch.pk}" in page and "llmqueue/admin.css" in page
    r = admin_web.get(url, {"batch__id__exact": batch.pk})
    assert r.status_code == 200 and f"/job/{job.pk}/change/" in r.content.decode()
    change = admin_web.get(reverse("admin:llmqueue_job_change", args=[job.pk])).content.decode()
    assert endpoint_url in change
