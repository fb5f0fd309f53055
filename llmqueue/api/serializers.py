"""API shapes. Input validation lives here (and in llmqueue.jobs.validation, shared with the
forms)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from llmqueue.conf import conf
from llmqueue.jobs import JobSpec
from llmqueue.jobs.validation import payload_problems
from llmqueue.models import Batch, Endpoint, Job, Kind


class JobSubmitSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Kind.choices, default=Kind.CHAT)
    payload = serializers.DictField(
        help_text="the OpenAI request body: model, messages / prompt / input, parameters"
    )
    priority = serializers.IntegerField(
        min_value=0, max_value=9, default=5, help_text="0-9, higher runs first"
    )
    max_attempts = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    idempotency_key = serializers.CharField(
        max_length=200, required=False, allow_null=True, allow_blank=False
    )
    cache = serializers.BooleanField(default=True)
    cache_ttl = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        help_text="seconds: accept only a cached answer younger than this, and keep this "
        "job's answer no longer (at most LLMQUEUE_CACHE_TTL_S)",
    )

    def validate_cache_ttl(self, value: int | None) -> int | None:
        if value is not None and value > conf.CACHE_TTL_S:
            raise serializers.ValidationError(
                f"must be at most {conf.CACHE_TTL_S} (the cache's own TTL); it can only shorten it"
            )
        return value

    def validate_max_attempts(self, value: int | None) -> int | None:
        if value is not None and value > conf.MAX_ATTEMPTS_LIMIT:
            raise serializers.ValidationError(f"must be at most {conf.MAX_ATTEMPTS_LIMIT}")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        problems = payload_problems(attrs["kind"], attrs["payload"])
        if problems:
            raise serializers.ValidationError({"payload": problems})
        return attrs

    def to_spec(self) -> JobSpec:
        d = self.validated_data
        return JobSpec(
            kind=d["kind"],
            payload=d["payload"],
            priority=d["priority"],
            max_attempts=d.get("max_attempts"),
            idempotency_key=d.get("idempotency_key"),
            cache=d["cache"],
            cache_ttl=d.get("cache_ttl"),
        )


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
        specs = []
        for d in self.validated_data["jobs"]:
            specs.append(
                JobSpec(
                    kind=d["kind"],
                    payload=d["payload"],
                    priority=d["priority"],
                    max_attempts=d.get("max_attempts"),
                    idempotency_key=d.get("idempotency_key"),
                    cache=d["cache"],
                    cache_ttl=d.get("cache_ttl"),
                )
            )
        return specs


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
        }


class EndpointSerializer(serializers.ModelSerializer):
    models = serializers.ListField(
        source="served_models",
        child=serializers.CharField(max_length=200),
        allow_empty=False,
        help_text="model names this endpoint serves",
    )
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        style={"input_type": "password"},
        help_text="sent as Authorization: Bearer; never returned",
    )
    weight = serializers.IntegerField(min_value=1, max_value=1000, default=1)
    max_concurrency = serializers.IntegerField(min_value=1, max_value=10000, default=64)
    rpm_limit = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    tpm_limit = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    timeout_s = serializers.FloatField(min_value=0.1, max_value=3600, default=120.0)

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "name",
            "base_url",
            "api_key",
            "models",
            "weight",
            "max_concurrency",
            "rpm_limit",
            "tpm_limit",
            "timeout_s",
            "enabled",
            "healthy",
            "breaker_state",
            "latency_ms",
        ]
        read_only_fields = ["id", "healthy", "breaker_state", "latency_ms"]

    def validate_base_url(self, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise serializers.ValidationError("must start with http:// or https://")
        return value.rstrip("/")
