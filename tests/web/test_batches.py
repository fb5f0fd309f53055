"""JSONL batch upload, the batch page, its progress and its results file."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from llmqueue.jobs import jobs_submit_many
from llmqueue.models import Batch, Job, Status
from llmqueue.web.batch_upload import batch_file_parse
from tests.factories import chat_payload, chat_spec

pytestmark = pytest.mark.django_db


def jsonl(*rows: object) -> bytes:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    return "".join(line + "\n" for line in lines).encode()


def upload(web: Client, content: bytes, **fields: object):
    file = SimpleUploadedFile("requests.jsonl", content, content_type="application/jsonl")
    return web.post("/batches/new/", {"file": file, "priority": 5, **fields})


def test_upload_both_line_formats_as_one_batch(web, user, echo_endpoint):
    content = jsonl(
        chat_payload("plain chat"),
        {"model": "echo", "prompt": "once upon"},
        {"model": "echo", "input": "vector me"},
        "",
        {
            "custom_id": "q-1",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": chat_payload("from the batch API"),
        },
        {"custom_id": "q-2", "url": "/v1/embeddings", "body": {"model": "echo", "input": "x"}},
    )
    r = upload(web, content, name="nightly", priority=7)
    batch = Batch.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/batches/{batch.pk}/"
    jobs = list(batch.jobs.order_by("id"))
    assert [j.kind for j in jobs] == ["chat", "completion", "embedding", "chat", "embedding"]
    assert [j.custom_id for j in jobs] == ["", "", "", "q-1", "q-2"]
    assert {j.priority for j in jobs} == {7} and batch.name == "nightly" and batch.owner == user
    assert jobs[3].payload == chat_payload("from the batch API")


def test_every_bad_line_is_reported_and_nothing_is_queued(web, echo_endpoint):
    content = jsonl(
        chat_payload("fine"),
        "{not json",
        [1, 2],
        {"model": "echo"},
        {"model": "echo", "messages": []},
        {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]},
        {"custom_id": "a", "url": "/v1/images", "body": {"model": "echo"}},
        {"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}},
        {"custom_id": "dup", "url": "/v1/completions", "body": {"model": "echo", "prompt": "p"}},
        {"custom_id": "dup", "url": "/v1/completions", "body": {"model": "echo", "prompt": "q"}},
    )
    r = upload(web, content)
    page = r.content.decode()
    assert r.status_code == 200 and not Job.objects.exists() and not Batch.objects.exists()
    for expected in [
        "line 2: not JSON",
        "line 3: must be a JSON object",
        "line 4: cannot tell the kind",
        "line 5: messages: required for kind",
        "line 6: model: no enabled endpoint serves &#x27;gpt-9&#x27;; served models: echo",
        "line 7: url: must be one of /v1/chat/completions, /v1/completions, /v1/embeddings",
        "line 8: method: must be POST",
        "line 10: custom_id: &#x27;dup&#x27; is also on line 9",
    ]:
        assert expected in page, expected
    assert "line 1:" not in page and "line 9:" not in page


def test_upload_limits(web, echo_endpoint, settings):
    settings.LLMQUEUE = {"BATCH_MAX_LINES": 3}
    r = upload(web, jsonl(*[chat_payload(str(i)) for i in range(5)]))
    assert "line 4: the file has more than 3 requests" in r.content.decode()
    assert "the file holds no requests" in upload(web, b"\n\n").content.decode()
    assert not Job.objects.exists()


def test_parse_accepts_a_byte_order_mark_and_reports_bad_utf8(echo_endpoint):
    parsed = batch_file_parse([b"\xef\xbb\xbf" + json.dumps(chat_payload()).encode(), b"\xff\n"])
    assert len(parsed.specs) == 1 and parsed.problems == ["line 2: not UTF-8 text"]


def test_batch_page_progress_and_results(web, user, echo_endpoint):
    batch, jobs = jobs_submit_many(
        owner=user, specs=[chat_spec("a"), chat_spec("b"), chat_spec("c")], name="three"
    )
    Job.objects.filter(pk__in=[jobs[0].pk, jobs[1].pk]).update(custom_id="first")
    Job.objects.filter(pk=jobs[0].pk).update(
        status=Status.SUCCEEDED, result={"choices": [{"message": {"content": "A"}}]}
    )
    Job.objects.filter(pk=jobs[1].pk).update(status=Status.DEAD, error="HTTP 400: bad")
    page = web.get(f"/batches/{batch.pk}/").content.decode()
    assert "three" in page and 'value="2"' in page and "2</span> of <span" in page
    assert "Retry the 1 dead job" in page and "data-batch-poll" in page
    progress = web.get(f"/batches/{batch.pk}/progress/").json()
    assert progress["total"] == 3 and progress["finished"] == 2 and progress["percent"] == 67
    assert progress["queued"] == 1 and progress["dead"] == 1

    r = web.get(f"/batches/{batch.pk}/results.jsonl")
    assert r["Content-Disposition"] == f'attachment; filename="batch-{batch.pk}-results.jsonl"'
    lines = [json.loads(line) for line in b"".join(r.streaming_content).decode().splitlines()]
    assert lines == [
        {
            "id": f"batch_req_{jobs[0].pk}",
            "custom_id": "first",
            "response": {
                "status_code": 200,
                "request_id": str(jobs[0].pk),
                "body": {"choices": [{"message": {"content": "A"}}]},
            },
            "error": None,
        },
        {
            "id": f"batch_req_{jobs[1].pk}",
            "custom_id": "first",
            "response": None,
            "error": {"code": "dead", "message": "HTTP 400: bad"},
        },
    ]
    web.post(f"/batches/{batch.pk}/retry-dead/")
    assert Job.objects.get(pk=jobs[1].pk).status == Status.QUEUED


def test_batch_list_and_another_users_batch(web, user, other_user, echo_endpoint):
    jobs_submit_many(owner=user, specs=[chat_spec()], name="mine")
    theirs, _ = jobs_submit_many(owner=other_user, specs=[chat_spec()], name="theirs")
    page = web.get("/batches/").content.decode()
    assert "mine" in page and "theirs" not in page and "<progress" in page
    for url in ["", "progress/", "results.jsonl"]:
        assert web.get(f"/batches/{theirs.pk}/{url}").status_code == 404
    assert web.get("/batches/new/").status_code == 200
