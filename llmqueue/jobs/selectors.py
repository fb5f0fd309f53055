"""Reads: what users and operators see of the queue."""

from __future__ import annotations

import re
import time
from collections import Counter as TallyCounter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet, TextField
from django.db.models.functions import Cast, Substr
from django.utils import timezone

from llmqueue import metrics
from llmqueue.db.rows import rows_read
from llmqueue.endpoints.pools import endpoint_in_flight
from llmqueue.jobs.due import queue_due_count
from llmqueue.jobs.timeseries import window_summary
from llmqueue.jobs.totals import status_count, totals_read
from llmqueue.models import TERMINAL, Batch, Endpoint, Job, Status, TokenBucket, status_literals


def jobs_of(*, owner: Any, status: str | None = None) -> QuerySet[Job]:
    """A user's jobs, newest first (another user's jobs are simply not there)."""
    qs = Job.objects.filter(owner=owner).select_related("endpoint").order_by("-id")
    if status:
        qs = qs.filter(status=status)
    return qs


def endpoints_summary() -> list[dict[str, Any]]:
    in_flight = endpoint_in_flight()
    return [
        {
            "name": e.name,
            "models": e.served_models,
            "enabled": e.enabled,
            "healthy": e.healthy,
            "breaker_state": e.breaker_state,
            "latency_ms": e.latency_ms,
            "in_flight": in_flight.get(e.id, 0),
            "max_concurrency": e.max_concurrency,
            "id": e.id,
            "last_error": e.last_error,
            "last_check_at": e.last_check_at.isoformat() if e.last_check_at else None,
        }
        for e in Endpoint.objects.order_by("name")
    ]


def queue_stats(*, window_s: int = 300) -> dict[str, Any]:
    """Depth by status, recent throughput, cache hit rate, endpoints.

    Also (optional fields, added later): ``latency`` (queue wait and upstream p50/p95 over the
    window, from ``llmqueue.jobs.timeseries``), ``rate_limits`` (``rate_limit_state``),
    ``by_priority`` (``depth_by_priority``) and ``finished_total`` (jobs finished since the
    start, by status, deleted ones included: ``llmqueue.jobs.totals``).

    Its cost does not grow with the history: ``depth`` counts the queued, running and dead
    jobs from their partial indexes and takes the other statuses from the lifetime totals
    (so ``succeeded`` and ``cancelled`` include jobs deleted by retention, and a cancelled
    job retried and cancelled again counts twice); the window reads only its own jobs.
    """
    now = timezone.now()
    totals = totals_read()
    depth = {s: totals.get(s, 0) for s in Status.values}
    depth.update({s: status_count(s) for s in (Status.QUEUED, Status.RUNNING, Status.DEAD)})
    since = now - timedelta(seconds=window_s)
    recent = Job.objects.filter(finished_at__gte=since).aggregate(
        finished=Count("id"),
        succeeded=Count("id", filter=Q(status=Status.SUCCEEDED)),
        hits=Count("id", filter=Q(status=Status.SUCCEEDED, cache_hit=True)),
    )
    due = queue_due_count(now)
    return {
        "depth": depth,
        "due": due,
        "window_s": window_s,
        "throughput_per_s": round(recent["finished"] / window_s, 3),
        "succeeded_in_window": recent["succeeded"],
        "cache_hit_rate": round(recent["hits"] / recent["succeeded"], 4)
        if recent["succeeded"]
        else None,
        "endpoints": endpoints_summary(),
        "latency": window_summary(since, now),
        "rate_limits": rate_limit_state(),
        "by_priority": depth_by_priority(),
        "finished_total": {s: totals.get(s, 0) for s in TERMINAL},
    }


def depth_by_priority() -> list[dict[str, int]]:
    """Queued and running jobs of each priority, highest first (only priorities with jobs)."""
    table: dict[int, dict[str, int]] = {}
    for status in (Status.QUEUED, Status.RUNNING):
        # One status at a time, as a literal: SQLite then reads its partial index, where
        # "status IN (?, ?)" read every job.
        sql = (
            f"SELECT {{columns}}, COUNT(*) FROM {{table}} "
            f"WHERE status = {status_literals([status])} GROUP BY priority"
        )
        for priority, n in rows_read(Job, ("priority",), sql):
            row = table.setdefault(priority, {"priority": priority, "queued": 0, "running": 0})
            row[status] = n
    return [table[p] for p in sorted(table, reverse=True)]


def answer_text(job: Job) -> str | None:
    """The readable answer of a succeeded chat or completion job, if there is one."""
    result = job.result
    if not isinstance(result, dict):
        return None
    choices = result.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    first = choices[0]
    message = first.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return message["content"]
    text = first.get("text")
    return text if isinstance(text, str) else None


# --- job lists and pages ------------------------------------------------------------------------


def jobs_filtered(
    *,
    owner: Any,
    status: str | None = None,
    model: str | None = None,
    priority: int | None = None,
    batch: int | None = None,
    q: str = "",
) -> QuerySet[Job]:
    """A user's jobs with the list page's filters; ``q`` finds an id, a custom id or an
    idempotency key, or text in the model, the error or the payload."""
    qs = jobs_of(owner=owner, status=status)
    if model:
        qs = qs.filter(model=model)
    if priority is not None:
        qs = qs.filter(priority=priority)
    if batch is not None:
        qs = qs.filter(batch_id=batch)
    q = q.strip()
    if q:
        text = Q(model__icontains=q) | Q(error__icontains=q) | Q(payload_text__icontains=q)
        exact = Q(custom_id=q) | Q(idempotency_key=q)
        if q.isdigit():
            exact |= Q(pk=int(q))
        qs = qs.annotate(payload_text=Cast("payload", TextField())).filter(exact | text)
    return qs


def job_turns(job: Job) -> list[dict[str, str]]:
    """The request as a conversation: role and text of each turn (a prompt or input is one)."""
    payload = job.payload if isinstance(job.payload, dict) else {}
    messages = payload.get("messages")
    if isinstance(messages, list):
        return [
            {"role": str(m.get("role", "?")), "text": _text_of(m.get("content"))}
            for m in messages
            if isinstance(m, dict)
        ]
    for field in ("prompt", "input"):
        if field in payload:
            return [{"role": field, "text": _text_of(payload[field])}]
    return []


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts, or a list of prompts
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return "\n".join(p for p in parts if p)
    return "" if content is None else str(content)


def attempt_timeline(job: Job, attempts: list[Any]) -> list[dict[str, Any]]:
    """Each attempt placed on the job's life: offset and width in percent, for a bar chart."""
    start = job.created_at
    ends = [a.started_at + timedelta(milliseconds=a.duration_ms or 0) for a in attempts]
    end = max([job.finished_at or timezone.now(), *ends])
    span = max((end - start).total_seconds(), 0.001)
    rows = []
    for a, a_end in zip(attempts, ends, strict=True):
        left = max(0.0, (a.started_at - start).total_seconds() / span * 100)
        width = max(0.5, (a_end - a.started_at).total_seconds() / span * 100)
        rows.append(
            {"attempt": a, "left": round(left, 2), "width": round(min(width, 100 - left), 2)}
        )
    return rows


# --- batches ------------------------------------------------------------------------------------


def batch_counts(*, batch_ids: list[int]) -> dict[int, dict[str, int]]:
    """Jobs of each batch by status, with ``total`` and ``finished`` (terminal)."""
    counts: dict[int, dict[str, int]] = {
        b: {**{s: 0 for s in Status.values}, "total": 0, "finished": 0} for b in batch_ids
    }
    rows = (
        Job.objects.filter(batch_id__in=batch_ids)
        .values_list("batch_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for batch_id, status, n in rows:
        c = counts[batch_id]
        c[status] += n
        c["total"] += n
        if status in TERMINAL:
            c["finished"] += n
    for c in counts.values():
        c["percent"] = round(100 * c["finished"] / c["total"]) if c["total"] else 100
    return counts


def batches_of(*, owner: Any) -> QuerySet[Batch]:
    return Batch.objects.filter(owner=owner).order_by("-id")


def batch_results(batch: Batch) -> Iterator[dict[str, Any]]:
    """The finished jobs of a batch in the OpenAI Batch API's output format, in line order."""
    rows = (
        batch.jobs.filter(status__in=TERMINAL)
        .order_by("id")
        .values_list("id", "custom_id", "status", "result", "error")
    )
    for pk, custom_id, status, result, error in rows.iterator(chunk_size=1000):
        ok = status == Status.SUCCEEDED
        yield {
            "id": f"batch_req_{pk}",
            "custom_id": custom_id or None,
            "response": {"status_code": 200, "request_id": str(pk), "body": result} if ok else None,
            "error": None if ok else {"code": status, "message": error or status},
        }


# --- operators: dead letters and rate limits ----------------------------------------------------

_GAVE_UP = re.compile(r"^gave up after \d+ attempts; (?:last error: )?")


def error_reason(error: str, *, width: int = 80) -> str:
    """What a dead letter died of, without the attempt count, cut to ``width`` characters."""
    return _GAVE_UP.sub("", error or "")[:width].strip() or "(no error text)"


def error_reason_q(reason: str) -> Q:
    """Dead letters whose ``error_reason`` starts with ``reason`` (a filter for the admin)."""
    if reason == "(no error text)":
        return Q(error="")
    return Q(error__startswith=reason) | Q(
        error__regex=r"^gave up after [0-9]+ attempts; (last error: )?" + re.escape(reason)
    )


def dead_letter_groups(
    *, limit: int = 20, width: int = 80, among: int | None = None
) -> list[dict[str, Any]]:
    """Dead letters grouped by what they died of, largest group first; with ``among``, only
    the newest that many (a read whose cost does not grow with the dead letters kept, for
    the dashboard's poll)."""
    if among is not None:
        return _newest_dead_letter_groups(limit=limit, width=width, among=among)
    # Grouped in the database by a prefix long enough to hold "gave up after N attempts; last
    # error: " and then ``width`` characters; the few groups are merged here by reason.
    rows = (
        Job.objects.filter(status=Status.DEAD)
        .annotate(head=Substr("error", 1, width + 60))
        .values_list("head")
        .annotate(n=Count("id"))
        .order_by()
    )
    groups: TallyCounter[str] = TallyCounter()
    for head, n in rows:
        groups[error_reason(head, width=width)] += n
    return [{"reason": r, "count": n} for r, n in groups.most_common(limit)]


def _newest_dead_letter_groups(*, limit: int, width: int, among: int) -> list[dict[str, Any]]:
    # The status a literal: SQLite then walks job_dead backwards (its rows are in id order)
    # and stops after ``among``.
    sql = (
        f"SELECT SUBSTR(error, 1, {int(width) + 60}) FROM {{table}} "
        f"WHERE status = {status_literals([Status.DEAD])} ORDER BY id DESC LIMIT {int(among)}"
    )
    groups: TallyCounter[str] = TallyCounter(
        error_reason(head, width=width) for (head,) in rows_read(Job, (), sql)
    )
    return [{"reason": r, "count": n} for r, n in groups.most_common(limit)]


#: the dashboard groups the newest this many dead letters by error
DASHBOARD_DEAD_LETTERS = 1000


def rate_limit_state(*, limit: int = 20) -> dict[str, Any]:
    """What shows rate limiting now: the emptiest token buckets, and the counted waits.

    ``waits`` (jobs held back by an empty bucket) and ``upstream_429`` (endpoints answering
    "slow down") are this host's event counters since its services started
    (``llmqueue.metrics``); the buckets are the fleet's, from the database.
    """
    now = time.time()
    buckets = []
    for b in TokenBucket.objects.order_by("tokens", "scope", "key")[:limit]:
        level = min(b.capacity, b.tokens + max(0.0, now - b.updated_at) * b.refill_per_s)
        buckets.append(
            {
                "scope": b.scope,
                "key": b.key,
                "level": round(level, 1),
                "capacity": b.capacity,
                "empty": level < 1,
            }
        )
    totals = metrics.event_totals(
        "llmqueue_rate_limit_waits_total", "llmqueue_upstream_rate_limited_total"
    )
    return {
        "buckets": buckets,
        "waits": totals["llmqueue_rate_limit_waits_total"],
        "upstream_429": totals["llmqueue_upstream_rate_limited_total"],
    }
