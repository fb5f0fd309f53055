"""The Batch API as the ``openai`` SDK calls it: ``client.batches.create / retrieve / list /
cancel``. A batch's input file becomes a Batch of jobs (``llmqueue.jobs.batches``), the same
batches the pages and ``/api/batches/`` show; reading one settles it first, so a batch whose
jobs all ended answers with its output and error files at once. Each user sees only their own
batches: another's id is a 404."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from llmqueue.jobs.batches import (
    batch_cancel,
    batch_create,
    batch_request_counts,
    batches_settle,
)
from llmqueue.jobs.selectors import batch_counts, batches_of
from llmqueue.models import Batch, BatchStatus
from llmqueue.openai.errors import OpenAIError, not_found
from llmqueue.openai.files import PREFIX as FILE_PREFIX
from llmqueue.openai.files import file_of
from llmqueue.openai.shapes import cursor_page, epoch, json_body, list_of, pk_of
from llmqueue.openai.shapes import v1_view as view

PREFIX = "batch_"
#: the timestamp OpenAI names for each way a batch ends
_END_TIMES = {
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLED: "cancelled_at",
}


def _file_id(pk: int | None) -> str | None:
    return f"{FILE_PREFIX}{pk}" if pk is not None else None


def batch_object(batch: Batch, counts: dict[str, int]) -> dict[str, Any]:
    """A batch as OpenAI's Batch object."""
    ended: dict[str, int | None] = {name: None for name in _END_TIMES.values()}
    if batch.status in _END_TIMES:
        ended[_END_TIMES[BatchStatus(batch.status)]] = epoch(batch.ended_at)
    return {
        "id": f"{PREFIX}{batch.pk}",
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": batch.errors,
        "input_file_id": _file_id(batch.input_file_id),
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": _file_id(batch.output_file_id),
        "error_file_id": _file_id(batch.error_file_id),
        "created_at": epoch(batch.created_at),
        "in_progress_at": epoch(batch.in_progress_at),
        "expires_at": epoch(batch.deadline),
        "finalizing_at": epoch(batch.finalizing_at),
        "cancelling_at": epoch(batch.cancelling_at),
        **ended,
        "request_counts": batch_request_counts(counts),
        "metadata": batch.metadata,
    }


def _answer(batch_id: int) -> JsonResponse:
    """The batch as it is now, settled first."""
    batches_settle(batch_ids=[batch_id])
    batch = Batch.objects.get(pk=batch_id)
    return JsonResponse(batch_object(batch, batch_counts(batch_ids=[batch_id])[batch_id]))


def _batch_id(user: Any, ident: str) -> int:
    pk = pk_of(ident, PREFIX, "batch")
    if not batches_of(owner=user).filter(pk=pk).exists():
        raise not_found("batch", ident)
    return pk


def _create(request: HttpRequest, user: Any) -> JsonResponse:
    body = json_body(request)
    missing = [k for k in ("input_file_id", "endpoint", "completion_window") if k not in body]
    if missing:
        raise OpenAIError(400, f"{missing[0]}: required", param=missing[0])
    ident = body["input_file_id"]
    if not isinstance(ident, str):
        raise OpenAIError(400, "input_file_id: must be a file id", param="input_file_id")
    batch = batch_create(
        owner=user,
        input_file=file_of(user, ident),
        endpoint=body["endpoint"],
        completion_window=body["completion_window"],
        metadata=body.get("metadata"),
    )
    return _answer(batch.pk)


@view("GET", "POST")
def batches(request: HttpRequest, user: Any) -> JsonResponse:
    if request.method == "POST":
        return _create(request, user)
    rows, more = cursor_page(
        batches_of(owner=user),
        request,
        prefix=PREFIX,
        what="batch",
        default_limit=20,
        max_limit=100,
    )
    ids = [b.pk for b in rows]
    if batches_settle(batch_ids=ids):
        rows = sorted(Batch.objects.filter(pk__in=ids), key=lambda b: ids.index(b.pk))
    counts = batch_counts(batch_ids=ids)
    return JsonResponse(list_of([batch_object(b, counts[b.pk]) for b in rows], has_more=more))


@view("GET")
def batch(request: HttpRequest, user: Any, ident: str) -> JsonResponse:
    return _answer(_batch_id(user, ident))


@view("POST")
def batch_cancel_view(request: HttpRequest, user: Any, ident: str) -> JsonResponse:
    pk = _batch_id(user, ident)
    batch_cancel(batch_id=pk)
    return _answer(pk)
