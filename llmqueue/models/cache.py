"""The response cache's database level."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from llmqueue.models.status import Kind


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
