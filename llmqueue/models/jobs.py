"""The Job table: the queue and the source of truth; django-q2 only runs drains.

Job.status is written by ``llmqueue.jobs.transitions`` and nothing else.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from llmqueue.models.batches import Batch
from llmqueue.models.endpoints import Endpoint
from llmqueue.models.status import TERMINAL, Kind, Outcome, Status


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
