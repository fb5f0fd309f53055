"""/v1 through the `openai` SDK, sync and async, against a real ASGI server, a real cluster and
the stand-in endpoint: what its users run, unmodified but for the base URL."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import httpx
import openai
import pytest

from llmqueue.keys import apikey_create
from llmqueue.models import Job, UserLimits
from tests.factories import make_endpoint, make_user

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hello queue"}]


@pytest.fixture
def setup(web_server: Any, standin: Any) -> dict[str, Any]:
    user = make_user()
    plain, _ = apikey_create(owner=user, name="sdk")
    make_endpoint(base_url=standin.base_url, max_concurrency=100)
    server = web_server()
    return {"user": user, "key": plain, "server": server, "base_url": f"{server.url}/v1"}


def sdk(setup: dict[str, Any], **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=setup["base_url"], api_key=setup["key"], max_retries=0, **kw)


def test_chat_completions_embeddings_and_models(setup: dict[str, Any], cluster: Any) -> None:
    cluster()
    client = sdk(setup)
    raw = client.chat.completions.with_raw_response.create(model="echo", messages=MESSAGES)
    chat = raw.parse()
    assert "hello queue" in (chat.choices[0].message.content or "")
    job = Job.objects.get(pk=int(raw.headers["x-llmqueue-job-id"]))
    assert job.owner == setup["user"] and job.status == "succeeded"
    assert job.result == json.loads(raw.http_response.content)

    done = client.completions.create(model="echo", prompt="complete me")
    assert "complete me" in done.choices[0].text
    vectors = client.embeddings.create(model="echo", input=["a", "b"])
    assert len(vectors.data) == 2 and vectors.data[0].embedding

    assert [m.id for m in client.models.list()] == ["echo"]
    assert client.models.retrieve("echo").id == "echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_stream_is_the_finished_answer_as_events(setup: dict[str, Any], cluster: Any) -> None:
    cluster()
    client = sdk(setup)
    whole = client.chat.completions.create(
        model="echo", messages=MESSAGES, extra_headers={"Cache-Control": "no-cache"}
    )
    stream = client.chat.completions.create(
        model="echo",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"Cache-Control": "no-cache"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    # The upstream was asked without streaming (it answers one JSON body).
    assert not any(j.payload.get("stream") for j in Job.objects.all())

    completion = "".join(
        c.choices[0].text
        for c in client.completions.create(model="echo", prompt="abc", stream=True)
        if c.choices
    )
    assert "abc" in completion


def test_async_client(setup: dict[str, Any], cluster: Any) -> None:
    cluster()

    async def calls() -> tuple[list[str], str]:
        client = openai.AsyncOpenAI(base_url=setup["base_url"], api_key=setup["key"], max_retries=0)
        answers = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": f"n{i}"}]
                )
                for i in range(20)
            )
        )
        streamed = ""
        async for chunk in await client.chat.completions.create(
            model="echo", messages=MESSAGES, stream=True
        ):
            if chunk.choices:
                streamed += chunk.choices[0].delta.content or ""
        await client.close()
        return [a.choices[0].message.content or "" for a in answers], streamed

    answers, streamed = asyncio.run(calls())
    assert all(f"n{i}" in a for i, a in enumerate(answers))
    assert "hello queue" in streamed


def test_errors_as_openai_raises_them(setup: dict[str, Any]) -> None:
    """No cluster: every one of these is answered before a job would run."""
    client = sdk(setup)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-none", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="echo", messages=[])
    assert bad.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="echo", messages=MESSAGES, extra_headers={"X-Priority": "12"}
        )
    assert bad.value.param == "X-Priority"
    with pytest.raises(openai.AuthenticationError):
        sdk({**setup, "key": "lq_nope_nope"}).models.list()

    # A body that is not JSON: 400 in OpenAI's shape, never a 500.
    answer = httpx.post(
        f"{setup['base_url']}/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {setup['key']}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_json"
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert not Job.objects.exists()


def test_over_quota_is_a_rate_limit_error_with_retry_after(setup: dict[str, Any]) -> None:
    UserLimits.objects.create(user=setup["user"], submissions_per_minute=1)
    client = sdk(setup)
    # The first is queued (no cluster: it is answered 504 once the client's wait is over).
    with pytest.raises(openai.APIStatusError) as pending:
        sdk(setup, timeout=2.0).chat.completions.create(model="echo", messages=MESSAGES)
    assert pending.value.status_code == 504
    job_id = int(pending.value.response.headers["x-llmqueue-job-id"])
    assert Job.objects.get(pk=job_id).status == "queued"
    assert pending.value.code == "job_pending"
    with pytest.raises(openai.RateLimitError) as over:
        client.chat.completions.create(model="echo", messages=MESSAGES)
    assert int(over.value.response.headers["retry-after"]) >= 1
    assert Job.objects.count() == 1


def test_headers_priority_idempotency_cache_and_dead_letters(
    setup: dict[str, Any], cluster: Any, standin: Any
) -> None:
    cluster()
    client = sdk(setup)
    first = client.chat.completions.with_raw_response.create(
        model="echo",
        messages=MESSAGES,
        extra_headers={"X-Priority": "9", "Idempotency-Key": "k1"},
    )
    again = client.chat.completions.with_raw_response.create(
        model="echo", messages=MESSAGES, extra_headers={"Idempotency-Key": "k1"}
    )
    job_id = first.headers["x-llmqueue-job-id"]
    assert again.headers["x-llmqueue-job-id"] == job_id
    assert Job.objects.get(pk=job_id).priority == 9
    hit = client.chat.completions.with_raw_response.create(model="echo", messages=MESSAGES)
    assert hit.headers["x-llmqueue-cache"] == "hit"
    fresh = client.chat.completions.with_raw_response.create(
        model="echo", messages=MESSAGES, extra_headers={"Cache-Control": "no-cache"}
    )
    assert fresh.headers["x-llmqueue-cache"] == "miss"
    assert Job.objects.get(pk=fresh.headers["x-llmqueue-job-id"]).cache is False

    # A dead letter is answered with the upstream's own status and words.
    standin.control(status=422, message="the stand-in refuses this")
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(
            model="echo", messages=MESSAGES, extra_headers={"Cache-Control": "no-cache"}
        )
    assert "the stand-in refuses this" in refused.value.message
    dead = Job.objects.get(pk=refused.value.response.headers["x-llmqueue-job-id"])
    assert dead.status == "dead"


def test_v1_paths_answer_in_openai_shape(setup: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{setup['base_url']}/assistants", headers={"Authorization": f"Bearer {setup['key']}"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 404
    assert json.loads(err.value.read())["error"]["code"] == "unknown_url"
