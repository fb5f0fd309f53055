"""Pages: thin views over llmqueue.jobs and llmqueue.selectors."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from llmqueue import selectors
from llmqueue.errors import SubmitError, TransitionError
from llmqueue.jobs import job_cancel, job_retry, job_submit
from llmqueue.models import Status
from llmqueue.web.forms import JobForm


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "llmqueue/dashboard.html", {"stats": selectors.queue_stats()})


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status") or None
    if status not in Status.values:
        status = None
    page = Paginator(selectors.jobs_of(owner=request.user, status=status), 50).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "llmqueue/job_list.html",
        {"page": page, "status": status, "statuses": Status.values},
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
    return render(request, "llmqueue/job_new.html", {"form": form})


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(selectors.jobs_of(owner=request.user), pk=pk)
    return render(
        request,
        "llmqueue/job_detail.html",
        {"job": job, "attempts": job.attempt_log.all(), "answer": selectors.answer_text(job)},
    )


def _act(request: HttpRequest, pk: int, act, done: str) -> HttpResponse:  # type: ignore[no-untyped-def]
    job = get_object_or_404(selectors.jobs_of(owner=request.user), pk=pk)
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
