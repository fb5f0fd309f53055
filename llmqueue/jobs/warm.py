"""Warming: pre-fill the cache by running a JSONL file of requests through the queue.

One request per line, in any of these shapes:

    {"kind": "chat", "payload": {"model": ..., "messages": [...]}, "cache_ttl": 600}
    {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
    {"model": ..., "messages": [...]}      a bare request body: messages, prompt or input
                                           says its kind

The requests become ordinary jobs (``jobs_submit_many``, ``MAX_BULK_JOBS`` at a time), so they
wait their turn by priority, go only where an endpoint has room, and obey every limit a job
does; nothing here calls an endpoint. An answer already cached is a hit at once, and
duplicates follow one leader: warming twice costs nothing the second time.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import Count

from llmqueue.conf import conf
from llmqueue.errors import SubmitError
from llmqueue.jobs import JobSpec, jobs_submit_many, served_models
from llmqueue.jobs.validation import payload_problems
from llmqueue.models import TERMINAL, Job, Kind, Status

#: warming yields to every other job unless told otherwise
WARM_PRIORITY = 0

_ROUTES = {
    "/v1/chat/completions": Kind.CHAT,
    "/v1/completions": Kind.COMPLETION,
    "/v1/embeddings": Kind.EMBEDDING,
}


def _kind_of_body(body: dict[str, Any]) -> str:
    if "messages" in body:
        return Kind.CHAT
    if "prompt" in body:
        return Kind.COMPLETION
    return Kind.EMBEDDING if "input" in body else Kind.CHAT


def _request(line: dict[str, Any]) -> tuple[str, Any, Any]:
    """(kind, payload, cache_ttl) of one line, whatever its shape."""
    if "payload" in line:
        return line.get("kind", Kind.CHAT), line["payload"], line.get("cache_ttl")
    if "body" in line:
        url = str(line.get("url", "/v1/chat/completions"))
        kind = _ROUTES.get("/v1" + url if not url.startswith("/v1") else url)
        if kind is None:
            raise ValueError(f"url: must be one of {', '.join(_ROUTES)}")
        return kind, line["body"], None
    return _kind_of_body(line), line, None


def warm_specs(lines: Iterable[str | bytes], *, priority: int = WARM_PRIORITY) -> list[JobSpec]:
    """The jobs a JSONL file asks for; SubmitError names the first bad line."""
    specs = []
    for number, raw in enumerate(lines, start=1):
        text = raw.decode() if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        where = f"line {number}"
        try:
            line = json.loads(text)
            if not isinstance(line, dict):
                raise ValueError("must be a JSON object")
            kind, payload, ttl = _request(line)
        except ValueError as exc:  # json.JSONDecodeError is one
            raise SubmitError(where, str(exc)) from None
        if kind not in Kind.values:
            raise SubmitError(where, f"kind: must be one of {', '.join(Kind.values)}")
        problems = payload_problems(kind, payload)
        if problems:
            raise SubmitError(where, "; ".join(problems))
        if len(json.dumps(payload, separators=(",", ":")).encode()) > conf.MAX_PAYLOAD_BYTES:
            raise SubmitError(where, f"payload: over {conf.MAX_PAYLOAD_BYTES} bytes")
        if ttl is not None and (not isinstance(ttl, int) or not 1 <= ttl <= conf.CACHE_TTL_S):
            raise SubmitError(where, f"cache_ttl: an integer from 1 to {conf.CACHE_TTL_S}")
        specs.append(JobSpec(kind=kind, payload=payload, priority=priority, cache_ttl=ttl))
    return specs


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
    served = set(served_models())
    for spec in specs:
        if spec.payload["model"] not in served:
            raise SubmitError(
                "payload.model", f"no enabled endpoint serves model {spec.payload['model']!r}"
            )
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
