"""The OpenAPI document, true to what the API answers: the shapes of its untyped answers
(stats, usage, a bulk submission) and the error bodies and headers every operation may send.

schemathesis checks the document against real responses (tests/api/test_openapi_conformance.py).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from llmqueue.api.serializers import JobSerializer
from llmqueue.models import Status


class BulkResponse(serializers.Serializer):
    batch = serializers.IntegerField(help_text="the id of the batch the jobs joined")
    jobs = JobSerializer(many=True)


class Detail(serializers.Serializer):
    """401, 403, 404: what DRF answers."""

    detail = serializers.CharField()


class Conflict(serializers.Serializer):
    detail = serializers.CharField()
    status = serializers.ChoiceField(choices=Status.choices, help_text="the job's status now")


class TooMany(serializers.Serializer):
    detail = serializers.CharField()
    limit = serializers.CharField(required=False, help_text="which limit or quota (a 429 of it)")
    retry_after = serializers.FloatField(required=False, help_text="seconds")


#: a field error body: {field: [reasons]}, where a field of a list may hold its items' errors
FIELD_ERRORS: dict[str, Any] = {
    "type": "object",
    "description": "field name -> reasons; nested for a list's items (`jobs`); "
    "`non_field_errors` for the body as a whole",
    "additionalProperties": {},
}

_HEADER_INT = {"schema": {"type": "integer"}}
RETRY_AFTER = {"Retry-After": {**_HEADER_INT, "description": "seconds to wait"}}
RATE_LIMIT = {
    "X-RateLimit-Limit": {**_HEADER_INT, "description": "the limit's size (limits, quotas)"},
    "X-RateLimit-Remaining": {**_HEADER_INT, "description": "what is left of it"},
    "X-RateLimit-Reset": {**_HEADER_INT, "description": "seconds until it is full again"},
}


class ErrorsAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the errors: 400 and 413 where input is read, 401,
    403 and 429 everywhere (a key or token may be wrong anywhere, and a guesser's address is
    answered 429 on any route), 404 on one object's routes and a list's pages."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        method = self.method.upper()
        takes_input = (
            method in {"POST", "PUT", "PATCH"}
            or self._is_list_view()
            or (
                "{" in self.path and method == "GET"  # ?wait=
            )
        )
        errors: dict[str, Any] = {
            "401": self._error(Detail, "no, or a wrong, API key or token"),
            "403": self._error(Detail, "not allowed (staff only, or a session without CSRF)"),
            "429": self._error(
                TooMany,
                "too many wrong keys from this address, or over a rate limit or quota",
                {**RETRY_AFTER, **(RATE_LIMIT if method == "POST" else {})},
            ),
        }
        if takes_input:
            errors["400"] = self._raw(FIELD_ERRORS, "bad input: each field with its reasons")
        if "{" in self.path or self._is_list_view():
            errors["404"] = self._error(Detail, "no such object of yours, or no such page")
        if method in {"POST", "PUT", "PATCH"}:
            errors["413"] = self._raw(FIELD_ERRORS, "the body or a payload is over its limit")
        if self.path.rstrip("/").endswith(("/cancel", "/retry")):
            errors["409"] = self._error(Conflict, "the job's status does not allow it")
        for code, response in errors.items():
            responses.setdefault(code, response)
            if code == "409":
                responses[code] = response  # replaces the bare 409 of the view's decorator
        return responses

    def _error(
        self, serializer: type[serializers.Serializer], why: str, headers: Any = None
    ) -> dict[str, Any]:
        response = self._get_response_for_code(serializer, "400", None, "response")
        response["description"] = why
        if headers:
            response["headers"] = headers
        return response

    def _raw(self, schema: dict[str, Any], why: str) -> dict[str, Any]:
        return {"description": why, "content": {"application/json": {"schema": schema}}}
