"""Rate-limit buckets and each user's limits and quotas."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


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
