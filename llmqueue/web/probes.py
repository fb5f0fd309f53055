"""Probes and metrics: /healthz (the process answers), /readyz (database and a live cluster),
/metrics (Prometheus text, see ``llmqueue.metrics``)."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST

from llmqueue import metrics as llm_metrics
from llmqueue.conf import conf
from llmqueue.worker.heartbeat import cluster_heartbeat


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


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
