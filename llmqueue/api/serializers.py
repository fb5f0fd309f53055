"""API shapes. They parse JSON into values; what makes a job or an endpoint valid is the
services' (``llmqueue.jobs.intake``, ``llmqueue.endpoints.service``), shared with the pages."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from llmqueue.conf import conf
from llmqueue.endpoints.service import FIELDS as ENDPOINT_FIELDS
from llmqueue.endpoints.service import endpoint_create, endpoint_update
from llmqueue.errors import EndpointInvalid
from llmqueue.jobs import JobSpec
from llmqueue.jobs.intake import job_spec_check
from llmqueue.jobs.validation import PRIORITY_DEFAULT
from llmqueue.models import Batch, Endpoint, Job, Kind


class JobSubmitSerializer(serializers.Serializer):
    """Parses a job's JSON into values; the rules are the intake's (``job_spec_check``)."""

    kind = serializers.ChoiceField(choices=Kind.choices, default=Kind.CHAT)
    payload = serializers.DictField(
        help_text="the OpenAI request body: model, messages / prompt / input, parameters"
    )
    priority = serializers.IntegerField(
        default=PRIORITY_DEFAULT, help_text="0-9, higher runs first"
    )
    max_attempts = serializers.IntegerField(
        required=False, allow_null=True, help_text="1 to LLMQUEUE_MAX_ATTEMPTS_LIMIT"
    )
    idempotency_key = serializers.CharField(required=False, allow_null=True, allow_blank=False)
    cache = serializers.BooleanField(default=True)
    cache_ttl = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="seconds: accept only a cached answer younger than this, and keep this "
        "job's answer no longer (at most LLMQUEUE_CACHE_TTL_S)",
    )
    deadline = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="ISO 8601: still queued then, the job ends expired without an upstream call",
    )
    expires_in = serializers.IntegerField(
        required=False, allow_null=True, help_text="seconds from now, instead of a deadline"
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The size is the view's 413, checked before parsing; not a 400 here.
        spec, problems = job_spec_check(**attrs, size=False)
        if spec is None:
            raise serializers.ValidationError(problems)
        attrs["spec"] = spec
        return attrs

    def to_spec(self) -> JobSpec:
        spec: JobSpec = self.validated_data["spec"]
        return spec


class BulkSubmitSerializer(serializers.Serializer):
    jobs = JobSubmitSerializer(many=True, allow_empty=False)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

    def validate_jobs(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(value) > conf.MAX_BULK_JOBS:
            raise serializers.ValidationError(
                f"at most {conf.MAX_BULK_JOBS} jobs per request; got {len(value)}"
            )
        seen: dict[str, int] = {}
        for i, job in enumerate(value):
            key = job.get("idempotency_key")
            if key and key in seen:
                raise serializers.ValidationError(
                    f"jobs[{i}].idempotency_key: {key!r} is also used by jobs[{seen[key]}]"
                )
            if key:
                seen[key] = i
        return value

    def to_specs(self) -> list[JobSpec]:
        return [d["spec"] for d in self.validated_data["jobs"]]


#: how the API writes a datetime (DRF's ISO 8601, in UTC with a Z)
_DATETIME = serializers.DateTimeField()


class JobSerializer(serializers.ModelSerializer):
    endpoint: serializers.SlugRelatedField[Endpoint] = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True, help_text="null until one serves it"
    )
    batch: serializers.PrimaryKeyRelatedField[Batch] = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="null: submitted on its own"
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "status",
            "kind",
            "priority",
            "payload",
            "result",
            "error",
            "attempts",
            "max_attempts",
            "endpoint",
            "cache_hit",
            "created_at",
            "started_at",
            "finished_at",
            "idempotency_key",
            "batch",
            "deadline",
        ]
        read_only_fields = fields

    def to_representation(self, job: Job) -> dict[str, Any]:
        """What the fields above give, built directly: a bulk submission answers with up to
        1,000 jobs, and DRF's field-by-field walk cost ~0.1 ms a job of the request's ~0.45
        (tests/api/test_jobs_api.py compares the two)."""
        # One serializer formats every job of a list (DRF's ListSerializer reuses its child),
        # and a bulk submission's jobs share one created_at: each datetime is formatted once.
        formatted: dict[Any, Any] = self.__dict__.setdefault("_datetimes", {})

        def when(value: Any) -> Any:
            if value not in formatted:
                formatted[value] = _DATETIME.to_representation(value)
            return formatted[value]

        return {
            "id": job.pk,
            "status": str(job.status),
            "kind": str(job.kind),
            "priority": job.priority,
            "payload": job.payload,
            "result": job.result,
            "error": job.error,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "endpoint": job.endpoint.name if job.endpoint is not None else None,
            "cache_hit": job.cache_hit,
            "created_at": when(job.created_at),
            "started_at": when(job.started_at),
            "finished_at": when(job.finished_at),
            "idempotency_key": job.idempotency_key,
            "batch": job.batch_id,
            "deadline": when(job.deadline),
        }


class EndpointSerializer(serializers.ModelSerializer):
    """Parses an endpoint's JSON into values; the rules and their words are the endpoint
    service's (``llmqueue.endpoints.service``), shared with the admin's form."""

    name = serializers.CharField()
    base_url = serializers.CharField(help_text="e.g. http://host:8000/v1")
    models = serializers.ListField(
        source="served_models",
        child=serializers.CharField(allow_blank=True),
        help_text="model names this endpoint serves",
    )
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        style={"input_type": "password"},
        help_text="sent as Authorization: Bearer; never returned",
    )
    weight = serializers.IntegerField(required=False, help_text="1-1000, default 1")
    max_concurrency = serializers.IntegerField(required=False, help_text="1-10000, default 64")
    rpm_limit = serializers.IntegerField(required=False, allow_null=True)
    tpm_limit = serializers.IntegerField(required=False, allow_null=True)
    timeout_s = serializers.FloatField(required=False, help_text="0.1-3600 s, default 120")

    class Meta:
        model = Endpoint
        # the settings the endpoint service takes, between the read-only state
        fields = ["id", *ENDPOINT_FIELDS, "healthy", "breaker_state", "latency_ms"]
        read_only_fields = ["id", "healthy", "breaker_state", "latency_ms"]

    @staticmethod
    def _values(validated: dict[str, Any]) -> dict[str, Any]:
        values = dict(validated)
        if "served_models" in values:
            values["models"] = values.pop("served_models")
        return values

    def create(self, validated_data: dict[str, Any]) -> Endpoint:
        try:
            return endpoint_create(**self._values(validated_data))
        except EndpointInvalid as exc:
            raise serializers.ValidationError(exc.problems) from None

    def update(self, instance: Endpoint, validated_data: dict[str, Any]) -> Endpoint:
        try:
            return endpoint_update(endpoint_id=instance.pk, changes=self._values(validated_data))
        except EndpointInvalid as exc:
            raise serializers.ValidationError(exc.problems) from None
