"""``/api/batches/``: the caller's batches (bulk submissions, JSONL uploads, the Batch API's),
as the pages show them: list, detail, results as JSONL, cancel, retry the dead jobs.

Thin: the batch service (``llmqueue.jobs.batches``) decides; a batch is settled before it is
shown, so one whose jobs all ended answers with its end status and files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from llmqueue.jobs import selectors
from llmqueue.jobs.batches import (
    batch_cancel,
    batch_output_lines,
    batch_request_counts,
    batch_retry_dead,
    batches_settle,
)
from llmqueue.models import Batch, Status

S = serializers

#: a batch's jobs by status, with the total, how many ended, and that share in percent
BatchCounts = type(
    "BatchCounts",
    (S.Serializer,),
    {name: S.IntegerField() for name in [*Status.values, "total", "finished", "percent"]},
)


class RequestCounts(S.Serializer):
    total = S.IntegerField()
    completed = S.IntegerField(help_text="answered")
    failed = S.IntegerField(help_text="dead, cancelled or expired")


class BatchSerializer(S.ModelSerializer):
    counts = S.SerializerMethodField()
    request_counts = S.SerializerMethodField()

    class Meta:
        model = Batch
        fields = [
            "id",
            "name",
            "status",
            "endpoint",
            "completion_window",
            "deadline",
            "metadata",
            "errors",
            "input_file",
            "output_file",
            "error_file",
            "created_at",
            "in_progress_at",
            "finalizing_at",
            "cancelling_at",
            "ended_at",
            "counts",
            "request_counts",
        ]
        read_only_fields = fields

    def _counts(self, batch: Batch) -> dict[str, int]:
        # a list's counts come in its context, read at once; one batch's are read here, once
        known: dict[int, dict[str, int]] = self.__dict__.setdefault(
            "_known_counts", dict(self.context.get("counts") or {})
        )
        if batch.pk not in known:
            known.update(selectors.batch_counts(batch_ids=[batch.pk]))
        return known[batch.pk]

    @extend_schema_field(BatchCounts)
    def get_counts(self, batch: Batch) -> dict[str, int]:
        return self._counts(batch)

    @extend_schema_field(RequestCounts)
    def get_request_counts(self, batch: Batch) -> dict[str, int]:
        return batch_request_counts(self._counts(batch))


class CancelResult(S.Serializer):
    cancelled = S.IntegerField(help_text="queued jobs cancelled by this request")
    batch = BatchSerializer()


class RetryResult(S.Serializer):
    queued = S.IntegerField(help_text="dead jobs queued again")
    batch = BatchSerializer()


class BatchViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = BatchSerializer

    def get_queryset(self) -> QuerySet[Batch]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular building the schema
            return Batch.objects.none()
        return selectors.batches_of(owner=self.request.user)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        rows = list(page or [])
        ids = [b.pk for b in rows]
        if batches_settle(batch_ids=ids):
            fresh = {b.pk: b for b in Batch.objects.filter(pk__in=ids)}
            rows = [fresh[pk] for pk in ids]
        context = {**self.get_serializer_context(), "counts": selectors.batch_counts(batch_ids=ids)}
        return self.get_paginated_response(BatchSerializer(rows, many=True, context=context).data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(self._settled().data)

    def _settled(self) -> BatchSerializer:
        batch = self.get_object()
        batches_settle(batch_ids=[batch.pk])
        batch.refresh_from_db()
        return BatchSerializer(batch, context=self.get_serializer_context())

    @extend_schema(
        responses={(200, "application/jsonl"): OpenApiResponse(OpenApiTypes.STR)},
        description="The ended jobs, one JSON line each in the OpenAI Batch API's output "
        "format (id, custom_id, response {status_code, request_id, body}, error).",
    )
    @action(detail=True, methods=["get"])
    def results(self, request: Request, pk: str | None = None) -> StreamingHttpResponse:
        batch = self.get_object()

        def lines() -> Iterator[str]:
            for _, line in batch_output_lines(batch):
                yield json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"

        answer = StreamingHttpResponse(lines(), content_type="application/jsonl")
        answer["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}-results.jsonl"'
        return answer

    @extend_schema(request=None, responses={200: CancelResult, 409: None})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel every queued job of the batch in one statement; running ones finish."""
        n = batch_cancel(batch_id=self.get_object().pk)
        return Response({"cancelled": n, "batch": self._settled().data})

    @extend_schema(request=None, responses={200: RetryResult})
    @action(detail=True, methods=["post"], url_path="retry-dead")
    def retry_dead(self, request: Request, pk: str | None = None) -> Response:
        n = batch_retry_dead(batch_id=self.get_object().pk)
        return Response({"queued": n, "batch": self._settled().data})
