"""Intake: what every edge calls to turn a request into queued jobs.

    job_spec_check      the one validation of a job spec (its fields, its payload per kind,
                        its size), by field name; the edge shows the answer in its own shape
    job_submit          one spec -> a queued job (or a cache hit, or a follower)
    jobs_submit_many    many specs -> one Batch, all or nothing
    served_models       what an enabled endpoint serves (the form's choices, the checks)

The rules themselves are in ``llmqueue.jobs.validation``, JSONL lines in
``llmqueue.jobs.jsonl``; the kind-to-path table in ``llmqueue.calls.paths``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.utils import timezone

from llmqueue import metrics
from llmqueue.cache import cache_keys_for, cache_lookup_many
from llmqueue.cache import metrics as cache_metrics
from llmqueue.conf import conf
from llmqueue.db.locking import writer_turn
from llmqueue.db.rows import InstancesInsert
from llmqueue.errors import ModelNotServed
from llmqueue.jobs.fairness import fair_seqs_assign
from llmqueue.jobs.singleflight import by_cache, cache_wanted
from llmqueue.jobs.totals import totals_add
from llmqueue.jobs.transitions import wake_on_commit
from llmqueue.jobs.validation import (
    PRIORITY_DEFAULT,
    deadline_of,
    payload_oversize,
    payload_problems,
    spec_problems,
)
from llmqueue.limits.ledger import (
    submission_admit,
)
from llmqueue.models import Batch, Endpoint, Job, Status
from llmqueue.policies.buckets import estimate_tokens


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A validated request to run one job (the API, forms and bulk build these)."""

    kind: str
    payload: dict[str, Any]
    priority: int = 5
    max_attempts: int | None = None
    idempotency_key: str | None = None
    cache: bool = True
    #: the caller's own id (a JSONL batch line's custom_id), echoed in batch results
    custom_id: str = ""
    #: accept only a cached answer younger than this, and keep this job's no longer, seconds
    cache_ttl: int | None = None
    #: still queued at this time, the job expires without an upstream call (None: never)
    deadline: dt.datetime | None = None


#: the field a payload's own problems are reported under
PAYLOAD = "payload"


def job_spec_check(
    *,
    kind: Any,
    payload: Any,
    priority: Any = PRIORITY_DEFAULT,
    max_attempts: Any = None,
    idempotency_key: Any = None,
    cache: Any = True,
    cache_ttl: Any = None,
    custom_id: str = "",
    deadline: Any = None,
    expires_in: Any = None,
    size: bool = True,
) -> tuple[JobSpec | None, dict[str, list[str]]]:
    """(the spec, {}) when the values make a valid job, else (None, {field: [reasons]}).

    Payload problems come under "payload" as "path: reason" strings, a payload over the size
    limit as "payload: is N bytes; the limit is M bytes" (``size=False`` leaves that to an
    edge that answers it apart, as the API's 413 does). Whether a model is served is decided
    at submission (``ModelNotServed``), since endpoints change meanwhile. ``deadline`` (an
    aware datetime or ISO 8601 text) or ``expires_in`` (seconds from now) gives the job a
    deadline, reported under its own field.
    """
    problems = spec_problems(
        kind=kind,
        priority=priority,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
        cache=cache,
        cache_ttl=cache_ttl,
    )
    when, late = deadline_of(deadline=deadline, expires_in=expires_in, now=timezone.now())
    problems.update(late)
    if "kind" not in problems:
        if found := payload_problems(kind, payload):
            problems[PAYLOAD] = found
        elif size and (over := payload_oversize(payload)):
            problems[PAYLOAD] = [f"{PAYLOAD}: {over.reason}"]
    if problems:
        return None, problems
    spec = JobSpec(
        kind=kind,
        payload=payload,
        priority=priority,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
        cache=cache,
        custom_id=custom_id,
        cache_ttl=cache_ttl,
        deadline=when,
    )
    return spec, {}


def served_models() -> list[str]:
    """Every model some enabled endpoint serves, sorted."""
    served: set[str] = set()
    for names in Endpoint.objects.filter(enabled=True).values_list("served_models", flat=True):
        served.update(n for n in names or () if isinstance(n, str))
    return sorted(served)


def served_check(models: Iterable[str]) -> None:
    """Raise ModelNotServed for the first of ``models`` no enabled endpoint serves."""
    served = served_models()
    for model in models:
        if model not in served:
            raise ModelNotServed(model, served)


def _new_jobs(*, owner: Any, specs: Iterable[JobSpec], now: dt.datetime) -> list[Job]:
    """Unsaved jobs of ``owner`` (its id: no related object to set on each), with what is
    decided before any lock: the estimate, the cache key. Settings are read once."""
    max_attempts = conf.MAX_ATTEMPTS
    key = cache_keys_for(owner_id=owner.pk)
    return [
        Job(
            owner_id=owner.pk,
            batch_id=None,
            kind=spec.kind,
            model=spec.payload["model"],
            payload=spec.payload,
            priority=spec.priority,
            max_attempts=spec.max_attempts or max_attempts,
            idempotency_key=spec.idempotency_key,
            cache=spec.cache,
            created_at=now,
            available_at=now,
            custom_id=spec.custom_id,
            tokens_estimate=estimate_tokens(spec.kind, spec.payload),
            cache_key=key(spec.kind, spec.payload, spec.cache),
            cache_ttl=spec.cache_ttl,
            deadline=spec.deadline,
        )
        for spec in specs
    ]


def job_submit(*, owner: Any, spec: JobSpec) -> tuple[Job, bool]:
    """Queue one job; returns (job, created).

    With an idempotency key that this owner used before, the existing job comes back with
    created=False and nothing new is queued. Raises ModelNotServed when no enabled endpoint
    serves the payload's model. A cacheable job whose answer is cached comes back already
    succeeded (``cache_hit``), and one whose twin is in flight follows it (see the module
    docstring). The drains are woken once the transaction commits, if the job needs one.
    """
    if spec.idempotency_key:
        existing = Job.objects.filter(owner=owner, idempotency_key=spec.idempotency_key).first()
        if existing is not None:
            return existing, False
    served_check([spec.payload["model"]])
    now = timezone.now()
    (job,) = _new_jobs(owner=owner, specs=[spec], now=now)
    wanted = cache_wanted([job])
    found = cache_lookup_many(wanted, now=now) if wanted else {}  # before locking anything
    try:
        with transaction.atomic():
            _admit(owner, [job])
            if wanted:
                by_cache([job], wanted, found, now=now, single=True)
            job.save()
            _after_submit([job])
    except IntegrityError:
        # Two requests with the same key raced; the other one's insert won.
        if not spec.idempotency_key:
            raise
        return Job.objects.get(owner=owner, idempotency_key=spec.idempotency_key), False
    return job, True


def jobs_submit_many(
    *,
    owner: Any,
    specs: Sequence[JobSpec],
    name: str = "",
    batch_fields: Mapping[str, Any] | None = None,
) -> tuple[Batch, list[Job]]:
    """Queue many jobs as one Batch (with ``batch_fields`` set on it: the Batch API's): all
    of them, or (on any error) none.

    Specs whose idempotency key this owner already used return the existing job instead.
    Cache hits and single-flight work as in ``job_submit``; identical specs of one batch
    follow the first of them.
    """
    served_check({s.payload["model"] for s in specs})
    keys = [s.idempotency_key for s in specs if s.idempotency_key]
    existing = (
        {j.idempotency_key: j for j in Job.objects.filter(owner=owner, idempotency_key__in=keys)}
        if keys
        else {}
    )
    now = timezone.now()
    fresh = _new_jobs(
        owner=owner, specs=[s for s in specs if s.idempotency_key not in existing], now=now
    )
    wanted = cache_wanted(fresh)
    found = cache_lookup_many(wanted, now=now) if wanted else {}  # before locking anything
    # Prepared before the lock too, but for the fields decided under it: preparing them was
    # ~40% of the time a 1,000-job submission held SQLite's write lock, which drains wait for.
    insert = InstancesInsert(fresh, late=_DECIDED_LOCKED)
    with writer_turn(), transaction.atomic():
        _admit(owner, fresh)
        batch = Batch.objects.create(owner=owner, name=name, **(batch_fields or {}))
        for job in fresh:
            job.batch_id = batch.pk
        twins = by_cache(fresh, wanted, found, now=now, single=False) if wanted else []
        # Leaders first: a twin of this batch needs its leader's id.
        waiting = {id(follower) for follower, _ in twins}
        _batch_insert(batch, [j for j in fresh if id(j) not in waiting], insert)
        for follower, leader in twins:
            follower.follows_id = leader.pk
        _batch_insert(batch, [f for f, _ in twins], insert)
        _after_submit(fresh)
    created = iter(fresh)
    jobs = [existing.get(s.idempotency_key) or next(created) for s in specs]
    return batch, jobs


#: the fields of a new job that are set inside the submitting transaction: its batch, its place
#: in line (``_admit``), and what the cache decides (``by_cache``: a hit, or a follower)
_DECIDED_LOCKED = (
    "batch",
    "fair_seq",
    "follows",
    "status",
    "cache_hit",
    "result",
    "started_at",
    "finished_at",
)


def _batch_insert(batch: Batch, jobs: list[Job], insert: InstancesInsert) -> None:
    """Save new jobs of a batch created in this transaction, and give them their ids.

    One prepared INSERT for all (``llmqueue.db.rows``): ``bulk_create`` spent ~0.35 s of a
    1,000-job submission building SQL, all of it holding SQLite's write lock, which the
    drains wait for. The ids are read back by batch in id order: within the transaction
    that created the batch, only these inserts added its rows, and ids grow in insertion
    order (SQLite's AUTOINCREMENT; a PostgreSQL identity takes its values row by row).
    """
    if not jobs:
        return
    insert.run(jobs)
    newest = Job.objects.filter(batch=batch).order_by("-id").values_list("id", flat=True)
    for job, pk in zip(jobs, reversed(list(newest[: len(jobs)])), strict=True):
        job.pk = pk
        job._state.adding = False
        job._state.db = DEFAULT_DB_ALIAS  # where llmqueue.db.rows wrote it


def _admit(owner: Any, jobs: list[Job]) -> None:
    """Charge the submission to its owner's limits (or raise OverLimit) and place its jobs in
    their owner's line. Inside the submitting transaction: a refusal writes nothing."""
    submission_admit(owner=owner, jobs=len(jobs), tokens=sum(j.tokens_estimate for j in jobs))
    fair_seqs_assign(owner=owner, jobs=jobs)


def _after_submit(jobs: list[Job]) -> None:
    metrics.jobs_submitted(j.kind for j in jobs)
    hits = sum(1 for j in jobs if j.cache_hit)
    totals_add({Status.SUCCEEDED: hits})  # inserted finished: no transition counts them
    followers = sum(1 for j in jobs if j.follows_id is not None)
    metrics.jobs_finished(Status.SUCCEEDED, hits)
    if followers:
        transaction.on_commit(lambda: cache_metrics.FOLLOWERS.inc(followers))
    # A hit needs no drain, and a follower waits for its leader's.
    if waiting := sum(1 for j in jobs if j.status == Status.QUEUED and j.follows_id is None):
        wake_on_commit(waiting)
