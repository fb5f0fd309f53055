"""Warming: pre-fill the cache by running a JSONL file of requests through the queue.

One request per line, in any shape the intake's JSONL parser reads (``llmqueue.jobs.jsonl``):
a bare request body, an OpenAI Batch API line, or ``{"kind", "payload", "cache_ttl"}``.

The requests become ordinary jobs (``jobs_submit_many``, ``MAX_BULK_JOBS`` at a time), so they
wait their turn by priority, go only where an endpoint has room, and obey every limit a job
does; nothing here calls an endpoint. An answer already cached is a hit at once, and
duplicates follow one leader: warming twice costs nothing the second time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import Count

from llmqueue.conf import conf
from llmqueue.errors import SubmitError
from llmqueue.jobs import JobSpec, jobs_submit_many
from llmqueue.jobs.intake import served_check
from llmqueue.jobs.jsonl import jsonl_parse
from llmqueue.models import TERMINAL, Job, Status

#: warming yields to every other job unless told otherwise
WARM_PRIORITY = 0


def warm_specs(lines: Iterable[str | bytes], *, priority: int = WARM_PRIORITY) -> list[JobSpec]:
    """The jobs a JSONL file asks for (the intake's parser, ``llmqueue.jobs.jsonl``);
    SubmitError names the first bad line. Models are checked by ``cache_warm``."""
    parsed = jsonl_parse(lines, priority=priority)
    if parsed.errors:
        first = parsed.errors[0]
        # The command and the admin page have always quoted a decoder's own words.
        raise SubmitError(f"line {first.line}", first.detail or first.message)
    return parsed.specs


@dataclasses.dataclass
class WarmReport:
    """How a warm-up went so far."""

    total: int
    batches: list[int] = dataclasses.field(default_factory=list)
    submitted: int = 0
    #: answered from the cache at once
    cached: int = 0
    #: waiting for an identical job (in this file or already queued)
    following: int = 0
    #: will call an endpoint
    queued: int = 0


def cache_warm(
    *,
    owner: Any,
    specs: list[JobSpec],
    name: str = "cache warm-up",
    progress: Callable[[WarmReport], None] | None = None,
) -> WarmReport:
    """Submit ``specs`` as ``owner``'s jobs, ``MAX_BULK_JOBS`` at a time; ``progress`` hears
    after each chunk. Every model must be served (checked before anything is submitted)."""
    served_check({spec.payload["model"] for spec in specs})
    report = WarmReport(total=len(specs))
    chunk = max(1, int(conf.MAX_BULK_JOBS))
    for start in range(0, len(specs), chunk):
        part = specs[start : start + chunk]
        label = f"{name} ({start + 1}-{start + len(part)} of {len(specs)})"
        batch, jobs = jobs_submit_many(owner=owner, specs=part, name=label[:200])
        report.batches.append(batch.pk)
        report.submitted += len(jobs)
        report.cached += sum(1 for j in jobs if j.cache_hit)
        report.following += sum(1 for j in jobs if j.follows_id is not None)
        report.queued += sum(1 for j in jobs if j.status == Status.QUEUED and j.follows_id is None)
        if progress is not None:
            progress(report)
    return report


def warm_status(batch_ids: Iterable[int]) -> dict[str, int]:
    """Jobs of a warm-up by status, plus "total" and "done" (terminal)."""
    counts = dict(
        Job.objects.filter(batch_id__in=list(batch_ids))
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    status = {s: counts.get(s, 0) for s in Status.values}
    status["total"] = sum(counts.values())
    status["done"] = sum(counts.get(s, 0) for s in TERMINAL)
    return status
