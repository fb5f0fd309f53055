"""Probes and metrics: /healthz (the process answers), /readyz (database and a live cluster),
/metrics (Prometheus text, see ``llmqueue.metrics``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django_q.models import Schedule
from prometheus_client import CONTENT_TYPE_LATEST

from llmqueue import metrics as llm_metrics
from llmqueue.conf import conf
from llmqueue.models import DrainSlot
from llmqueue.worker.drain import HOUSEKEEPING_TASK


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def cluster_heartbeat() -> datetime | None:
    """When a qcluster of the fleet last showed it runs; None if none ever did.

    Two signs, the later wins: a slot heartbeat (drains and the health checker beat every few
    seconds while they run), and the housekeeping schedule, which the cluster's scheduler
    moves on every minute even when the queue is idle. A schedule that never ran (no task)
    says nothing; one that ran is as fresh as its next run time minus its minute.
    """
    beats = []
    slot = DrainSlot.objects.aggregate(t=Max("heartbeat_at"))["t"]
    if slot is not None:
        beats.append(slot)
    task, next_run = (
        Schedule.objects.filter(func=HOUSEKEEPING_TASK).values_list("task", "next_run").first()
    ) or (None, None)
    if task and next_run is not None:
        beats.append(next_run - timedelta(minutes=1))
    return max(beats, default=None)


def _unavailable(reason: str) -> JsonResponse:
    return JsonResponse({"status": "unavailable", "reason": reason}, status=503)


def readyz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        beat = cluster_heartbeat()
    except Exception as exc:  # any failure to read is "not ready", with the reason
        return _unavailable(f"database: {type(exc).__name__}")
    limit = float(conf.READY_HEARTBEAT_S)
    if beat is None:
        return _unavailable("cluster: no qcluster has ever run")
    age = (timezone.now() - beat).total_seconds()
    if age > limit:
        return _unavailable(f"cluster: last heartbeat {age:.0f}s ago (limit {limit:g}s)")
    return JsonResponse({"status": "ok", "cluster_heartbeat_age_s": round(max(age, 0.0), 1)})


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(llm_metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
