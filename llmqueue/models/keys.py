"""API keys, stored hashed."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.utils import timezone


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
