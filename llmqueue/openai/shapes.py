"""What the Files and Batch APIs share: the view wrapper, ids and lists (errors and the
caller: ``llmqueue.openai.errors``).

Every answer that is not the object asked for is OpenAI's error, ``{"error": {"message",
"type", "param", "code"}}``, with the status OpenAI gives, so that the SDKs raise what their
users catch: 400 ``BadRequestError``, 401 ``AuthenticationError``, 404 ``NotFoundError``, 409
``ConflictError``, 413, 429 ``RateLimitError`` (with ``Retry-After``). ``v1_view`` wraps each view
with that, the method check and the caller's key; no view answers a 500 for bad input.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from llmqueue.errors import BatchStateError, OverLimit, SubmitError
from llmqueue.openai.errors import OpenAIError, caller, not_found


def _answer_error(exc: Exception) -> HttpResponse | None:
    """The OpenAI-shaped answer to the services' refusals (None: not one of them)."""
    if isinstance(exc, OverLimit):
        headers = {"Retry-After": str(exc.retry_after)}
        return OpenAIError(
            429, exc.message, type="requests", code="rate_limit_exceeded", headers=headers
        ).response()
    if isinstance(exc, SubmitError):
        return OpenAIError(400, str(exc), param=exc.field).response()
    if isinstance(exc, BatchStateError):
        return OpenAIError(409, str(exc), code="invalid_state").response()
    return None


def v1_view(*methods: str) -> Callable[[Callable[..., HttpResponseBase]], Any]:
    """A /v1 view taking ``methods``: called as ``view(request, user, ...)`` with the caller
    known, its errors in OpenAI's shape. CSRF-exempt: a key, not a cookie, authenticates."""

    def wrap(view: Callable[..., HttpResponseBase]) -> Any:
        @csrf_exempt
        @functools.wraps(view)
        def run(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method not in methods:
                    raise OpenAIError(
                        405,
                        f"{request.method} is not allowed here; use {' or '.join(methods)}",
                        code="method_not_allowed",
                    )
                return view(request, caller(request), *args, **kwargs)
            except OpenAIError as exc:
                return exc.response()
            except (SubmitError, BatchStateError) as exc:
                answer = _answer_error(exc)
                assert answer is not None
                return answer

        return run

    return wrap


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object, or a 400 saying why not."""
    try:
        value = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise OpenAIError(
            400,
            f"We could not parse the JSON body of your request ({exc}). Send a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise OpenAIError(400, "The body must be a JSON object.", code="invalid_json")
    return value


def pk_of(ident: str, prefix: str, what: str) -> int:
    """The primary key behind an id like "file-12" or "batch_12"; 404 for any other id."""
    found = re.fullmatch(re.escape(prefix) + r"([1-9][0-9]{0,17})", ident)
    if found is None:
        raise not_found(what, ident)
    return int(found[1])


def int_param(request: HttpRequest, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise OpenAIError(400, f"{name} must be a whole number from {low} to {high}", param=name)
    return int(raw)


def cursor_page(
    qs: QuerySet[Any],
    request: HttpRequest,
    *,
    prefix: str,
    what: str,
    default_limit: int,
    max_limit: int,
) -> tuple[list[Any], bool]:
    """One page of a list, newest first (``order=asc``: oldest first) after the ``after`` id,
    as OpenAI's cursor pages: (the rows, whether more follow)."""
    limit = int_param(request, "limit", default=default_limit, low=1, high=max_limit)
    order = request.GET.get("order", "desc")
    if order not in ("asc", "desc"):
        raise OpenAIError(400, "order must be asc or desc", param="order")
    qs = qs.order_by("id" if order == "asc" else "-id")
    if after := request.GET.get("after"):
        pk = pk_of(after, prefix, what)
        qs = qs.filter(pk__gt=pk) if order == "asc" else qs.filter(pk__lt=pk)
    rows = list(qs[: limit + 1])
    return rows[:limit], len(rows) > limit


def list_of(data: Sequence[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(data),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def epoch(value: Any) -> int | None:
    """A datetime as OpenAI writes times: whole seconds since the epoch."""
    return int(value.timestamp()) if value is not None else None
