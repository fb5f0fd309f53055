"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``, with the
status OpenAI answers, so that the SDKs raise the exception their users already catch
(404 ``NotFoundError``, 400 ``BadRequestError``, 429 ``RateLimitError``...); and the caller
of a /v1 request, by its key."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework.exceptions import APIException, Throttled
from rest_framework.request import Request
from rest_framework.settings import api_settings

#: the response header that names the job behind a /v1 answer
JOB_HEADER = "X-Llmqueue-Job-Id"


class OpenAIError(Exception):
    """An answer the edge gives instead of the upstream's body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JsonResponse:
        answer = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            answer[name] = value
        return answer


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def problems_error(problems: dict[str, list[str]], *, names: dict[str, str]) -> OpenAIError:
    """The intake's {field: [reasons]} as one 400: the first problem names its ``param`` (a
    payload problem reads "path: reason"; ``names`` maps a spec field to the header it came
    from), the message lists them all."""
    lines: list[str] = []
    param: str | None = None
    for field, reasons in problems.items():
        for reason in reasons:
            if field == "payload" and ": " in reason:
                path, why = reason.split(": ", 1)
            else:
                path, why = names.get(field, field), reason
            param = param or path
            lines.append(f"{path}: {why}")
    return bad_request("; ".join(lines), param=param)


def not_found(what: str, ident: str) -> OpenAIError:
    return OpenAIError(404, f"No such {what}: {ident}", param="id", code="not_found")


def caller(request: HttpRequest) -> Any:
    """The user the request's key belongs to, by the REST API's own authenticators (its
    settings, ``DEFAULT_AUTHENTICATION_CLASSES``): Bearer and Token keys, their failure
    counting, the lockout of a guessing address. Raises OpenAIError 401 or 429."""
    classes: Any = api_settings.DEFAULT_AUTHENTICATION_CLASSES  # the classes, once loaded
    drf = Request(request, authenticators=[a() for a in classes])
    try:
        user = drf.user
    except Throttled as exc:
        wait = str(int(getattr(exc, "wait", None) or 1))
        raise OpenAIError(
            429,
            str(exc.detail),
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": wait},
        ) from None
    except APIException as exc:
        raise OpenAIError(401, str(exc.detail), code="invalid_api_key") from None
    if user is None or not user.is_authenticated:
        raise OpenAIError(
            401,
            "You didn't provide an API key: send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    return user
