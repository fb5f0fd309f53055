"""Batches: a file of requests run as one Batch of jobs, and its life as OpenAI's Batch API
tells it.

    batch_create ──(a bad line)──────────────────────────> failed     (errors per line; no job)
         │
         v                      (every job ended)
    in_progress ───────────────────────────> finalizing ──> completed  (files written)
         │    (its window passed: the queued jobs             └──────> expired   (... some
         │     expired, llmqueue.jobs.expiry)                                    expired)
         └─cancel─> cancelling ─(nothing runs)─> finalizing ──> cancelled
    completed | expired | cancelled ──retry dead──> in_progress      (its files detached)

A batch's status moves by guarded updates here (compare-and-set on the status, like a job's);
its jobs' statuses only through the transition table (``llmqueue.jobs.transitions``). Settling
(``batches_settle``: finalize the batches whose jobs all ended) runs in the housekeeping
schedule and whenever a batch is read, so no worker has to be told that a batch finished.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from llmqueue import metrics
from llmqueue.calls.paths import v1_paths
from llmqueue.conf import conf
from llmqueue.errors import BatchInvalid, BatchStateError
from llmqueue.jobs.expiry import jobs_expire
from llmqueue.jobs.files import file_open, file_write_lines
from llmqueue.jobs.intake import jobs_submit_many, served_models
from llmqueue.jobs.jsonl import LineError, jsonl_parse
from llmqueue.jobs.owner import jobs_retry
from llmqueue.jobs.selectors import batch_counts
from llmqueue.jobs.transitions import jobs_transition
from llmqueue.models import TERMINAL, Batch, BatchStatus, File, Job, Status

B = BatchStatus
#: where a batch is not finished yet (the settling pass looks only at these)
OPEN = (B.IN_PROGRESS, B.CANCELLING, B.FINALIZING)
ENDED = (B.COMPLETED, B.FAILED, B.EXPIRED, B.CANCELLED)
#: "24h", "90m", "60s": a number and a unit
_WINDOW = re.compile(r"^([1-9][0-9]{0,5})([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
#: the shortest and longest completion window, seconds (OpenAI takes "24h" only; shorter
#: windows serve tests and urgent batches)
WINDOW_MIN_S, WINDOW_MAX_S = 10, 24 * 3600
#: a batch left finalizing this long (its process died mid-way) is finalized again
FINALIZING_STALE_S = 300
#: the codes of a bad input line (OpenAI's words where it has them)
_LINE_CODES = {"url": "invalid_url", "model": "model_not_found", "custom_id": "duplicate_custom_id"}


def window_seconds(window: Any) -> int:
    """A completion window's seconds; raises BatchInvalid naming the rule."""
    found = _WINDOW.match(window) if isinstance(window, str) else None
    seconds = int(found[1]) * _UNIT_S[found[2]] if found else 0
    if not WINDOW_MIN_S <= seconds <= WINDOW_MAX_S:
        raise BatchInvalid(
            "completion_window",
            f"must be a duration from {WINDOW_MIN_S}s to 24h, such as 24h, 90m or 60s; "
            f"got {window!r}",
        )
    return seconds


def line_errors(errors: list[LineError]) -> dict[str, Any]:
    """The input's bad lines in OpenAI's shape: {"object": "list", "data": [{code, message,
    param, line}]}."""
    data = []
    for e in errors:
        code = _LINE_CODES.get(e.field, "invalid_json" if e.reason == "not JSON" else "")
        data.append(
            {
                "code": code or "invalid_request",
                "message": e.message,
                "param": e.field or None,
                "line": e.line or None,
            }
        )
    return {"object": "list", "data": data}


def batch_create(
    *, owner: Any, input_file: File, endpoint: Any, completion_window: Any, metadata: Any = None
) -> Batch:
    """Read ``input_file`` (the intake's JSONL parser) into a Batch of queued jobs, each with
    the batch's deadline (now + the completion window).

    Raises BatchInvalid for wrong arguments (nothing is made). An input with bad lines makes a
    ``failed`` batch whose ``errors`` name each line, and queues nothing. Over a limit, the
    intake's OverLimit propagates (nothing is made)."""
    if endpoint not in v1_paths():
        raise BatchInvalid("endpoint", f"must be one of {', '.join(v1_paths())}; got {endpoint!r}")
    seconds = window_seconds(completion_window)
    if metadata is not None and not (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(isinstance(v, str) and len(v) <= 512 for v in metadata.values())
    ):
        raise BatchInvalid("metadata", "must be an object of at most 16 string values")
    if input_file.purpose != "batch":
        raise BatchInvalid("input_file_id", f"{input_file.filename} is not a batch input file")
    now = timezone.now()
    deadline = now + dt.timedelta(seconds=seconds)
    with file_open(input_file) as lines:
        parsed = jsonl_parse(
            lines,
            served=set(served_models()),
            max_lines=int(conf.BATCH_MAX_LINES),
            url=endpoint,
            deadline=deadline,
        )
    if not parsed.specs and not parsed.errors:
        parsed.errors.append(LineError(0, "", "the file holds no requests"))
    fields = {
        "endpoint": endpoint,
        "completion_window": completion_window,
        "deadline": deadline,
        "metadata": metadata,
        "input_file": input_file,
    }
    name = input_file.filename[:200]
    if parsed.errors:
        return Batch.objects.create(
            owner=owner,
            name=name,
            status=B.FAILED,
            errors=line_errors(parsed.errors),
            ended_at=now,
            **fields,
        )
    batch, _ = jobs_submit_many(
        owner=owner,
        specs=parsed.specs,
        name=name,
        batch_fields={**fields, "status": B.IN_PROGRESS, "in_progress_at": now},
    )
    return batch


def _batch_move(batch_id: int, action: str, source: tuple[str, ...], **values: Any) -> bool:
    """A guarded update of a batch's status: whether it was in ``source``."""
    return Batch.objects.filter(pk=batch_id, status__in=source).update(**values) == 1


def batch_cancel(*, batch_id: int) -> int:
    """Cancel a batch: its queued jobs in one guarded UPDATE (through the transition table),
    the running ones left to finish; the batch is ``cancelling`` until none runs, then
    ``cancelled`` with its files. Returns how many jobs were cancelled. Cancelling a batch
    already cancelling or cancelled changes nothing; an ended one raises BatchStateError."""
    now = timezone.now()
    with transaction.atomic():
        moved = _batch_move(
            batch_id,
            "cancel",
            (B.VALIDATING, B.IN_PROGRESS),
            status=B.CANCELLING,
            cancelling_at=now,
        )
        if not moved:
            status = Batch.objects.filter(pk=batch_id).values_list("status", flat=True).first()
            if status in (B.CANCELLING, B.CANCELLED):
                return 0
            raise BatchStateError(batch_id, "cancel", status)
        n = jobs_transition("cancel", where=Q(batch_id=batch_id), finished_at=now)
        # Their followers (of this batch or another) run on their own.
        jobs_transition(
            "follower_release",
            where=Q(follows__batch_id=batch_id, follows__status=Status.CANCELLED),
            follows=None,
            available_at=now,
        )
        metrics.jobs_finished(Status.CANCELLED, n)
    batches_settle(batch_ids=[batch_id])
    return n


def batch_retry_dead(*, batch_id: int) -> int:
    """Queue a batch's dead jobs again; an ended batch is in progress again (its old files
    stay the user's, detached from it). Returns how many were queued."""
    with transaction.atomic():
        dead = Job.objects.filter(batch_id=batch_id, status=Status.DEAD).values_list(
            "pk", flat=True
        )
        n = jobs_retry(job_ids=dead)
        if n:
            _batch_move(
                batch_id,
                "retry",
                # finalizing too: the finalizer's end then matches nothing, and a later
                # settle finalizes it again with these jobs' new ends
                (B.COMPLETED, B.EXPIRED, B.CANCELLED, B.FINALIZING),
                status=B.IN_PROGRESS,
                output_file=None,
                error_file=None,
                ended_at=None,
                finalizing_at=None,
            )
    return n


def batches_settle(*, batch_ids: list[int] | None = None, limit: int = 200) -> int:
    """Finalize the open batches (these, or any) whose jobs all ended: write their output and
    error files, and end them completed, expired or cancelled. Returns how many ended."""
    now = timezone.now()
    stale = now - dt.timedelta(seconds=FINALIZING_STALE_S)
    open_ = Q(status__in=(B.IN_PROGRESS, B.CANCELLING)) | Q(
        status=B.FINALIZING, finalizing_at__lt=stale
    )
    qs = Batch.objects.filter(open_).order_by("id")
    if batch_ids is not None:
        qs = qs.filter(pk__in=batch_ids)
    batches = list(qs[:limit])
    if not batches:
        return 0
    if any(b.deadline is not None and b.deadline <= now for b in batches):
        jobs_expire(now=now)  # the window's end is decided now, not at the next sweep
    counts = batch_counts(batch_ids=[b.pk for b in batches])
    ended = 0
    for batch in batches:
        c = counts[batch.pk]
        if c[Status.QUEUED] or c[Status.RUNNING]:
            continue
        ended += _batch_finalize(batch, c, now=now)
    return ended


def _batch_finalize(batch: Batch, counts: dict[str, int], *, now: dt.datetime) -> int:
    """in_progress | cancelling -> finalizing (the claim: one process writes the files) ->
    the end. The files are written outside any transaction; a crash leaves it finalizing, and
    a later settle does it again."""
    was = batch.status
    if was == B.FINALIZING:
        claimed = Batch.objects.filter(
            pk=batch.pk, status=B.FINALIZING, finalizing_at=batch.finalizing_at
        ).update(finalizing_at=now)
        was = B.CANCELLING if batch.cancelling_at else B.IN_PROGRESS
    else:
        claimed = _batch_move(batch.pk, "finalize", (was,), status=B.FINALIZING, finalizing_at=now)
    if not claimed:
        return 0
    # Read again now that it is ours: a retry of its dead jobs may have slipped in meanwhile.
    counts = batch_counts(batch_ids=[batch.pk])[batch.pk]
    if counts[Status.QUEUED] or counts[Status.RUNNING]:
        _batch_move(batch.pk, "reopen", (B.FINALIZING,), status=was, finalizing_at=None)
        return 0
    output, errors = _batch_files(batch)
    if was == B.CANCELLING:
        end = B.CANCELLED
    elif counts[Status.EXPIRED]:
        end = B.EXPIRED
    else:
        end = B.COMPLETED
    return int(
        _batch_move(
            batch.pk,
            "end",
            (B.FINALIZING,),
            status=end,
            output_file=output,
            error_file=errors,
            ended_at=now,
        )
    )


#: an unfinished line's error, as OpenAI writes it
_ENDED_CODES: dict[str, tuple[str, str]] = {
    Status.EXPIRED: (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    Status.CANCELLED: ("batch_cancelled", "This request was cancelled with its batch."),
}


def batch_output_lines(batch: Batch) -> Iterator[tuple[bool, dict[str, Any]]]:
    """(succeeded?, the line) for each ended job of the batch, in line order, in OpenAI's
    output format: {"id", "custom_id", "response": {"status_code", "request_id", "body"},
    "error"}."""
    rows = (
        Job.objects.filter(batch_id=batch.pk, status__in=TERMINAL)
        .order_by("id")
        .values_list("id", "custom_id", "status", "result", "error")
    )
    for pk, custom_id, status, result, error in rows.iterator(chunk_size=1000):
        line: dict[str, Any] = {"id": f"batch_req_{pk}", "custom_id": custom_id or None}
        if status == Status.SUCCEEDED:
            line["response"] = {"status_code": 200, "request_id": f"req_{pk}", "body": result}
            line["error"] = None
            yield True, line
            continue
        code, message = _ENDED_CODES.get(status, ("request_failed", error or str(status)))
        line["response"] = None
        line["error"] = {"code": code, "message": message}
        yield False, line


def _batch_files(batch: Batch) -> tuple[File | None, File | None]:
    """Write the output file (the answers) and the error file (the rest); None for either
    that would be empty, as OpenAI leaves it."""
    good: list[bytes] = []
    bad: list[bytes] = []
    for ok, line in batch_output_lines(batch):
        (good if ok else bad).append(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    files = []
    for lines, kind in ((good, "output"), (bad, "errors")):
        files.append(
            file_write_lines(
                owner_id=batch.owner_id, filename=f"batch_{batch.pk}_{kind}.jsonl", lines=lines
            )
            if lines
            else None
        )
    return files[0], files[1]


def batch_request_counts(counts: dict[str, int]) -> dict[str, int]:
    """OpenAI's request_counts from a batch's jobs by status: completed are those that
    answered; failed, those that ended any other way."""
    failed = sum(counts[s] for s in (Status.DEAD, Status.CANCELLED, Status.EXPIRED))
    return {"total": counts["total"], "completed": counts[Status.SUCCEEDED], "failed": failed}
