"""The job state machine: one table (``transitions.TRANSITIONS``) and the only code that
writes ``Job.status`` (``transitions``' executor).

    submit ──> queued ──claim──> running ──complete──> succeeded
                 ^  │               │
                 │  cancel          ├──retry_later──> queued   (backoff, Retry-After)
                 │  │               ├──refund───────> queued   (not the job's fault: attempt back)
                 │  │ expire        ├──release──────> queued   (its worker is shutting down)
                 │  v  └─> expired  ├──dead_letter──> dead     (refused, or attempts spent)
                 │ cancelled        ├──reap─────────> queued   (lease expired: worker died)
                 │  (its deadline   └──reap_dead────> dead     (... on its last attempt)
                 │   passed queued: never called upstream; llmqueue.jobs.expiry)
                 └───────retry─────── dead | cancelled
    submit ──(cached answer)──> succeeded                    (cache_hit; llmqueue.cache)
    queued follower ──follow_through──> succeeded            (cache_hit: single-flight)
    queued follower ──follower_release──> queued             (its leader ended otherwise)

A cacheable job whose twin (same cache key) is queued or running *follows* it: never claimed,
it finishes with its leader's answer in the leader's own transition, or is released
(``follows`` cleared) to run on its own when the leader ends any other way.

Every transition is a compare-and-set: an UPDATE guarded by the states it may start from
(and, for a running job, by the claim's lease token, so that a worker that lost its lease can
never overwrite the job's new life). A transition that matched no row raises TransitionError,
except in the drain's batch writes, where a lost fence is expected and simply skipped. Whether
a failed call is retried, refunded or dead-lettered is ``llmqueue.policies.retry``'s decision.

The package: ``intake`` with ``validation`` and ``jsonl`` (new jobs, from every edge),
``transitions`` (the table and its executor), ``claims`` (the drain's transitions: claim the
scheduler's plan, record, release, reap), ``owner`` (cancel, retry), ``singleflight``
(followers of an identical job in flight), ``expiry`` (deadlines), ``batches`` and ``files``
(the Batch and Files APIs), ``retention`` and ``totals`` (history and its lifetime counts),
``due``, ``selectors``, ``timeseries`` and ``collectors`` (reads), ``fairness``, ``warm``
(cache warming) and ``waiting`` (the web process's one poller for waiting requests). Import
the common services from here.
"""

from llmqueue.jobs.claims import (
    Assignment,
    AttemptResult,
    Claim,
    attempt_usages,
    claims_seat,
    jobs_claim_planned,
    jobs_record,
)
from llmqueue.jobs.due import queue_due_count, queue_has_due, queue_next_due
from llmqueue.jobs.expiry import jobs_expire
from llmqueue.jobs.intake import JobSpec, job_submit, jobs_submit_many, served_models
from llmqueue.jobs.leases import jobs_reap, jobs_release, jobs_renew
from llmqueue.jobs.owner import job_cancel, job_retry, jobs_retry
from llmqueue.jobs.transitions import ALLOWED

__all__ = [
    "ALLOWED",
    "Assignment",
    "AttemptResult",
    "Claim",
    "JobSpec",
    "attempt_usages",
    "claims_seat",
    "job_cancel",
    "job_retry",
    "job_submit",
    "jobs_claim_planned",
    "jobs_expire",
    "jobs_reap",
    "jobs_record",
    "jobs_release",
    "jobs_renew",
    "jobs_retry",
    "jobs_submit_many",
    "queue_due_count",
    "queue_has_due",
    "queue_next_due",
    "served_models",
]
