"""``GET /api/jobs/{id}/?wait=N`` without holding a thread while it waits.

DRF views are sync, so the waiting is done around the job view by an async one: it asks the
DRF view (authentication, ownership, the ``wait`` check, the job's shape), and while the job
it got back is not terminal, waits on the process's one poller (``llmqueue.jobs.waiting``)
and asks again. Without ``?wait`` (and for any other method) it is the DRF view alone.
"""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest, HttpResponseBase

from llmqueue.api.views import JobViewSet, wait_seconds
from llmqueue.jobs.waiting import db_section, job_wait, request_thread_release
from llmqueue.models import TERMINAL

#: the router's detail view of a job (JobViewSet serves only GET on it)
job_view = JobViewSet.as_view({"get": "retrieve"})


def _ask(request: HttpRequest, pk: str) -> Any:
    response = job_view(request, pk=pk)
    response.render()  # here, in the sync thread: rendering may touch lazy objects
    return response


async def job_detail(request: HttpRequest, pk: str) -> HttpResponseBase:
    raw = request.GET.get("wait")
    response = await db_section(_ask, request, pk)
    if raw is None or request.method != "GET" or response.status_code != 200:
        return response
    deadline = time.monotonic() + wait_seconds(raw)  # checked already: a bad one was a 400
    if response.data["status"] not in TERMINAL:
        await request_thread_release()
    while response.data["status"] not in TERMINAL:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await job_wait(job_id=int(pk), timeout=remaining)
        response = await db_section(_ask, request, pk)
        if response.status_code != 200:
            break
    return response
