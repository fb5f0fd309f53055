"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``, with the
status OpenAI answers, so that the SDKs raise the exception their users already catch
(404 ``NotFoundError``, 400 ``BadRequestError``, 429 ``RateLimitError``...)."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

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
