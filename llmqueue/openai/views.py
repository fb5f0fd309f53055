"""The /v1 views: async, so that a waiting call holds a future on the event loop, not a thread.

Everything that touches the database (the key, the intake, the finished job) runs in short
sync functions through ``sync_to_async``; the wait in between is ``job_wait``, one shared
poller per process (``llmqueue.jobs.waiting``).
"""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from llmqueue.conf import conf
from llmqueue.jobs.intake import served_models
from llmqueue.jobs.waiting import db_section, job_wait, request_thread_release
from llmqueue.models import Job, Kind
from llmqueue.openai.answers import answer_of, still_waiting
from llmqueue.openai.errors import OpenAIError, bad_request, caller
from llmqueue.openai.submission import body_of, call_submit

#: what the SDK sends as its read time-out, seconds: the answer must reach it before that
TIMEOUT_HEADER = "X-Stainless-Read-Timeout"


def wait_budget(request: HttpRequest) -> float:
    """How long this call may wait for its job: LLMQUEUE_V1_MAX_WAIT_S, or less when the client
    said it gives up sooner (then a little less than that, so that it reads our 504)."""
    budget = float(conf.V1_MAX_WAIT_S)
    raw = request.headers.get(TIMEOUT_HEADER)
    try:
        theirs = float(raw) if raw else None
    except ValueError:
        theirs = None
    if theirs is not None and theirs > 0:
        budget = min(budget, theirs - min(1.0, theirs * 0.1))
    return max(0.0, budget)


def _submit(request: HttpRequest, kind: str) -> tuple[Job, bool]:
    owner = caller(request)  # first: a stranger learns nothing of what is wrong with a body
    body = body_of(request)
    stream = body.get("stream") is True
    if stream and kind == Kind.EMBEDDING:
        raise bad_request("stream: embeddings are not streamed; leave it unset", param="stream")
    return call_submit(request=request, owner=owner, kind=kind, body=body), stream


def _finished(job_id: int, stream: bool) -> HttpResponseBase | None:
    job = Job.objects.filter(pk=job_id).first()
    if job is None or not job.is_terminal:
        return None
    return answer_of(job, stream=stream)


async def _call(request: HttpRequest, kind: str) -> HttpResponseBase:
    if request.method != "POST":
        return OpenAIError(405, "Use POST.", code="method_not_allowed").response()
    started = time.monotonic()
    budget = wait_budget(request)
    try:
        job, stream = await db_section(_submit, request, kind)
    except OpenAIError as exc:
        return exc.response()
    if job.is_terminal:
        return await db_section(answer_of, job, stream=stream)
    await request_thread_release()
    remaining = budget - (time.monotonic() - started)
    while remaining > 0:
        await job_wait(job_id=job.pk, timeout=remaining)
        answer = await db_section(_finished, job.pk, stream)
        if answer is not None:
            return answer
        remaining = budget - (time.monotonic() - started)
    return still_waiting(job.pk, round(time.monotonic() - started, 1))


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return await _call(request, Kind.CHAT)


@csrf_exempt
async def completions(request: HttpRequest) -> HttpResponseBase:
    return await _call(request, Kind.COMPLETION)


@csrf_exempt
async def embeddings(request: HttpRequest) -> HttpResponseBase:
    return await _call(request, Kind.EMBEDDING)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llmqueue"}


def _models(request: HttpRequest, name: str | None) -> HttpResponse:
    try:
        caller(request)
    except OpenAIError as exc:
        return exc.response()
    served = served_models()
    if name is None:
        return JsonResponse({"object": "list", "data": [_model(m) for m in served]})
    if name not in served:
        return OpenAIError(
            404,
            f"The model `{name}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        ).response()
    return JsonResponse(_model(name))


async def models(request: HttpRequest) -> HttpResponse:
    return await db_section(_models, request, None)


async def model(request: HttpRequest, name: str) -> HttpResponse:
    return await db_section(_models, request, name)


async def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other /v1 path: OpenAI's 404, not the pages' HTML one."""
    return OpenAIError(
        404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url"
    ).response()
