"""Reads: what users and operators see of the queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from llmqueue.dispatch import endpoint_in_flight
from llmqueue.models import Endpoint, Job, Status


def jobs_of(*, owner: Any, status: str | None = None) -> QuerySet[Job]:
    """A user's jobs, newest first (another user's jobs are simply not there)."""
    qs = Job.objects.filter(owner=owner).select_related("endpoint").order_by("-id")
    if status:
        qs = qs.filter(status=status)
    return qs


def endpoints_summary() -> list[dict[str, Any]]:
    in_flight = endpoint_in_flight()
    return [
        {
            "name": e.name,
            "models": e.served_models,
            "enabled": e.enabled,
            "healthy": e.healthy,
            "breaker_state": e.breaker_state,
            "latency_ms": e.latency_ms,
            "in_flight": in_flight.get(e.id, 0),
            "max_concurrency": e.max_concurrency,
        }
        for e in Endpoint.objects.order_by("name")
    ]


def queue_stats(*, window_s: int = 300) -> dict[str, Any]:
    """Depth by status, recent throughput, cache hit rate, endpoints."""
    now = timezone.now()
    depth = {s: 0 for s in Status.values}
    depth.update(dict(Job.objects.values_list("status").annotate(n=Count("id")).order_by()))
    since = now - timedelta(seconds=window_s)
    recent = Job.objects.filter(finished_at__gte=since).aggregate(
        finished=Count("id"),
        succeeded=Count("id", filter=Q(status=Status.SUCCEEDED)),
        hits=Count("id", filter=Q(status=Status.SUCCEEDED, cache_hit=True)),
    )
    due = Job.objects.filter(status=Status.QUEUED, available_at__lte=now).count()
    return {
        "depth": depth,
        "due": due,
        "window_s": window_s,
        "throughput_per_s": round(recent["finished"] / window_s, 3),
        "succeeded_in_window": recent["succeeded"],
        "cache_hit_rate": round(recent["hits"] / recent["succeeded"], 4)
        if recent["succeeded"]
        else None,
        "endpoints": endpoints_summary(),
    }


def answer_text(job: Job) -> str | None:
    """The readable answer of a succeeded chat or completion job, if there is one."""
    result = job.result
    if not isinstance(result, dict):
        return None
    choices = result.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    first = choices[0]
    message = first.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return message["content"]
    text = first.get("text")
    return text if isinstance(text, str) else None
