"""Fair queueing: within one priority, owners take turns.

Each queued job carries ``fair_seq``, its place in its owner's line. The claim serves the
lowest ``fair_seq`` first (after priority), so the n-th job of every owner goes before the
(n+1)-th of any: one owner's backlog of 100,000 jobs does not starve another who submits 10.

A new job's place is one past its owner's last queued job (of that model and priority), but
never before the head of the queue: an owner returning after a quiet spell joins the current
round instead of jumping ahead of everyone for as long as they were away. This is start-time
fair queueing (Goyal, Vin and Cheng, 1996) with every job costing one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from llmqueue.models import Job, Status


def fair_seqs_assign(*, owner: Any, jobs: Sequence[Job]) -> None:
    """Give unsaved ``jobs`` of ``owner`` their places. Call inside the submitting transaction."""
    groups: dict[tuple[str, int], list[Job]] = defaultdict(list)
    for job in jobs:
        groups[(job.model, job.priority)].append(job)
    for (model, priority), group in groups.items():
        line = Job.objects.filter(
            status=Status.QUEUED, follows__isnull=True, model=model, priority=priority
        ).order_by("fair_seq", "id")
        head = line.values_list("fair_seq", flat=True).first()
        last = (
            line.filter(owner=owner)
            .order_by("-fair_seq")
            .values_list("fair_seq", flat=True)
            .first()
        )
        start = max(head or 0, last + 1 if last is not None else 0)
        for i, job in enumerate(group):
            job.fair_seq = start + i
