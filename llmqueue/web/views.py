"""Pages: thin views over llmqueue.jobs (writes) and llmqueue.jobs.selectors (reads)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from llmqueue.errors import SubmitError, TransitionError
from llmqueue.jobs import job_cancel, job_retry, job_submit, selectors, timeseries
from llmqueue.models import Job
from llmqueue.web.forms import TURN_ROLES, JobFilterForm, JobForm

#: how often the dashboard and the pages of unfinished work ask for fresh numbers, ms
POLL_MS = 3000


def dashboard_data_of(request: HttpRequest) -> dict[str, Any]:
    stats = selectors.queue_stats()
    stats["series"] = timeseries.last_hour()
    # Error texts come from every user's jobs: operators only.
    stats["dead_letter_groups"] = (
        selectors.dead_letter_groups(limit=5, among=selectors.DASHBOARD_DEAD_LETTERS)
        if request.user.is_staff
        else None
    )
    return stats


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    data = dashboard_data_of(request)
    return render(
        request, "llmqueue/dashboard.html", {"stats": data, "data": data, "poll_ms": POLL_MS}
    )


@login_required
def dashboard_data(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dashboard_data_of(request))


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    form = JobFilterForm(request.GET)
    filters = form.filters()
    page = Paginator(selectors.jobs_filtered(owner=request.user, **filters), 50).get_page(
        request.GET.get("page")
    )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "llmqueue/job_list.html",
        {"page": page, "form": form, "filters": filters, "query": query.urlencode()},
    )


@login_required
def job_new(request: HttpRequest) -> HttpResponse:
    form = JobForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            job, _ = job_submit(owner=request.user, spec=form.to_spec())
        except SubmitError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("job-detail", pk=job.pk)
    return render(
        request,
        "llmqueue/job_new.html",
        {"form": form, "turn_roles": TURN_ROLES, "turns": form.turns or [{"role": "user"}]},
    )


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(selectors.jobs_of(owner=request.user).select_related("batch"), pk=pk)
    attempts = list(job.attempt_log.all())
    return render(
        request,
        "llmqueue/job_detail.html",
        {
            "job": job,
            "attempts": attempts,
            "timeline": selectors.attempt_timeline(job, attempts),
            "turns": selectors.job_turns(job),
            "answer": selectors.answer_text(job),
            "result_json": _pretty(job.result),
            "payload_json": _pretty(job.payload),
            "waited": _duration(job.started_at - job.created_at) if job.started_at else None,
            "poll_ms": POLL_MS,
        },
    )


def _duration(delta: timedelta) -> str:
    seconds = max(0.0, delta.total_seconds())
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _act(request: HttpRequest, pk: int, act: Callable[..., None], done: str) -> HttpResponse:
    job: Job = get_object_or_404(selectors.jobs_of(owner=request.user), pk=pk)
    try:
        act(job_id=job.pk)
        messages.success(request, done)
    except TransitionError as exc:
        messages.error(request, str(exc))
    return redirect("job-detail", pk=job.pk)


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, job_cancel, "Cancelled.")


@login_required
@require_POST
def job_retry_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, job_retry, "Queued again.")
