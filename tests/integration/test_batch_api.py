"""The Batch API end to end: the ``openai`` SDK against a live server, a real qcluster and a
stand-in endpoint."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from llmqueue.keys import apikey_create
from llmqueue.models import Job, Status
from tests.factories import chat_payload, make_endpoint, make_user
from tests.fixtures import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _client(live_server: Any) -> openai.OpenAI:
    plain, _ = apikey_create(owner=make_user(), name="sdk")
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=plain, max_retries=0)


def _batch(client: openai.OpenAI, n: int, *, window: str = "24h") -> Any:
    lines = [
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": chat_payload(f"line {i}"),
            }
        )
        for i in range(n)
    ]
    f = client.files.create(file=("input.jsonl", "\n".join(lines).encode()), purpose="batch")
    return client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window=window
    )


def _ended(client: openai.OpenAI, batch_id: str) -> Any:
    b = client.batches.retrieve(batch_id)
    return b if b.status in ("completed", "failed", "expired", "cancelled") else None


def _lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    rows = [json.loads(x) for x in client.files.content(file_id).text.splitlines()]
    return {r["custom_id"]: r for r in rows}


def test_a_batch_of_100_lines_completes_with_its_output_file(live_server, cluster, standin):
    make_endpoint(base_url=standin.base_url, max_concurrency=20)
    client = _client(live_server)
    cluster()
    b = _batch(client, 100)
    assert b.status == "in_progress" and b.request_counts.total == 100
    done = wait_until(lambda: _ended(client, b.id), timeout=90, what="the batch to end")
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (100, 0)
    assert done.completed_at is not None and done.error_file_id is None
    out = _lines(client, done.output_file_id)
    assert set(out) == {f"req-{i}" for i in range(100)}
    answer = out["req-42"]["response"]
    assert answer["status_code"] == 200
    assert answer["body"]["choices"][0]["message"]["content"] == "echo: line 42"
    assert out["req-42"]["error"] is None
    assert any(f.id == done.output_file_id for f in client.files.list())


def test_a_batch_cancelled_midway(live_server, cluster, standin):
    make_endpoint(base_url=standin.base_url, max_concurrency=2)
    standin.control(latency_ms=200)
    client = _client(live_server)
    cluster()
    b = _batch(client, 60)
    wait_until(
        lambda: Job.objects.filter(status=Status.SUCCEEDED).count() >= 4,
        timeout=30,
        what="the batch to get going",
    )
    cancelled = client.batches.cancel(b.id)
    assert cancelled.status in ("cancelling", "cancelled")
    done = wait_until(lambda: _ended(client, b.id), timeout=30, what="the cancel to settle")
    assert done.status == "cancelled" and done.cancelled_at is not None
    counts = done.request_counts
    assert counts.completed >= 4 and counts.failed >= 30
    assert counts.completed + counts.failed == 60
    out, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
    assert len(out) == counts.completed and len(errors) == counts.failed
    assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
    # a cancelled line was never called
    assert len(standin.calls()) == counts.completed


def test_a_batch_whose_window_runs_out_expires_with_its_unfinished_lines(
    live_server, cluster, standin
):
    make_endpoint(base_url=standin.base_url, max_concurrency=1)
    standin.control(latency_ms=500)
    client = _client(live_server)
    cluster()
    b = _batch(client, 60, window="10s")
    assert b.expires_at - b.created_at == 10
    done = wait_until(lambda: _ended(client, b.id), timeout=60, what="the window to run out")
    assert done.status == "expired" and done.expired_at is not None
    counts = done.request_counts
    assert 1 <= counts.completed < 60 and counts.completed + counts.failed == 60
    out, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
    assert set(out) | set(errors) == {f"req-{i}" for i in range(60)}
    assert len(errors) == counts.failed
    assert {e["error"]["code"] for e in errors.values()} == {"batch_expired"}
    # the expired lines never reached the upstream
    assert len(standin.calls()) == counts.completed
    assert Job.objects.filter(status=Status.EXPIRED).count() == counts.failed
