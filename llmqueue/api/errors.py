"""How the API answers errors: DRF's shape ({field: [reasons]}), plus llmqueue's own."""

from __future__ import annotations

from typing import Any

from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from llmqueue.errors import BatchStateError, OverLimit, SubmitError, TransitionError


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__({field: [f"is {size} bytes; the limit is {limit} bytes"]})


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, TransitionError | BatchStateError):
        return Response({"detail": str(exc), "status": exc.status}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, OverLimit):
        return Response(
            {
                "detail": exc.message,
                "limit": exc.limit_name,
                "retry_after": exc.retry_after,
            },
            status=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={
                "Retry-After": str(exc.retry_after),
                "X-RateLimit-Limit": str(exc.limit),
                "X-RateLimit-Remaining": str(exc.remaining),
                "X-RateLimit-Reset": str(exc.reset),
            },
        )
    if isinstance(exc, SubmitError):
        return Response({exc.field: [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
