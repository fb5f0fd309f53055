from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client

from llmqueue.jobs import job_submit
from llmqueue.models import Job, Status
from tests.factories import chat_spec, make_endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_pages_need_login(client):
    for url in ["/", "/jobs/", "/jobs/new/"]:
        r = client.get(url)
        assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")


def test_login_page_logs_in(client, user):
    r = client.get("/accounts/login/")
    assert r.status_code == 200 and b'name="username"' in r.content
    r = client.post(
        "/accounts/login/", {"username": user.username, "password": "pw-" + user.username}
    )
    assert r.status_code == 302 and r["Location"] == "/"


def test_submit_form_creates_a_chat_job(web, user, echo_endpoint):
    page = web.get("/jobs/new/")
    assert page.status_code == 200 and b'<option value="echo"' in page.content
    r = web.post(
        "/jobs/new/",
        {
            "kind": "chat",
            "model": "echo",
            "system": "be brief",
            "prompt": "hello there",
            "parameters": '{"temperature": 0.2}',
            "priority": 8,
        },
    )
    job = Job.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/jobs/{job.pk}/"
    assert job.owner == user and job.priority == 8
    assert job.payload == {
        "temperature": 0.2,
        "model": "echo",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": ""}, "a chat needs a message"),
        ({"parameters": "{oops"}, "not valid JSON"),
        ({"parameters": "[1]"}, "must be a JSON object"),
        ({"priority": 12}, "less than or equal to 9"),
        ({"model": "nope"}, "Select a valid choice"),
        ({"max_attempts": 99}, "less than or equal to 20"),
    ],
)
def test_submit_form_shows_errors_inline(web, echo_endpoint, change, message):
    form = {
        "kind": "chat",
        "model": "echo",
        "prompt": "hi",
        "parameters": "{}",
        "priority": 5,
        **change,
    }
    r = web.post("/jobs/new/", form)
    assert r.status_code == 200 and message in r.content.decode()
    assert not Job.objects.exists()


def test_completion_and_embedding_from_the_form(web, echo_endpoint):
    web.post(
        "/jobs/new/",
        {
            "kind": "completion",
            "model": "echo",
            "prompt": "once",
            "parameters": "{}",
            "priority": 5,
        },
    )
    web.post(
        "/jobs/new/",
        {"kind": "embedding", "model": "echo", "prompt": "vec", "parameters": "{}", "priority": 5},
    )
    payloads = {j.kind: j.payload for j in Job.objects.all()}
    assert payloads["completion"] == {"model": "echo", "prompt": "once"}
    assert payloads["embedding"] == {"model": "echo", "input": "vec"}


def test_job_page_shows_the_answer_and_cancel(web, user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec("hi"))[0]
    page = web.get(f"/jobs/{job.pk}/").content.decode()
    assert "queued" in page and "Cancel" in page and 'http-equiv="refresh"' in page
    assert web.post(f"/jobs/{job.pk}/cancel/").status_code == 302
    assert Job.objects.get().status == Status.CANCELLED
    Job.objects.filter(pk=job.pk).update(
        status=Status.SUCCEEDED,
        result={"choices": [{"message": {"role": "assistant", "content": "Hello <b>human</b>"}}]},
    )
    page = web.get(f"/jobs/{job.pk}/").content.decode()
    assert "Hello &lt;b&gt;human&lt;/b&gt;" in page and 'http-equiv="refresh"' not in page


def test_job_list_filters(web, user, echo_endpoint):
    a = job_submit(owner=user, spec=chat_spec())[0]
    job_submit(owner=user, spec=chat_spec())
    Job.objects.filter(pk=a.pk).update(status=Status.DEAD)
    assert web.get("/jobs/").content.decode().count('class="status-') == 2
    assert web.get("/jobs/?status=dead").content.decode().count('class="status-') == 1


def test_dashboard_lists_endpoints(web):
    make_endpoint(name="gpu-box-1")
    page = web.get("/").content.decode()
    assert "gpu-box-1" in page and "queued" in page


def test_demo_endpoint_is_off_unless_enabled(client, settings):
    assert (
        client.post("/demo/v1/chat/completions", "{}", content_type="application/json").status_code
        == 404
    )
    settings.LLMQUEUE = {"DEMO_ENDPOINT": True}
    r = client.post(
        "/demo/v1/chat/completions",
        '{"model": "echo", "messages": [{"role": "user", "content": "ping"}]}',
        content_type="application/json",
    )
    assert r.json()["choices"][0]["message"]["content"] == "echo: ping"
    assert client.get("/demo/v1/models").json()["data"][0]["id"] == "echo"


def test_probes(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")  # no cluster has ever run its schedule here
    assert r.status_code == 503 and "cluster" in r.json()["reason"]
    from django.utils import timezone
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="llmqueue housekeeping",
        defaults={"func": "llmqueue.drain.housekeeping", "next_run": timezone.now(), "task": "abc"},
    )
    assert client.get("/readyz").status_code == 200
    Schedule.objects.update(next_run=timezone.now() - timedelta(minutes=5))  # the cluster stopped
    assert client.get("/readyz").status_code == 503


def test_metrics_are_exposed(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and b"django_http_requests" in r.content
