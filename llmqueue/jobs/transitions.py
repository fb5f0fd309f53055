"""The job state machine in one table, and the one executor that writes ``Job.status``.

``TRANSITIONS`` names every action, the states it may start from and the state it leads to
(drawn in the package's docstring). Every write of a status goes through this module, each a
compare-and-set guarded by the action's from-states (and, for a running job, by its claim's
lease token): ``job_transition`` for one job (raises TransitionError if it matched no row),
``jobs_transition`` for many, and the two hand-written statements of the drain's hot path,
``claims_write`` and ``jobs_complete``, which write many rows in one statement. New jobs are
inserted, not transitioned (``llmqueue.jobs.intake``): queued, or succeeded from the cache.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal

from llmqueue.db.rows import placeholders, rows_read, rows_update
from llmqueue.errors import TransitionError
from llmqueue.jobs.totals import totals_add
from llmqueue.models import TERMINAL, Job, Status, status_literals

QUEUED, RUNNING, SUCCEEDED = Status.QUEUED, Status.RUNNING, Status.SUCCEEDED
DEAD, CANCELLED, EXPIRED = Status.DEAD, Status.CANCELLED, Status.EXPIRED


class Transition(NamedTuple):
    #: the states it may start from
    source: tuple[Status, ...]
    #: the state it leads to
    target: Status
    #: guarded by the claim's lease token too: a drain that lost its lease changes nothing
    fenced: bool
    why: str


#: every action on a job (the state machine is drawn in the package's docstring)
TRANSITIONS: dict[str, Transition] = {
    "claim": Transition((QUEUED,), RUNNING, False, "a drain takes a due job; its lease starts"),
    "complete": Transition((RUNNING,), SUCCEEDED, True, "the call answered"),
    "retry_later": Transition((RUNNING,), QUEUED, True, "retryable: back after a backoff"),
    "refund": Transition((RUNNING,), QUEUED, True, "not its fault: attempt given back"),
    "dead_letter": Transition((RUNNING,), DEAD, True, "rejected, or its attempts spent"),
    "release": Transition((RUNNING,), QUEUED, True, "its drain stopped: attempt given back"),
    "reap": Transition((RUNNING,), QUEUED, True, "its lease expired: runs again"),
    "reap_dead": Transition((RUNNING,), DEAD, True, "lease expired, last attempt"),
    "cancel": Transition((QUEUED,), CANCELLED, False, "by its owner or an operator"),
    "expire": Transition((QUEUED,), EXPIRED, False, "its deadline passed before it ran"),
    "retry": Transition((DEAD, CANCELLED), QUEUED, False, "run again from scratch"),
    "follow_through": Transition((QUEUED,), SUCCEEDED, False, "takes its leader's answer"),
    "follower_release": Transition((QUEUED,), QUEUED, False, "leader failed: runs alone"),
}

#: which states each action may start from
ALLOWED: dict[str, tuple[Status, ...]] = {a: t.source for a, t in TRANSITIONS.items()}

RELEASE_LEASE = {"lease_token": None, "lease_expires_at": None}


def may_start(action: str) -> Q:
    """The jobs in a state ``action`` may start from. One state is an equality: SQLite matches
    a partial index (job_running, job_next_due...) against "status = ?", never "status IN (?)"."""
    states = ALLOWED[action]
    return Q(status=states[0]) if len(states) == 1 else Q(status__in=states)


def _guard(action: str, where: Q | None, token: str | None) -> tuple[Q, dict[str, Any]]:
    t = TRANSITIONS[action]
    guard = may_start(action)
    if t.fenced:
        if token is None:
            raise ValueError(f"{action} is fenced: it needs the claim's lease token")
        guard &= Q(lease_token=token)
    if where is not None:
        guard &= where
    # Only a running job holds a lease: any other state gives it up.
    values: dict[str, Any] = {"status": t.target}
    if t.target != RUNNING:
        values.update(RELEASE_LEASE)
    return guard, values


def job_transition(
    action: str,
    *,
    job_id: int,
    token: str | None = None,
    where: Q | None = None,
    strict: bool = True,
    **values: Any,
) -> bool:
    """Apply ``action`` to one job if it is in a state the action starts from (its lease
    ``token`` held, if the action is fenced; and matching ``where``), setting ``values`` too.
    Returns whether it did; ``strict``: raises TransitionError, naming its state, if not."""
    guard, writes = _guard(action, where, token)
    if Job.objects.filter(guard, pk=job_id).update(**writes, **values) == 1:
        _count_finished(action, 1)
        return True
    if strict:
        status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        raise TransitionError(job_id, action, status)
    return False


def jobs_transition(action: str, *, where: Q, **values: Any) -> int:
    """Apply ``action`` (not fenced) to the jobs matching ``where`` that are in a state it
    starts from; the others are left as they are. Returns how many changed."""
    guard, writes = _guard(action, where, None)
    n = Job.objects.filter(guard).update(**writes, **values)
    _count_finished(action, n)
    return n


def _count_finished(action: str, n: int) -> None:
    """Jobs that ``action`` finished count in the lifetime totals (``llmqueue.jobs.totals``),
    in the transition's own transaction (the callers hold one)."""
    target = TRANSITIONS[action].target
    if n and target in TERMINAL:
        totals_add({target: n})


# --- the drain's hot path: one statement for many rows (``llmqueue.db.rows``) -------------------

#: what ``claims_write`` returns of each claimed job, in this order
CLAIMED = (
    "id",
    "kind",
    "payload",
    "attempts",
    "max_attempts",
    "owner",
    "tokens_estimate",
    "model",
    "cache_key",
    "cache_ttl",
    "created_at",
    "started_at",
)

# Written once: the step runs it every few milliseconds. The statuses are literals so that
# SQLite matches the partial index job_claim.
_CLAIM_SQL = (
    f"UPDATE {{table}} SET status = {status_literals([TRANSITIONS['claim'].target])}, "
    "endpoint_id = %s, lease_token = %s, lease_expires_at = %s, attempts = attempts + 1, "
    "started_at = COALESCE(started_at, %s) "
    f"WHERE id IN ({{ids}}) AND status IN ({status_literals(ALLOWED['claim'])}) "
    "RETURNING {columns}"
)


def claims_write(
    chosen: Mapping[int | None, Sequence[int]], *, token: str, expires: Any, started: Any
) -> list[list[Any]]:
    """queued -> running for the jobs ``chosen`` ({endpoint id or None: job ids}), under one lease
    ``token``; ``expires`` and ``started`` as database parameters (``db_param``). Returns the
    ``CLAIMED`` columns of the jobs it claimed (one no longer queued is skipped)."""
    rows: list[list[Any]] = []
    for endpoint_id, ids in chosen.items():
        sql = _CLAIM_SQL.replace("{ids}", placeholders(ids))
        rows += rows_read(Job, CLAIMED, sql, [endpoint_id, token, expires, started, *ids])
    return rows


class Completion(NamedTuple):
    job_id: int
    token: str
    result: Any
    tokens_used: int | None


_COMPLETE_SET = (
    "status",
    "result",
    "error",
    "finished_at",
    "tokens_used",
    "lease_token",
    "lease_expires_at",
)


def jobs_complete(done: Sequence[Completion], *, now: dt.datetime) -> list[Completion]:
    """running -> succeeded for many jobs at once; returns those whose fence held.

    The hot path of every drain step, so one statement run for all rows (``llmqueue.db.rows``),
    each row fenced by its lease in the WHERE clause. Nearly always every fence holds, which
    the count of changed rows tells; when one did not (its lease was lost, an expected race),
    the writes are undone and redone for the jobs whose fence is read to hold, under lock
    (PostgreSQL: FOR UPDATE; SQLite: the step's IMMEDIATE transaction).
    """
    if not done:
        return []
    with contextlib.suppress(_FenceLost), transaction.atomic():
        if _complete_rows(done, now=now) != len(done):
            raise _FenceLost  # rolls back to the savepoint
        _count_finished("complete", len(done))
        return list(done)
    fenced = Job.objects.filter(
        may_start("complete"),
        pk__in=[d.job_id for d in done],
        lease_token__in={d.token for d in done},
    ).order_by()
    held = set(fenced.select_for_update().values_list("pk", "lease_token"))
    won = [d for d in done if (d.job_id, d.token) in held]
    _count_finished("complete", _complete_rows(won, now=now))
    return won


class _FenceLost(Exception):
    pass


def _complete_rows(done: Sequence[Completion], *, now: dt.datetime) -> int:
    (source,) = ALLOWED["complete"]
    target = TRANSITIONS["complete"].target.value
    return rows_update(
        Job,
        assign=_COMPLETE_SET,
        where=("id", "status", "lease_token"),
        rows=(
            (target, d.result, "", now, d.tokens_used, None, None, d.job_id, source.value, d.token)
            for d in done
        ),
    )


#: sent once a transaction that made jobs due has committed (they are visible by then), with
#: ``jobs``, how many; the worker answers it by waking drains (``llmqueue.worker.signals``).
#: A signal, not a call: the job service sits below the worker and must not import it.
jobs_due = Signal()


def wake_on_commit(jobs: int = 1) -> None:
    """Announce ``jobs`` newly due jobs once the current transaction commits."""
    transaction.on_commit(lambda: jobs_due.send(sender=Job, jobs=jobs))
