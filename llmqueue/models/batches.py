"""Files (the Files API's uploads and a batch's output) and batches of jobs."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


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
