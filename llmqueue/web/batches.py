"""Batch pages: upload a JSONL file, watch its progress, download its results as JSONL, cancel
it. The Batch API's batches (``/v1/batches``) are here too, with their output and error files."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from llmqueue.errors import BatchStateError, SubmitError
from llmqueue.jobs import batches as batch_service
from llmqueue.jobs import jobs_submit_many, selectors
from llmqueue.models import Batch, Status
from llmqueue.web.forms import BatchUploadForm
from llmqueue.web.views import POLL_MS


def _batch_of(request: HttpRequest, pk: int) -> Batch:
    return get_object_or_404(selectors.batches_of(owner=request.user), pk=pk)


@login_required
def batch_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.batches_of(owner=request.user), 25).get_page(request.GET.get("page"))
    if batch_service.batches_settle(batch_ids=[b.pk for b in page]):
        page = Paginator(selectors.batches_of(owner=request.user), 25).get_page(page.number)
    counts = selectors.batch_counts(batch_ids=[b.pk for b in page])
    rows = [{"batch": b, "counts": counts[b.pk]} for b in page]
    return render(request, "llmqueue/batch_list.html", {"page": page, "rows": rows})


@login_required
def batch_new(request: HttpRequest) -> HttpResponse:
    form = BatchUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        assert form.parsed is not None
        try:
            # One transaction for every line: a file is queued whole or not at all.
            with transaction.atomic():
                batch, jobs = jobs_submit_many(
                    owner=request.user,
                    specs=form.parsed.specs,
                    name=form.cleaned_data["name"] or form.cleaned_data["file"].name[:200],
                )
        except SubmitError as exc:  # an endpoint was disabled meanwhile
            form.add_error("file", str(exc))
        else:
            messages.success(request, f"Queued {len(jobs)} jobs.")
            return redirect("batch-detail", pk=batch.pk)
    return render(request, "llmqueue/batch_new.html", {"form": form})


@login_required
def batch_detail(request: HttpRequest, pk: int) -> HttpResponse:
    batch_service.batches_settle(batch_ids=[pk])
    batch = _batch_of(request, pk)
    counts = selectors.batch_counts(batch_ids=[batch.pk])[batch.pk]
    return render(
        request,
        "llmqueue/batch_detail.html",
        {
            "batch": batch,
            "counts": counts,
            "by_status": [(s, counts[s]) for s in Status.values],
            "poll_ms": POLL_MS,
        },
    )


@login_required
def batch_progress(request: HttpRequest, pk: int) -> JsonResponse:
    batch = _batch_of(request, pk)
    return JsonResponse(selectors.batch_counts(batch_ids=[batch.pk])[batch.pk])


@login_required
def batch_results(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    batch = _batch_of(request, pk)

    def lines() -> Iterator[str]:
        for row in selectors.batch_results(batch):
            yield json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"

    response = StreamingHttpResponse(lines(), content_type="application/jsonl; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}-results.jsonl"'
    return response


@login_required
@require_POST
def batch_retry_dead(request: HttpRequest, pk: int) -> HttpResponse:
    batch = _batch_of(request, pk)
    n = batch_service.batch_retry_dead(batch_id=batch.pk)
    messages.success(request, f"Queued {n} dead job(s) of this batch again.")
    return redirect("batch-detail", pk=batch.pk)


@login_required
@require_POST
def batch_cancel_page(request: HttpRequest, pk: int) -> HttpResponse:
    batch = _batch_of(request, pk)
    try:
        n = batch_service.batch_cancel(batch_id=batch.pk)
    except BatchStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Cancelled {n} queued job(s); running ones finish.")
    return redirect("batch-detail", pk=batch.pk)
