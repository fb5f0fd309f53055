"""The Files and Batch APIs through the ``openai`` SDK against a live server (no cluster: nothing
here waits for a job to run)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from django.core.files.storage import default_storage

from llmqueue.keys import apikey_create
from llmqueue.models import Batch, File, Job
from tests.factories import chat_payload, make_endpoint, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def sdk(live_server, user) -> openai.OpenAI:
    plain, _ = apikey_create(owner=user, name="sdk")
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=plain, max_retries=0)


def line(custom_id: str, *, url: str = "/v1/chat/completions", **body) -> str:
    body = body or chat_payload(f"hi {custom_id}")
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


@pytest.fixture
def me(db):
    make_endpoint(served_models=["echo"])
    return make_user()


def test_files_upload_list_retrieve_content_delete(live_server, me):
    client = sdk(live_server, me)
    data = (line("a") + "\n" + line("b") + "\n").encode()
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert f.id.startswith("file-") and f.bytes == len(data) and f.purpose == "batch"
    assert f.filename == "in.jsonl" and f.object == "file"
    assert client.files.retrieve(f.id).bytes == len(data)
    assert [x.id for x in client.files.list()] == [f.id]
    assert client.files.content(f.id).content == data
    stored = File.objects.get().content.name
    deleted = client.files.delete(f.id)
    assert deleted.deleted is True and deleted.id == f.id
    assert not File.objects.exists()
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    assert not default_storage.exists(stored)


def test_a_file_must_be_for_a_batch_and_not_empty(live_server, me):
    client = sdk(live_server, me)
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.files.create(file=("x.jsonl", b""), purpose="batch")


def test_a_file_over_the_limit_is_refused(live_server, me, settings):
    settings.LLMQUEUE = {"FILE_MAX_BYTES": 10}
    with pytest.raises(openai.BadRequestError, match="limit is 10"):
        sdk(live_server, me).files.create(file=("x.jsonl", b"x" * 11), purpose="batch")
    assert not File.objects.exists()


def test_another_users_file_and_batch_are_not_found(live_server, me):
    mine = sdk(live_server, me)
    f = mine.files.create(file=("in.jsonl", line("a").encode()), purpose="batch")
    b = mine.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    theirs = sdk(live_server, make_user())
    for call in (
        lambda: theirs.files.retrieve(f.id),
        lambda: theirs.files.content(f.id),
        lambda: theirs.files.delete(f.id),
        lambda: theirs.batches.retrieve(b.id),
        lambda: theirs.batches.cancel(b.id),
        lambda: theirs.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert list(theirs.batches.list()) == [] and list(theirs.files.list()) == []
    assert mine.batches.retrieve(b.id).status == "in_progress"


def test_a_bad_input_file_fails_the_batch_line_by_line_and_queues_nothing(live_server, me):
    client = sdk(live_server, me)
    lines = [
        line("good"),
        "{not json",
        line("url", url="/v1/images/generations"),
        line("model", **chat_payload("x", model="no-such-model")),
        line("good2"),
    ]
    f = client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    b = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "bad"},
    )
    assert b.status == "failed" and b.failed_at is not None
    assert b.metadata == {"run": "bad"}
    errors = [(e.line, e.code, e.param) for e in b.errors.data]
    assert errors == [
        (2, "invalid_json", None),
        (3, "invalid_url", "url"),
        (4, "model_not_found", "model"),
    ]
    assert "no-such-model" in b.errors.data[2].message
    assert not Job.objects.exists()
    assert b.request_counts.total == 0
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(b.id)  # it ended: there is nothing to cancel


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"input_file_id": None, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            "input_file_id",
        ),
        ({"endpoint": "/v1/images", "completion_window": "24h"}, "endpoint"),
        ({"endpoint": "/v1/chat/completions", "completion_window": "2d"}, "completion_window"),
        ({"endpoint": "/v1/chat/completions", "completion_window": "1s"}, "completion_window"),
        (
            {"endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": [1]},
            "metadata",
        ),
    ],
)
def test_wrong_batch_arguments_are_400s_naming_the_field(live_server, me, body, param):
    client = sdk(live_server, me)
    f = client.files.create(file=("in.jsonl", line("a").encode()), purpose="batch")
    if param != "input_file_id":
        body = {"input_file_id": f.id, **body}
    with pytest.raises(openai.BadRequestError) as err:
        client.batches.create(**body)
    assert err.value.body["param"] == param
    assert not Batch.objects.exists()


def test_a_body_that_is_not_json_is_a_400_in_openais_shape(live_server, me):
    plain, _ = apikey_create(owner=me, name="raw")
    r = httpx.post(
        f"{live_server.url}/v1/batches",
        content=b"{nope",
        headers={"Authorization": f"Bearer {plain}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(f"{live_server.url}/v1/batches")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_batches_list_pages_with_after_and_limit(live_server, me):
    client = sdk(live_server, me)
    f = client.files.create(file=("in.jsonl", line("a").encode()), purpose="batch")
    made = [
        client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="1h"
        ).id
        for _ in range(5)
    ]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2, after=made[3]).data] == made[::-1][2:4]
    assert [b.id for b in client.batches.list(limit=2)] == made[::-1]  # auto-paginates


def test_cancelling_a_batch_cancels_its_queued_jobs_at_once(live_server, me):
    client = sdk(live_server, me)
    data = "\n".join(line(f"r{i}") for i in range(50)).encode()
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    b = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert b.request_counts.total == 50
    b = client.batches.cancel(b.id)  # no job runs: it ends at once
    assert b.status == "cancelled" and b.cancelled_at is not None
    assert (b.request_counts.completed, b.request_counts.failed) == (0, 50)
    assert b.output_file_id is None
    errors = [json.loads(x) for x in client.files.content(b.error_file_id).text.splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert sorted(e["custom_id"] for e in errors) == sorted(f"r{i}" for i in range(50))
    assert client.batches.cancel(b.id).status == "cancelled"  # again: nothing changes
