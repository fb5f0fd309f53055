"""The tables. The Job table is the queue and the source of truth; django-q2 only runs drains.

Job.status is written by ``llmqueue.jobs`` and nothing else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from llmqueue.db.fields import EncryptedTextField


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


class Endpoint(models.Model):
    """An OpenAI-compatible upstream (vLLM, TGI, llama.cpp, Ollama, LiteLLM, OpenAI...)."""

    name = models.SlugField(max_length=100, unique=True)
    base_url = models.URLField(max_length=500, help_text="e.g. http://host:8000/v1")
    #: encrypted at rest (LLMQUEUE_FIELD_KEYS); reads give the plain key, which must never
    #: reach a response, a page or a log line
    api_key = EncryptedTextField(blank=True, default="")
    served_models = models.JSONField(
        default=list, verbose_name="models", help_text="model names this endpoint serves"
    )
    weight = models.PositiveIntegerField(default=1)
    max_concurrency = models.PositiveIntegerField(default=64)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    timeout_s = models.FloatField(default=120.0)
    enabled = models.BooleanField(default=True)
    # --- health (llmqueue.endpoints.health): active checks of GET {base_url}/models ---
    healthy = models.BooleanField(default=True)
    health_failures = models.PositiveIntegerField(default=0, help_text="consecutive failed checks")
    health_successes = models.PositiveIntegerField(default=0, help_text="consecutive good checks")
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    #: epoch seconds: no calls before this (it answered 429 with Retry-After, or reported its
    #: rate limit exhausted)
    paused_until = models.FloatField(default=0.0)
    # --- circuit breaker (llmqueue.policies.breaker): the state, and its version for CAS ---
    breaker_state = models.CharField(max_length=10, default="closed")
    breaker = models.JSONField(default=dict, blank=True)
    breaker_version = models.PositiveBigIntegerField(default=0)
    # --- what the balancer reads (llmqueue.policies.balancer): peak-EWMA latency, fading
    # failure share ---
    latency_ms = models.FloatField(null=True, blank=True)
    latency_at = models.FloatField(null=True, blank=True, help_text="epoch seconds")
    recent_failures = models.FloatField(default=0.0)
    recent_calls = models.FloatField(default=0.0)
    recent_at = models.FloatField(default=0.0, help_text="epoch seconds")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BatchStatus(models.TextChoices):
    """A batch's life, as OpenAI's Batch API names it (``llmqueue.jobs.batches`` writes it)."""

    #: its input file is being read
    VALIDATING = "validating", "validating"
    #: its input had bad lines: ``errors`` names each, and nothing was queued
    FAILED = "failed", "failed"
    #: its jobs are queued or running
    IN_PROGRESS = "in_progress", "in_progress"
    #: every job ended; its output and error files are being written
    FINALIZING = "finalizing", "finalizing"
    #: every job ended and the files are written
    COMPLETED = "completed", "completed"
    #: its completion window passed first: unfinished jobs expired, listed in the error file
    EXPIRED = "expired", "expired"
    #: its queued jobs were cancelled; the running ones are finishing
    CANCELLING = "cancelling", "cancelling"
    #: cancelled, and nothing of it runs any more
    CANCELLED = "cancelled", "cancelled"


class File(models.Model):
    """An uploaded or produced file (the Files API): its bytes in Django's default storage."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    #: "batch" (an upload), "batch_output" (a batch's output or error file)
    purpose = models.CharField(max_length=40)
    filename = models.CharField(max_length=255)
    size_bytes = models.PositiveBigIntegerField(default=0)
    content = models.FileField(upload_to="llmqueue/files/%Y/%m/", max_length=300)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["owner", "-id"], name="file_owner_recent")]

    def __str__(self) -> str:
        return f"file-{self.pk} ({self.filename})"


class Batch(models.Model):
    """Jobs submitted together (bulk API, a JSONL upload, or the Batch API's /v1/batches)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    name = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(
        max_length=12, choices=BatchStatus.choices, default=BatchStatus.IN_PROGRESS
    )
    #: the Batch API's fields: the one path every line calls, e.g. "/v1/chat/completions"
    endpoint = models.CharField(max_length=40, blank=True, default="")
    #: as asked ("24h"); ``deadline`` is what it means
    completion_window = models.CharField(max_length=10, blank=True, default="")
    #: every job of the batch carries it too; past it, the unfinished ones expire
    deadline = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    #: the input's bad lines: [{"code", "message", "param", "line"}]
    errors = models.JSONField(null=True, blank=True)
    input_file = models.ForeignKey(
        File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    output_file = models.ForeignKey(
        File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error_file = models.ForeignKey(
        File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    #: when it reached its end: completed, failed, expired or cancelled
    ended_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "batches"
        indexes = [
            # the batches the settling pass looks at: only those not yet ended
            models.Index(
                fields=["id"],
                condition=Q(status__in=["in_progress", "cancelling", "finalizing"]),
                name="batch_open",
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"batch {self.pk}"


class Job(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="jobs",
        db_index=False,  # job_owner_recent (owner, -id) serves its lookups
    )
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.CHAT)
    #: payload["model"], kept in a column so that the claim query can route by it
    model = models.CharField(max_length=200)
    payload = models.JSONField()
    priority = models.PositiveSmallIntegerField(default=5)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    #: not claimable before this (retry backoff)
    available_at = models.DateTimeField(default=timezone.now)
    #: while running: the claim's fencing token and when the claim lapses
    lease_token = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001 (none: not leased)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    endpoint = models.ForeignKey(
        Endpoint,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # job_endpoint: partial, like the other columns a new job leaves NULL
    )
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    #: LLM tokens: estimated at submission (prompt + max_tokens), then as the upstream counted
    tokens_estimate = models.PositiveIntegerField(default=0)
    tokens_used = models.PositiveIntegerField(null=True, blank=True)
    cache = models.BooleanField(default=True)
    cache_hit = models.BooleanField(default=False)
    # NULL, not "": the unique (owner, key) constraint must not apply to jobs without a key
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: set by an operator's "retry on endpoint X": the claim gives this job to that endpoint only
    pinned_endpoint = models.ForeignKey(
        Endpoint,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # job_pinned, partial
    )
    #: the caller's own id for the job (a JSONL batch line's custom_id), echoed in results
    custom_id = models.CharField(max_length=200, blank=True, default="")
    #: the response cache's key of this job's request (llmqueue.cache); None: it bypasses the cache
    cache_key = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001 (none: uncached)
    #: accept only cached answers younger than this, and keep this job's answer no longer, seconds
    cache_ttl = models.PositiveIntegerField(null=True, blank=True)
    #: single-flight: the identical job in flight whose answer this one waits for (and took)
    follows = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="followers",
        db_index=False,  # the partial index job_followers holds only the followers
    )
    #: fair queueing (llmqueue.limits.ledger): the job's place in its owner's turn within its
    #: priority; the claim serves the lowest first, so owners take turns
    fair_seq = models.BigIntegerField(default=0)
    #: a queued job still waiting at this time expires (never called upstream); None: never
    deadline = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="job_owner_idempotency_key",
            ),
            models.CheckConstraint(condition=Q(priority__lte=9), name="job_priority_0_9"),
        ]
        indexes = [
            # The claim query: queued jobs of a model, highest priority first, then owners in
            # turn (fair_seq), then oldest. Partial, so it holds only the queue, not the
            # history (nor the single-flight followers, which are never claimed).
            models.Index(
                fields=["model", "-priority", "fair_seq", "id"],
                condition=Q(status="queued", follows__isnull=True),
                name="job_claim",
            ),
            # An owner's last place in line (llmqueue.jobs.fairness).
            models.Index(
                fields=["owner", "model", "priority", "-fair_seq"],
                condition=Q(status="queued", follows__isnull=True),
                name="job_owner_line",
            ),
            # In-flight per endpoint and expired leases: only running jobs. The status leads
            # (one value) so that a count of the running jobs reads this index alone.
            models.Index(
                fields=["status", "endpoint", "lease_expires_at"],
                condition=Q(status="running"),
                name="job_running",
            ),
            models.Index(
                fields=["available_at"], condition=Q(status="queued"), name="job_next_due"
            ),
            models.Index(fields=["owner", "-id"], name="job_owner_recent"),
            models.Index(fields=["owner", "created_at"], name="job_owner_created"),
            models.Index(fields=["owner", "status", "-id"], name="job_owner_status"),
            # No index on the status of every job. SQLite's planner, which has no statistics,
            # takes "status = 'queued'" through such an index for a selective term, and walked
            # every queued job with it instead of using the partial indexes here: 130-260 ms
            # a statement at 300,000 queued, in the submission's leader lookup (under the
            # write lock) and the drains' idle poll. The dead letters have one of their own,
            # which no other status can use. (Not the queued jobs: "status = 'queued'" first
            # in job_next_due drew the claim away from job_claim.) In id order, so that the
            # newest dead letters (the dashboard's, the admin's list) are read without a sort
            # of all of them on PostgreSQL.
            models.Index(fields=["status", "id"], condition=Q(status="dead"), name="job_dead"),
            # The expiry sweep (llmqueue.jobs.expiry): queued jobs with a deadline, soonest
            # first. Partial: most jobs carry none, and none once they left the queue.
            models.Index(
                fields=["deadline"],
                condition=Q(status="queued", deadline__isnull=False),
                name="job_deadline",
            ),
            # The dashboard's last hour (throughput, waits) and a batch's results by time.
            # This and the two below are partial: a new job leaves these columns NULL, and
            # every index a submission writes is written under SQLite's write lock (1,000 rows
            # into all three: ~10 of ~40 ms).
            models.Index(
                fields=["finished_at"],
                condition=Q(finished_at__isnull=False),
                name="job_finished",
            ),
            models.Index(
                fields=["endpoint"], condition=Q(endpoint__isnull=False), name="job_endpoint"
            ),
            models.Index(
                fields=["pinned_endpoint"],
                condition=Q(pinned_endpoint__isnull=False),
                name="job_pinned",
            ),
            # Single-flight (llmqueue.cache): the in-flight leader of a cache key, and the
            # followers of a leader. Both partial: a few rows, whatever the history.
            models.Index(
                fields=["cache_key"],
                condition=Q(
                    status__in=["queued", "running"],
                    follows__isnull=True,
                    cache_key__isnull=False,
                ),
                name="job_cache_leader",
            ),
            models.Index(
                fields=["follows"], condition=Q(follows__isnull=False), name="job_followers"
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


class JobTotal(models.Model):
    """Jobs that finished, by status, since the start: counts that outlive the jobs (retention
    deletes those; ``llmqueue.jobs.totals``). The transition executor adds to them in the
    transaction of each transition that finishes jobs; a retried job that finishes again
    counts again.
    """

    #: a terminal Status (no choices: a status added later needs no migration of this table)
    status = models.CharField(max_length=10)
    #: one status is spread over a few rows, which concurrent writers pick at random, so that
    #: drains on PostgreSQL do not queue for one row's lock; read as their sum
    shard = models.PositiveSmallIntegerField(default=0)
    n = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["status", "shard"], name="jobtotal_key")]

    def __str__(self) -> str:
        return f"{self.status}: {self.n}"


class DeadLetter(Job):
    """Dead jobs, as their own admin section."""

    class Meta:
        proxy = True
        verbose_name = "dead letter"


class Outcome(models.TextChoices):
    SUCCESS = "success", "success"
    #: retryable failure (connect error, timeout, 5xx, 429)
    RETRY = "retry", "retry"
    #: the request's fault (4xx other than 429): not retried
    REJECTED = "rejected", "rejected"
    #: the worker died or lost its lease mid-call
    LOST = "lost", "lost"


class JobAttempt(models.Model):
    """One upstream call for a job."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    endpoint_name = models.CharField(max_length=100, blank=True, default="")
    started_at = models.DateTimeField()
    duration_ms = models.FloatField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["job", "number"]
        indexes = [models.Index(fields=["job", "number"], name="attempt_job_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of job {self.job_id}"


class DrainSlot(models.Model):
    """One of a host's drain slots; a drain holds one while it runs and beats its heartbeat.

    A slot whose heartbeat went stale (its process died) is free for the next drain.
    """

    host = models.CharField(max_length=255)
    number = models.PositiveSmallIntegerField()
    owner = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001 (none: free)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "number"], name="drainslot_host_number")
        ]

    def __str__(self) -> str:
        return f"{self.host}#{self.number}"


class TokenBucket(models.Model):
    """A token bucket's state (llmqueue.policies.buckets): one row per scope and key.

    ``scope`` is "global", "endpoint-rpm", "endpoint-tpm", "user-rpm", "user-tpm"...; ``key`` the
    endpoint or user it limits. Every take is one compare-and-set on ``version``.
    """

    scope = models.CharField(max_length=20)
    key = models.CharField(max_length=100, blank=True, default="")
    capacity = models.FloatField()
    refill_per_s = models.FloatField()
    tokens = models.FloatField()
    updated_at = models.FloatField(help_text="epoch seconds of the last refill")
    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="bucket_scope_key")]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}" if self.key else self.scope


class UserLimits(models.Model):
    """Per-user limits and quotas; the row with no user holds the defaults for everyone.

    Empty means no limit.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="llm_limits",
    )
    #: API submissions (one request, single or bulk) per minute
    submissions_per_minute = models.PositiveIntegerField(null=True, blank=True)
    #: upstream calls of this user's jobs per minute, and their LLM tokens
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    jobs_per_day = models.PositiveIntegerField(null=True, blank=True)
    jobs_per_month = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "user limits"
        constraints = [
            models.UniqueConstraint(
                fields=["user"], condition=Q(user__isnull=True), name="one_default_limits"
            )
        ]

    def __str__(self) -> str:
        return f"limits of {self.user}" if self.user_id else "default limits"


class CacheEntry(models.Model):
    """A cached upstream answer: the response cache's database level (llmqueue.cache).

    One row per cache key. ``scope`` is "user:<id>" (answers are private by default) or
    "shared"; ``owner`` is that user, so that deleting a user deletes their answers.
    """

    #: "<scope>/<sha256 of the canonical request>"
    key = models.CharField(max_length=100, unique=True)
    scope = models.CharField(max_length=40)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    model = models.CharField(max_length=200)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    #: the upstream's JSON body, as a job's ``result``
    response = models.JSONField()
    size_bytes = models.PositiveIntegerField(help_text="the answer's size as compact JSON")
    hits = models.PositiveBigIntegerField(default=0)
    #: when this answer was written; a rewrite of the key gets a new one (copies check it)
    created_at = models.DateTimeField(default=timezone.now)
    last_hit_at = models.DateTimeField(null=True, blank=True)
    #: written or last hit: the order of LRU eviction
    used_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = "cache entry"
        verbose_name_plural = "cache entries"
        ordering = ["-used_at"]
        indexes = [
            models.Index(fields=["used_at", "id"], name="cache_lru"),
            models.Index(fields=["expires_at"], name="cache_expiry"),
            models.Index(fields=["model", "-hits"], name="cache_model_hits"),
        ]

    def __str__(self) -> str:
        return self.key


class ApiKey(models.Model):
    """A user's API key, kept as a SHA-256 digest (llmqueue.keys).

    The plain key ("lq_<prefix>_<secret>") is shown once, when it is made. ``prefix`` finds
    the row; the digest of the whole key proves it. Keys carry 190 random bits, so a fast hash
    is enough: a slow password hasher would only slow every request.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    #: public, random; the first part of the key, to find its row
    prefix = models.CharField(max_length=16, unique=True)
    #: hex SHA-256 of the whole key
    hashed_key = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="empty: never")
    revoked_at = models.DateTimeField(null=True, blank=True)
    #: updated at most once a minute (llmqueue.keys), not on every request
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (lq_{self.prefix}_…)"

    def is_active(self, now: dt.datetime | None = None) -> bool:
        when = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > when)
