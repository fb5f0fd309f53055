"""What a job is and may become: its kind, its status, an attempt's outcome."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models


class Kind(models.TextChoices):
    #: POST {base_url}/chat/completions
    CHAT = "chat", "chat"
    #: POST {base_url}/completions
    COMPLETION = "completion", "completion"
    #: POST {base_url}/embeddings
    EMBEDDING = "embedding", "embedding"


class Status(models.TextChoices):
    #: waiting to be claimed once ``available_at`` has passed
    QUEUED = "queued", "queued"
    #: claimed by a drain under a lease; back to queued if the lease expires
    RUNNING = "running", "running"
    #: the upstream answered; ``result`` holds its JSON body
    SUCCEEDED = "succeeded", "succeeded"
    #: a dead letter: attempts exhausted or the request was refused; ``error`` says why
    DEAD = "dead", "dead"
    #: withdrawn by its owner before it ran
    CANCELLED = "cancelled", "cancelled"
    #: its ``deadline`` passed while it waited: never called upstream
    EXPIRED = "expired", "expired"


def status_literals(statuses: Iterable[Status]) -> str:
    """``'queued', 'running'``: statuses as SQL literals, for SQL written once
    (``llmqueue.db.rows``).
    SQLite never matches a partial index against "status IN (?, ?)", and counts from one
    alone only when the status is a literal."""
    return ", ".join(f"'{Status(s).value}'" for s in statuses)


TERMINAL = (Status.SUCCEEDED, Status.DEAD, Status.CANCELLED, Status.EXPIRED)


class Outcome(models.TextChoices):
    SUCCESS = "success", "success"
    #: retryable failure (connect error, timeout, 5xx, 429)
    RETRY = "retry", "retry"
    #: the request's fault (4xx other than 429): not retried
    REJECTED = "rejected", "rejected"
    #: the worker died or lost its lease mid-call
    LOST = "lost", "lost"
