"""The tables, one module per part: ``status`` (kinds, statuses, outcomes), ``jobs`` (the queue,
its totals and attempts), ``batches`` (batches and files), ``endpoints``, ``fleet`` (drain
slots), ``limits``, ``cache`` and ``keys``. Import them from here.

The Job table is the queue and the source of truth; django-q2 only runs drains. Job.status is
written by ``llmqueue.jobs.transitions`` and nothing else.
"""

from llmqueue.models.batches import Batch, BatchStatus, File
from llmqueue.models.cache import CacheEntry
from llmqueue.models.endpoints import Endpoint
from llmqueue.models.fleet import DrainSlot
from llmqueue.models.jobs import DeadLetter, Job, JobAttempt, JobTotal
from llmqueue.models.keys import ApiKey
from llmqueue.models.limits import TokenBucket, UserLimits
from llmqueue.models.status import TERMINAL, Kind, Outcome, Status, status_literals

__all__ = [
    "TERMINAL",
    "ApiKey",
    "Batch",
    "BatchStatus",
    "CacheEntry",
    "DeadLetter",
    "DrainSlot",
    "Endpoint",
    "File",
    "Job",
    "JobAttempt",
    "JobTotal",
    "Kind",
    "Outcome",
    "Status",
    "TokenBucket",
    "UserLimits",
    "status_literals",
]
