"""The drain slots: which worker process holds which of its host's places."""

from __future__ import annotations

from django.db import models


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
