"""A finished job -> the /v1 answer: the upstream's body, the same as server-sent events for
``stream: true``, or the error in OpenAI's shape.

Streaming is not incremental: the job runs to its end upstream (a queue may hold it for a
while, retry it, or answer it from the cache), then its whole answer is sent as one chunk per
choice, a closing chunk with the finish reason, and ``data: [DONE]``, as OpenAI's SDKs read.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.http import HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse

from llmqueue.models import Job, JobAttempt, Status
from llmqueue.openai.errors import JOB_HEADER, OpenAIError

#: "HTTP 400: <the upstream's message>", as llmqueue.calls.client writes a refused call
_HTTP_PREFIX = re.compile(r"^HTTP (\d{3}): ")


def failure_of(job: Job) -> OpenAIError:
    """A dead or cancelled job as OpenAI would have answered the call (sync: reads a row)."""
    if job.status == Status.CANCELLED:
        return OpenAIError(409, f"Job {job.pk} was cancelled.", type="job_cancelled", code=None)
    last = (
        JobAttempt.objects.filter(job_id=job.pk)
        .order_by("-number")
        .values_list("http_status", flat=True)
        .first()
    )
    message = _HTTP_PREFIX.sub("", job.error or "the job failed")
    if last is not None and 400 <= last <= 599:
        kind = "invalid_request_error" if last < 500 else "upstream_error"
        return OpenAIError(last, message, type=kind, code=None)
    # No HTTP answer at all (cannot connect, time-outs, lost workers): a gateway's failure.
    return OpenAIError(502, message, type="upstream_error", code="upstream_unavailable")


def answer_of(job: Job, *, stream: bool) -> HttpResponseBase:
    """The response for a terminal job (sync: a dead job's status is read from its attempts)."""
    if job.status != Status.SUCCEEDED:
        answer: HttpResponseBase = failure_of(job).response()
    elif stream:
        answer = StreamingHttpResponse(_events(job.result or {}), content_type="text/event-stream")
        answer["Cache-Control"] = "no-cache"
    else:
        answer = JsonResponse(job.result, safe=False)
    answer[JOB_HEADER] = str(job.pk)
    answer["X-Llmqueue-Cache"] = "hit" if job.cache_hit else "miss"
    return answer


def still_waiting(job_id: int, waited: float) -> HttpResponse:
    """504: the job outlived the wait; it goes on, and its result can be fetched later."""
    error = OpenAIError(
        504,
        f"Job {job_id} has not finished after {waited:g} s; it is still queued or running. "
        f"Fetch its result later from /api/jobs/{job_id}/ (with ?wait=N to wait for it).",
        type="timeout",
        code="job_pending",
        headers={JOB_HEADER: str(job_id), "Location": f"/api/jobs/{job_id}/"},
    )
    return error.response()


def chunks(result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A chat or completion body as OpenAI's stream chunks: each choice whole, then each
    choice's finish reason, then the usage alone (as ``stream_options.include_usage`` has it)."""
    chat = result.get("object") == "chat.completion"
    common = {
        "id": result.get("id", ""),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": result.get("created", 0),
        "model": result.get("model", ""),
    }
    if result.get("system_fingerprint"):
        common["system_fingerprint"] = result["system_fingerprint"]
    choices = result.get("choices") or []
    for choice in choices:
        index = choice.get("index", 0)
        if chat:
            message = choice.get("message") or {}
            delta: dict[str, Any] = {"role": message.get("role", "assistant")}
            delta["content"] = message.get("content")
            if message.get("tool_calls"):
                delta["tool_calls"] = [
                    {"index": i, **call} for i, call in enumerate(message["tool_calls"])
                ]
            part = {"index": index, "delta": delta, "finish_reason": None, "logprobs": None}
        else:
            part = {"index": index, "text": choice.get("text", ""), "finish_reason": None}
        yield {**common, "choices": [part]}
    for choice in choices:
        index = choice.get("index", 0)
        last: dict[str, Any] = {"index": index, "finish_reason": choice.get("finish_reason")}
        if chat:
            last["delta"] = {}
        else:
            last["text"] = ""
        yield {**common, "choices": [last]}
    if result.get("usage"):
        yield {**common, "choices": [], "usage": result["usage"]}


async def _events(result: dict[str, Any]) -> AsyncIterator[bytes]:
    for chunk in chunks(result):
        yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
