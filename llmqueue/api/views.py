"""The REST API: thin views over llmqueue.jobs (writes) and llmqueue.jobs.selectors (reads)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from llmqueue.api.errors import PayloadTooLarge
from llmqueue.api.filters import JobFilter, StrictFilterBackend
from llmqueue.api.schema import BulkResponse
from llmqueue.api.serializers import (
    BulkSubmitSerializer,
    EndpointSerializer,
    JobSerializer,
    JobSubmitSerializer,
)
from llmqueue.api.shapes import Stats, Usage
from llmqueue.conf import conf
from llmqueue.jobs import job_cancel, job_retry, job_submit, jobs_submit_many, selectors
from llmqueue.jobs.validation import payload_oversize
from llmqueue.limits.ledger import usage_of
from llmqueue.models import Endpoint, Job


def wait_seconds(raw: str | None) -> float:
    """?wait=N as seconds (0 when absent), or a 400 naming it."""
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise serializers.ValidationError({"wait": ["must be a number of seconds"]}) from None
    if not 0 <= wait <= conf.MAX_WAIT_S:
        raise serializers.ValidationError({"wait": [f"must be between 0 and {conf.MAX_WAIT_S:g}"]})
    return wait


def _check_body_size(request: Request, limit: int) -> None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise PayloadTooLarge("body", length, limit)


def _check_payload_sizes(jobs: list[Any]) -> None:
    """The intake's size limit, answered as a 413 before the rest is validated."""
    for i, job in enumerate(jobs):
        payload = job.get("payload") if isinstance(job, dict) else None
        if payload is None:
            continue
        if over := payload_oversize(payload):
            field = f"jobs[{i}].payload" if len(jobs) > 1 else "payload"
            raise PayloadTooLarge(field, over.size, over.limit)


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = JobSerializer
    filter_backends = [StrictFilterBackend]
    filterset_class = JobFilter

    def get_queryset(self) -> QuerySet[Job]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular building the schema
            return Job.objects.none()
        return selectors.jobs_of(owner=self.request.user)

    @extend_schema(request=JobSubmitSerializer, responses={201: JobSerializer, 200: JobSerializer})
    def create(self, request: Request) -> Response:
        # A body far past the per-job limit is refused before it is parsed.
        _check_body_size(request, conf.MAX_PAYLOAD_BYTES + 64 * 1024)
        if isinstance(request.data, dict):
            _check_payload_sizes([request.data])
        incoming = JobSubmitSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        job, created = job_submit(owner=request.user, spec=incoming.to_spec())
        return Response(
            JobSerializer(job).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(request=BulkSubmitSerializer, responses={201: BulkResponse})
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        _check_body_size(request, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        jobs = request.data.get("jobs") if isinstance(request.data, dict) else None
        if isinstance(jobs, list):
            _check_payload_sizes(jobs)
        incoming = BulkSubmitSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        batch, created = jobs_submit_many(
            owner=request.user, specs=incoming.to_specs(), name=incoming.validated_data["name"]
        )
        return Response(
            {"batch": batch.pk, "jobs": JobSerializer(created, many=True).data},
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "wait",
                float,
                description="hold the answer up to N seconds (max 60) until the job is terminal",
            )
        ]
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # ?wait=N is checked here and waited for around this view, without a thread
        # (llmqueue.api.waiting): this answers at once.
        wait_seconds(request.query_params.get("wait"))
        return Response(JobSerializer(self.get_object()).data)

    @extend_schema(request=None, responses={200: JobSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        job_cancel(job_id=job.pk)
        job.refresh_from_db()
        return Response(JobSerializer(job).data)

    @extend_schema(request=None, responses={200: JobSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        job_retry(job_id=job.pk)
        job.refresh_from_db()
        return Response(JobSerializer(job).data)


class EndpointViewSet(viewsets.ModelViewSet):
    serializer_class = EndpointSerializer
    permission_classes = [permissions.IsAdminUser]
    queryset = Endpoint.objects.all()


class UsageView(APIView):
    """The caller's limits and quotas, and how much of them they used."""

    @extend_schema(responses={200: Usage})
    def get(self, request: Request) -> Response:
        return Response(usage_of(request.user))


class StatsView(APIView):
    @extend_schema(responses={200: Stats})
    def get(self, request: Request) -> Response:
        return Response(selectors.queue_stats())
