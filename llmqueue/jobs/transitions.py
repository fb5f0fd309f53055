"""What every transition shares: the states each may start from, and the guarded update."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal

from llmqueue.errors import TransitionError
from llmqueue.models import Job, Status

#: which states each transition may start from (the state machine is drawn in the package's
#: docstring)
ALLOWED: dict[str, tuple[Status, ...]] = {
    "claim": (Status.QUEUED,),
    "complete": (Status.RUNNING,),
    "retry_later": (Status.RUNNING,),
    "dead_letter": (Status.RUNNING,),
    "reap": (Status.RUNNING,),
    "release": (Status.RUNNING,),
    "cancel": (Status.QUEUED,),
    "retry": (Status.DEAD, Status.CANCELLED),
    #: a single-flight follower takes its leader's answer (or is released to run alone)
    "follow_through": (Status.QUEUED,),
}

RELEASE_LEASE = {"lease_token": None, "lease_expires_at": None}


def may_start(action: str) -> Q:
    """The jobs in a state ``action`` may start from. One state is an equality: SQLite matches
    a partial index (job_running, job_next_due...) against "status = ?", never "status IN (?)"."""
    states = ALLOWED[action]
    return Q(status=states[0]) if len(states) == 1 else Q(status__in=states)


def guarded_transition(job_id: int, action: str, extra: Q | None = None, **values: Any) -> None:
    """Apply ``values`` to one job if it is in a state ``action`` may start from (and matches
    ``extra``); raise TransitionError, naming the state it is in, if not."""
    guard = Q(pk=job_id) & may_start(action)
    if extra is not None:
        guard &= extra
    if Job.objects.filter(guard).update(**values) != 1:
        status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        raise TransitionError(job_id, action, status)


#: sent once a transaction that made jobs due has committed (they are visible by then), with
#: ``jobs``, how many; the worker answers it by waking drains (``llmqueue.worker.signals``).
#: A signal, not a call: the job service sits below the worker and must not import it.
jobs_due = Signal()


def wake_on_commit(jobs: int = 1) -> None:
    """Announce ``jobs`` newly due jobs once the current transaction commits."""
    transaction.on_commit(lambda: jobs_due.send(sender=Job, jobs=jobs))
