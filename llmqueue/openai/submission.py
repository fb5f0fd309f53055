"""A /v1 request -> a job through the one intake (sync: run in sync_to_async).

What OpenAI puts in the body stays in the payload; what is ours comes in headers, so that an
unmodified SDK works and a client that knows llmqueue can ask for more:

    X-Priority: 0-9            the job's priority (higher runs first; default 5)
    Idempotency-Key: <key>     the same key from the same user returns the same job
    Cache-Control: no-cache    bypass the response cache (also no-store); max-age=N accepts
                               only a cached answer younger than N seconds
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from django.http import HttpRequest

from llmqueue.errors import ModelNotServed, OverLimit
from llmqueue.jobs.intake import job_spec_check, job_submit
from llmqueue.jobs.validation import payload_oversize
from llmqueue.models import Job
from llmqueue.openai.errors import OpenAIError, bad_request, problems_error

#: a spec field -> the header it comes from, to name it in a 400
HEADER_NAMES = {
    "priority": "X-Priority",
    "idempotency_key": "Idempotency-Key",
    "cache_ttl": "Cache-Control",
}
#: what a client may ask of the upstream but a queue answers itself: the upstream is always
#: called without streaming, and the finished body is sent as events (``llmqueue.openai.answers``)
STREAM_FIELDS = ("stream", "stream_options")


def body_of(request: HttpRequest) -> dict[str, Any]:
    """The JSON object the request carries, or a 400 saying why not."""
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.", code="invalid_json")
    return body


@dataclasses.dataclass(frozen=True)
class Options:
    """What the headers ask for, as the intake's values (checked there)."""

    priority: Any = 5
    idempotency_key: str | None = None
    cache: bool = True
    cache_ttl: Any = None


def options_of(request: HttpRequest) -> Options:
    priority: Any = 5
    if (raw := request.headers.get("X-Priority")) is not None:
        try:
            priority = int(raw)
        except ValueError:
            raise bad_request(
                f"X-Priority: {raw!r} is not an integer from 0 to 9", param="X-Priority"
            ) from None
    cache, ttl = True, None
    for directive in (request.headers.get("Cache-Control") or "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-cache", "no-store"):
            cache = False
        elif name == "max-age":
            try:
                ttl = int(value)
            except ValueError:
                raise bad_request(
                    f"Cache-Control: max-age={value!r} is not a number of seconds",
                    param="Cache-Control",
                ) from None
    return Options(
        priority=priority,
        idempotency_key=request.headers.get("Idempotency-Key") or None,
        cache=cache,
        cache_ttl=ttl if cache else None,
    )


def call_submit(*, request: HttpRequest, owner: Any, kind: str, body: dict[str, Any]) -> Job:
    """Check and queue ``owner``'s call as one job; returns it (it may have ended already: a
    cache hit). Raises OpenAIError in OpenAI's words for everything refused."""
    options = options_of(request)
    payload = {k: v for k, v in body.items() if k not in STREAM_FIELDS}
    if over := payload_oversize(payload):
        raise OpenAIError(413, f"The request body {over.reason}.", code="request_too_large")
    spec, problems = job_spec_check(
        kind=kind,
        payload=payload,
        priority=options.priority,
        idempotency_key=options.idempotency_key,
        cache=options.cache,
        cache_ttl=options.cache_ttl,
    )
    if spec is None:
        raise problems_error(problems, names=HEADER_NAMES)
    try:
        job, _ = job_submit(owner=owner, spec=spec)
    except ModelNotServed as exc:
        raise OpenAIError(
            404,
            f"The model `{payload['model']}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        ) from exc
    except OverLimit as exc:
        raise OpenAIError(
            429,
            exc.message,
            type="requests",
            code="rate_limit_exceeded",
            headers={
                "Retry-After": str(exc.retry_after),
                "X-RateLimit-Limit": str(exc.limit),
                "X-RateLimit-Remaining": str(exc.remaining),
                "X-RateLimit-Reset": str(exc.reset),
            },
        ) from exc
    return job
