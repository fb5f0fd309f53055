"""Every Prometheus metric of llmqueue, in one place.

Two kinds, because they answer two questions:

- **Events** (counters and histograms: jobs submitted and finished, attempts, upstream and
  queue-wait times, rate-limit waits) are counted by the process where they
  happen: web processes count submissions, drain workers count attempts and outcomes. With
  several processes, prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set
  by the project settings) keeps each process's values in a file of that directory, and a
  scrape adds them up. The directory is the deployment's own on this host (one per database
  and boot, ``project/prometheus_dir.py``); a scrape first folds the files of processes that
  died into an archive (``llmqueue.metrics_archive``), so totals never go backwards and its
  cost stays that of the live processes.
  Increments are made once the transaction that made the event commits (``on_commit``), so
  a rolled-back step counts nothing and a retried step counts once.
- **State** (queue depth, endpoint health, breaker state, in flight) is read from the
  database when ``/metrics`` is scraped, so it is the same fleet-wide truth whichever web
  process answers. Each read is one small query on a partial index (queued and running jobs
  only) or on the endpoint rows; nothing counts the job history or the attempt log, which
  grow to millions of rows. Finished jobs are counters, not a COUNT(*).

On a fleet, each host has its own directory: a web host serves it at ``/metrics``, a worker-
only host with ``manage.py llmqueue_metrics --port 9108``. Sum the event series over
instances and take ``max`` of the state series (every web host reports the same database).

    from llmqueue import metrics
    metrics.rate_limit_wait(scope="user-rpm")

This module is a leaf: services call its event hooks, and it reads no table. The state
collectors live with what they read (``llmqueue.jobs.collectors`` for the queue and the
endpoints, ``llmqueue.cache.metrics`` for the cache); the app registers them on
``STATE_REGISTRY`` when it is ready (``llmqueue.apps``).
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import transaction
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from llmqueue.calls.types import CallResult
from llmqueue.metrics_archive import HostCollector
from llmqueue.models import Outcome

#: upstream call durations, seconds: LLM calls take from milliseconds (cache, small models)
#: to minutes (long generations)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: time from submission to the first claim, seconds: from "at once" to a day-long backlog
WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)

JOBS_SUBMITTED = Counter(
    "llmqueue_jobs_submitted", "Jobs queued (form, API, bulk, batch upload).", ["kind"]
)
JOBS_FINISHED = Counter(
    "llmqueue_jobs_finished",
    "Jobs that reached a terminal status, by that status (succeeded, dead, cancelled, expired).",
    ["outcome"],
)
ATTEMPTS = Counter(
    "llmqueue_attempts",
    "Upstream calls, by endpoint and outcome (success, retry, rejected, lost).",
    ["endpoint", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "llmqueue_upstream_seconds",
    "Duration of upstream calls, by endpoint.",
    ["endpoint"],
    buckets=UPSTREAM_BUCKETS,
)
QUEUE_WAIT_SECONDS = Histogram(
    "llmqueue_queue_wait_seconds",
    "Time from submission to the first claim (started_at - created_at) of finished jobs.",
    buckets=WAIT_BUCKETS,
)
WAIT_POLLS = Counter(
    "llmqueue_wait_polls",
    "Queries of a web process's waiting poller (one per tick for all its waiting requests).",
)
RATE_LIMIT_WAITS = Counter(
    "llmqueue_rate_limit_waits",
    "Claims that held a job back because a token bucket was empty (no attempt spent), by "
    "bucket scope; a job held back at several claims counts at each.",
    ["scope"],
)
TOKENS = Counter(
    "llmqueue_tokens",
    "LLM tokens that upstreams reported in the usage of their successful answers, by endpoint, "
    "model and kind (prompt, completion). Cache hits and single-flight followers call no "
    "upstream and count nothing here.",
    ["endpoint", "model", "kind"],
)
#: the usage fields of an OpenAI-compatible answer, by the kind they count
TOKEN_KINDS = (("prompt", "prompt_tokens"), ("completion", "completion_tokens"))
#: inputs per merged embeddings call: 1 to OpenAI's 2048
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
EMBED_BATCH_SIZE = Histogram(
    "llmqueue_embed_batch_size",
    "Inputs per upstream embeddings call made by micro-batching (llmqueue.worker.batching), "
    "bisected re-sends of a rejected call included.",
    buckets=BATCH_BUCKETS,
)
PLACES_PASSED = Counter(
    "llmqueue_places_passed",
    "Calls a drain started in the place of its own finished call to a full endpoint, without "
    "waiting for a step to free the place (llmqueue.worker.reserve), by endpoint.",
    ["endpoint"],
)
UPSTREAM_RATE_LIMITED = Counter(
    "llmqueue_upstream_rate_limited",
    "Upstream answers 429 (the endpoint asked us to slow down), by endpoint.",
    ["endpoint"],
)


def _after_commit(fn: Any) -> None:
    # Outside a transaction on_commit runs at once; inside, only if the transaction commits.
    transaction.on_commit(fn)


def _inc_each(counter: Counter, tally: Mapping[str, int], *labels: str) -> None:
    """Add each of ``tally``'s counts to ``counter`` under its key (then ``labels``)."""
    for key, n in tally.items():
        counter.labels(key, *labels).inc(n)


def _count_each(counter: Counter, keys: Iterable[str], *labels: str) -> None:
    """Once the transaction commits, add one to ``counter`` for each of ``keys``."""
    if tally := Tally(keys):
        _after_commit(lambda: _inc_each(counter, tally, *labels))


# --- events: the hooks that services call ---------------------------------------------------


def jobs_submitted(kinds: Iterable[str]) -> None:
    """Count newly queued jobs (call inside the submitting transaction)."""
    _count_each(JOBS_SUBMITTED, kinds)


def jobs_finished(outcome: str, n: int = 1) -> None:
    """Count ``n`` jobs that reached the terminal status ``outcome``."""
    if n:
        _after_commit(lambda: JOBS_FINISHED.labels(outcome).inc(n))


def attempts_recorded(
    results: Sequence[CallResult],
    *,
    waits: Iterable[float],
    finished: Iterable[str],
    models: Sequence[str] = (),
) -> None:
    """Count a drain step's calls, and the jobs they finished: ``waits`` are those jobs' queue
    waits (seconds from submission to first claim), ``finished`` the terminal status of each
    job whose transition won its fence, ``models`` the model each call asked for (in the order
    of ``results``). Counted once the step commits.
    """
    calls = Tally((r.target.name, str(r.outcome)) for r in results)
    tokens = tokens_reported(results, models)
    throttled = Tally(r.target.name for r in results if r.http_status == 429)
    durations = [(r.target.name, max(0.0, r.duration_ms / 1000.0)) for r in results]
    outcomes = Tally(finished)
    waits = [max(0.0, w) for w in waits]

    def count() -> None:
        for (endpoint, outcome), n in calls.items():
            ATTEMPTS.labels(endpoint, outcome).inc(n)
        for endpoint, seconds in durations:
            UPSTREAM_SECONDS.labels(endpoint).observe(seconds)
        for endpoint, n in throttled.items():
            UPSTREAM_RATE_LIMITED.labels(endpoint).inc(n)
        for outcome, n in outcomes.items():
            JOBS_FINISHED.labels(outcome).inc(n)
        for seconds in waits:
            QUEUE_WAIT_SECONDS.observe(seconds)
        for (endpoint, model, kind), n in tokens.items():
            TOKENS.labels(endpoint, model, kind).inc(n)

    if calls or outcomes:
        _after_commit(count)


def tokens_reported(
    results: Sequence[CallResult], models: Sequence[str]
) -> Tally[tuple[str, str, str]]:
    """Tokens by (endpoint, model, kind) from the ``usage`` of successful answers. A model
    name is one an endpoint serves (intake refuses others), so the label stays bounded; an
    answer without a usage (or with a malformed one) counts nothing rather than a guess."""
    tally: Tally[tuple[str, str, str]] = Tally()
    for i, r in enumerate(results):
        usage = r.body.get("usage") if isinstance(r.body, dict) else None
        if r.outcome != Outcome.SUCCESS or not isinstance(usage, dict):
            continue
        model = models[i] if i < len(models) else ""
        for kind, field in TOKEN_KINDS:
            n = usage.get(field)
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                tally[(r.target.name, model, kind)] += n
    return tally


def attempts_lost(endpoints: Iterable[str]) -> None:
    """Count calls cut off by a dead worker (their leases expired)."""
    _count_each(ATTEMPTS, endpoints, "lost")


def embed_batch(size: int) -> None:
    """Count one merged embeddings call of ``size`` inputs. At call time, not after a commit:
    the call happened whatever the drain's next step does with its results."""
    EMBED_BATCH_SIZE.observe(size)


def places_passed(endpoints: Iterable[str]) -> None:
    """Count calls started in a place a finished call of the same drain left (one per name)."""
    _count_each(PLACES_PASSED, endpoints)


def rate_limit_wait(*, scope: str, n: int = 1) -> None:
    """Count jobs deferred by an empty token bucket of ``scope`` (hook for the buckets)."""
    RATE_LIMIT_WAITS.labels(scope).inc(n)


#: collectors of database state, read on each scrape of /metrics
STATE_REGISTRY = CollectorRegistry(auto_describe=False)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def events_registry() -> Any:
    """The events of every process of this host (multiprocess mode), or of this process."""
    if path := multiprocess_dir():
        registry = CollectorRegistry()
        HostCollector(registry, path)
        return registry
    return REGISTRY


def exposition(*, state: bool = True) -> bytes:
    """The Prometheus text of ``/metrics``: events (django-prometheus's too), then state."""
    text = generate_latest(events_registry())
    return text + generate_latest(STATE_REGISTRY) if state else text


def event_totals(*names: str) -> dict[str, float]:
    """This host's event counters summed over their labels, by sample name (for pages)."""
    totals = dict.fromkeys(names, 0.0)
    for family in events_registry().collect():
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


def multiprocess_dir_reset() -> int:
    """Empty this host's multiprocess directory; call it when the host's services start, before
    any of them counts (an earlier run's files would be added to the new totals)."""
    path = multiprocess_dir()
    if path is None:
        return 0
    removed = 0
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
            removed += 1
    return removed
