"""The shapes of the API's answers built as plain dicts (``/api/stats/``, ``/api/usage/``):
for the OpenAPI document only, they validate nothing."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from llmqueue.limits.ledger import LIMIT_FIELDS
from llmqueue.models import TERMINAL, Status

S = serializers


def _fields(names: list[str], make: type[S.Field], **kw: Any) -> dict[str, S.Field]:
    return {name: make(**kw) for name in names}


Depth = type("Depth", (S.Serializer,), _fields(list(Status.values), S.IntegerField))
FinishedTotal = type(
    "FinishedTotal", (S.Serializer,), _fields([str(s) for s in TERMINAL], S.IntegerField)
)


class EndpointSummary(S.Serializer):
    id = S.IntegerField()
    name = S.CharField()
    models = S.ListField(child=S.CharField())
    enabled = S.BooleanField()
    healthy = S.BooleanField()
    breaker_state = S.CharField()
    latency_ms = S.FloatField(allow_null=True)
    in_flight = S.IntegerField()
    max_concurrency = S.IntegerField()
    last_error = S.CharField(allow_blank=True)
    last_check_at = S.DateTimeField(allow_null=True)


class Latency(S.Serializer):
    finished = S.IntegerField()
    succeeded = S.IntegerField()
    dead = S.IntegerField()
    wait_p50_ms = S.FloatField(allow_null=True)
    wait_p95_ms = S.FloatField(allow_null=True)
    upstream_p50_ms = S.FloatField(allow_null=True)
    upstream_p95_ms = S.FloatField(allow_null=True)


class BucketLevel(S.Serializer):
    scope = S.CharField()
    key = S.CharField(allow_blank=True)
    level = S.FloatField()
    capacity = S.FloatField()
    empty = S.BooleanField()


class RateLimits(S.Serializer):
    buckets = BucketLevel(many=True)
    waits = S.FloatField(help_text="jobs held back by an empty bucket, this host, since start")
    upstream_429 = S.FloatField(help_text="429s from endpoints, this host, since start")


class PriorityDepth(S.Serializer):
    priority = S.IntegerField()
    queued = S.IntegerField()
    running = S.IntegerField()


class Stats(S.Serializer):
    depth = Depth(
        help_text="jobs in each status now; succeeded and cancelled: since the start, jobs "
        "deleted by retention included"
    )
    due = S.IntegerField(help_text="queued jobs that may run now")
    window_s = S.IntegerField()
    throughput_per_s = S.FloatField(help_text="jobs finished per second over the window")
    succeeded_in_window = S.IntegerField()
    cache_hit_rate = S.FloatField(allow_null=True)
    endpoints = EndpointSummary(many=True)
    latency = Latency()
    rate_limits = RateLimits()
    by_priority = PriorityDepth(many=True)
    finished_total = FinishedTotal(
        help_text="jobs finished since the start, by status (deleted ones included)"
    )


Limits = type("Limits", (S.Serializer,), _fields(LIMIT_FIELDS, S.IntegerField, allow_null=True))


class UsageNow(S.Serializer):
    jobs_today = S.IntegerField()
    tokens_today = S.IntegerField()
    jobs_this_month = S.IntegerField()
    tokens_this_month = S.IntegerField()
    submissions_remaining = S.IntegerField(allow_null=True)


class Resets(S.Serializer):
    day = S.DateTimeField()
    month = S.DateTimeField()


class Usage(S.Serializer):
    limits = Limits(help_text="your limits; null: none")
    usage = UsageNow()
    resets = Resets()
