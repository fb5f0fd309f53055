from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from llmqueue.jobs import JobSpec, job_submit, jobs_submit_many
from llmqueue.models import Job, JobAttempt, Outcome, Status
from tests.factories import chat_payload, chat_spec, make_endpoint

pytestmark = pytest.mark.django_db


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
    assert web.get("/jobs/").content.decode().count('class="badge status-') == 2
    assert web.get("/jobs/?status=dead").content.decode().count('class="badge status-') == 1


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
        defaults={
            "func": "llmqueue.worker.housekeeping.housekeeping",
            "next_run": timezone.now(),
            "task": "abc",
        },
    )
    assert client.get("/readyz").status_code == 200
    Schedule.objects.update(next_run=timezone.now() - timedelta(minutes=5))  # the cluster stopped
    assert client.get("/readyz").status_code == 503


def test_metrics_are_exposed(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and b"django_http_requests" in r.content


def test_submit_form_with_earlier_turns_and_parameters(web, echo_endpoint):
    page = web.get("/jobs/new/").content.decode()
    assert 'name="turn_role"' in page and "Add a turn" in page and 'for="id_temperature"' in page
    r = web.post(
        "/jobs/new/",
        {
            "kind": "chat",
            "model": "echo",
            "system": "terse",
            "turn_role": ["user", "assistant", "user"],
            "turn_content": ["what is 2+2?", "4", ""],
            "prompt": "and 3+3?",
            "temperature": "0.5",
            "max_tokens": "64",
            "parameters": '{"top_p": 0.9, "temperature": 1.5}',
            "priority": 5,
        },
    )
    assert r.status_code == 302
    assert Job.objects.get().payload == {
        "top_p": 0.9,
        "temperature": 0.5,  # the field wins over the JSON
        "max_tokens": 64,
        "model": "echo",
        "messages": [
            {"role": "system", "content": "terse"},
            {"role": "user", "content": "what is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "and 3+3?"},
        ],
    }


def test_submit_form_keeps_turns_and_reports_a_bad_one(web, echo_endpoint):
    form = {
        "kind": "chat",
        "model": "echo",
        "turn_role": ["tool"],
        "turn_content": ["x"],
        "prompt": "hi",
        "priority": 5,
    }
    r = web.post("/jobs/new/", {**form, "temperature": "7"})
    assert r.status_code == 200 and not Job.objects.exists()
    assert "less than or equal to 2" in r.content.decode()  # temperature
    page = web.post("/jobs/new/", form).content.decode()
    assert "turn 1: role must be user or assistant" in page and ">x</textarea>" in page
    assert not Job.objects.exists()


def test_job_list_filters_and_search(web, user, other_user, echo_endpoint):
    make_endpoint(name="other-models", served_models=["qwen"])
    a = job_submit(owner=user, spec=chat_spec("find the needle", priority=9))[0]
    b = job_submit(owner=user, spec=chat_spec("haystack", priority=1))[0]
    c = job_submit(
        owner=user,
        spec=JobSpec(kind="chat", payload=chat_payload("q", model="qwen"), priority=1),
    )[0]
    job_submit(owner=other_user, spec=chat_spec("needle of someone else"))
    batch, (d,) = jobs_submit_many(owner=user, specs=[chat_spec("in a batch")])
    Job.objects.filter(pk=b.pk).update(custom_id="cid-7", error="upstream said no")

    def ids(query: str) -> set[int]:
        page = web.get(f"/jobs/?{query}").context["page"]
        return {j.pk for j in page}

    assert ids("") == {a.pk, b.pk, c.pk, d.pk}
    assert ids("q=needle") == {a.pk}
    assert ids(f"q={a.pk}") == {a.pk}
    assert ids("q=cid-7") == ids("q=said+no") == {b.pk}
    assert ids("model=qwen") == {c.pk}
    assert ids("priority=1") == {b.pk, c.pk}
    assert ids("priority=1&model=echo") == {b.pk}
    assert ids(f"batch={batch.pk}") == {d.pk}
    assert ids("priority=banana&status=nope") == {a.pk, b.pk, c.pk, d.pk}  # bad filters ignored
    page = web.get("/jobs/?model=qwen").content.decode()
    assert "1 job matches" in page and 'value="qwen" selected' in page


def test_job_page_renders_the_conversation_timeline_and_raw_json(web, user, echo_endpoint):
    job = job_submit(
        owner=user,
        spec=JobSpec(
            kind="chat",
            payload={
                "model": "echo",
                "messages": [
                    {"role": "system", "content": "be kind"},
                    {"role": "user", "content": [{"type": "text", "text": "part one"}]},
                ],
            },
        ),
    )[0]
    now = timezone.now()
    JobAttempt.objects.create(
        job=job,
        number=1,
        endpoint=echo_endpoint,
        endpoint_name=echo_endpoint.name,
        started_at=now,
        duration_ms=120,
        http_status=503,
        outcome=Outcome.RETRY,
        error="HTTP 503",
    )
    JobAttempt.objects.create(
        job=job,
        number=2,
        endpoint=echo_endpoint,
        endpoint_name=echo_endpoint.name,
        started_at=now + timedelta(seconds=1),
        duration_ms=80,
        http_status=200,
        outcome=Outcome.SUCCESS,
    )
    Job.objects.filter(pk=job.pk).update(
        status=Status.SUCCEEDED,
        endpoint=echo_endpoint,
        started_at=job.created_at + timedelta(seconds=2),
        finished_at=now + timedelta(seconds=2),
        result={"choices": [{"message": {"role": "assistant", "content": "the answer"}}]},
    )
    page = web.get(f"/jobs/{job.pk}/").content.decode()
    for text in [
        "Conversation",
        '<div class="role">system</div><p class="text">be kind</p>',
        '<p class="text">part one</p>',
        '<p class="text" id="answer">the answer</p>',
        "Result as JSON",
        "&quot;content&quot;: &quot;the answer&quot;",
        "waited 2.0 s in the queue",
        'class="badge ok"',  # the endpoint's health badge
        '<span class="retry" data-left="',
        "data-job-poll",
    ]:
        if text == "data-job-poll":
            assert text not in page  # a finished job stops polling
        else:
            assert text in page, text


def test_job_page_polls_while_unfinished(web, user, echo_endpoint):
    job = job_submit(owner=user, spec=chat_spec())[0]
    page = web.get(f"/jobs/{job.pk}/").content.decode()
    assert f'data-job-poll data-status="queued" data-url="/api/jobs/{job.pk}/"' in page


def test_pages_have_a_skip_link_a_main_landmark_and_the_current_page(web):
    page = web.get("/jobs/").content.decode()
    assert '<a class="skip" href="#main">' in page and '<main id="main"' in page
    assert 'href="/jobs/" aria-current="page"' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
