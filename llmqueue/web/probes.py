"""Probes: /healthz (the process answers) and /readyz (database and cluster are there)."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from llmqueue.signals import HOUSEKEEPING_TASK

#: the housekeeping schedule runs every minute; a scheduler this late is not running
SCHEDULER_STALE = timedelta(seconds=150)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return JsonResponse(
            {"status": "unavailable", "reason": f"database: {type(exc).__name__}"}, status=503
        )
    from django_q.models import Schedule

    # The scheduler records the task it started and moves next_run on; a schedule that never
    # ran (task unset) or whose next run is long past means no cluster is running.
    last = Schedule.objects.filter(func=HOUSEKEEPING_TASK).values_list("task", "next_run").first()
    if last is None or not last[0] or last[1] < timezone.now() - SCHEDULER_STALE:
        return JsonResponse(
            {"status": "unavailable", "reason": "cluster: no qcluster has run the schedule lately"},
            status=503,
        )
    return JsonResponse({"status": "ok"})
