"""The scheduler: which due jobs go now, and to which endpoint.

    candidates (due jobs, by model) ─┐
    endpoint pools (seats, balancer) ├─> plan_assignments ─> [Assignment] ─> jobs_claim_planned
    rate-limit buckets (the ledger)  ┘          (in memory)                   (the executor's write)

``jobs_schedule`` reads what the plan needs, all in one place and inside the step's
transaction: the endpoints' seats (``llmqueue.endpoints.pools``, locked), the due candidates of
each model that has room, and the buckets of their owners and endpoints
(``llmqueue.limits.ledger``, locked). ``plan_assignments`` then decides in memory, in the
queue's order (highest priority, owners in turn, oldest), job by job: a job whose owner's
limits cannot pay waits; otherwise the balancer picks a seat among those its pin and the
endpoints' limits allow. The ledger's payments are saved once. Nothing here writes a job:
the plan is claimed by ``llmqueue.jobs.jobs_claim_planned`` in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from django.db import connection
from django.utils import timezone

from llmqueue import metrics
from llmqueue.db.rows import db_param, rows_read
from llmqueue.endpoints.pools import Pools, Seat, dispatch_pools
from llmqueue.jobs import Assignment, Claim, jobs_claim_planned
from llmqueue.limits.ledger import (
    Ledger,
    charges_tokens,
    dispatch_ledger,
    endpoint_charges,
    user_charges,
)
from llmqueue.models import Job, Status, status_literals


class Candidate(NamedTuple):
    """A due job the plan may start: its place in the queue's order first (they sort by it)."""

    #: (-priority, fair_seq, id)
    rank: tuple[int, int, int]
    model: str
    owner_id: int
    tokens: int
    #: the endpoint it is pinned to (None: any that serves its model)
    pin: int | None


def plan_assignments(
    candidates: Sequence[Candidate],
    *,
    limit: int,
    pools: Pools,
    ledger: Ledger,
    seats: int | None = None,
) -> tuple[list[Assignment], Counter[str]]:
    """Up to ``limit`` (job, endpoint) assignments from ``candidates`` (sorted), paying each
    one's rate limits in ``ledger`` and taking its seat in ``pools`` (both in memory); at most
    ``seats`` of them with a place of an endpoint's room (None: no bound), the rest behind a
    seat. Returns the assignments in the order chosen, and how many jobs a rate limit held
    back, by the bucket's scope."""
    plan: list[Assignment] = []
    seated = 0
    held: Counter[str] = Counter()
    for rank, model, owner, tokens, pin in candidates:
        if len(plan) == limit:
            break
        charges = user_charges(ledger, owner, tokens)
        if scope := ledger.blocked_by(charges):
            held[scope] += 1
            continue
        blocked: list[str] = []

        def admit(s: Seat) -> bool:
            scope = ledger.blocked_by(charges + endpoint_charges(ledger, s.id, tokens))  # noqa: B023
            if scope:
                blocked.append(scope)  # noqa: B023
            return scope is None

        place = pools.assign(model, only=pin, admit=admit, seat=seats is None or seated < seats)
        if place is None:
            if blocked:
                held[blocked[0]] += 1
            continue
        seat = place.seat
        seated += place.seated
        paid = charges + endpoint_charges(ledger, seat.id, tokens)
        ledger.pay(paid)
        plan.append(
            Assignment(rank[2], seat.id, seat.target, rank, charges_tokens(paid), place.seated)
        )
    return plan, held


class Schedule(NamedTuple):
    plan: list[Assignment]
    #: the endpoints that may take calls now, full or not (None: not looked at, none asked)
    usable: frozenset[int] | None


def jobs_schedule(
    *,
    limit: int,
    now: dt.datetime,
    behind: Mapping[int, int] | None = None,
    seats: int | None = None,
) -> Schedule:
    """Plan up to ``limit`` due jobs onto endpoints (see the module's docstring).

    Only jobs that can go now are planned: an endpoint can take them (enabled, healthy, not
    paused, breaker allowing, under max_concurrency across the fleet) and they can pay their
    rate limits. So a job never waits in a drain's hands while a later, more urgent one waits
    in the queue, and a job that cannot go waits in the queue without spending an attempt.
    The one exception is ``behind``, the claiming drain's: how many jobs it may hold for each
    endpoint, to start in the places its own calls there free (``Seat.behind``), and
    ``seats``: how many of the jobs it can start at once (the rest, if any, wait behind).
    Call inside ``transaction.atomic()``, and claim the plan in the same transaction.
    """
    if limit <= 0:
        return Schedule([], None)
    pools = dispatch_pools(now=now, behind=behind)
    candidates = _candidates(pools.room(), limit=limit, now=now)
    if not candidates:
        return Schedule([], pools.usable)
    ledger = dispatch_ledger(
        endpoints=pools.endpoints(), owner_ids={c.owner_id for c in candidates}, now=now.timestamp()
    )
    plan, held = plan_assignments(candidates, limit=limit, pools=pools, ledger=ledger, seats=seats)
    for scope, n in held.items():
        metrics.rate_limit_wait(scope=scope, n=n)
    if plan:
        ledger.save()
    return Schedule(plan, pools.usable)


def jobs_claim(*, limit: int, lease_s: float | None = None, holder: str = "") -> list[Claim]:
    """queued -> running for up to ``limit`` due jobs: the plan, then its claim, as the
    drain's step does. ``holder``: the claiming drain's tag, the prefix of the lease token
    (``llmqueue.jobs.claims.lease_token``). Call inside ``transaction.atomic()``."""
    if limit <= 0:
        return []
    now = timezone.now()
    plan = jobs_schedule(limit=limit, now=now).plan
    return jobs_claim_planned(plan=plan, now=now, lease_s=lease_s, holder=holder)


# The candidates' SQL, written once (``llmqueue.db.rows``): the step runs it every few
# milliseconds. The status is a literal so that SQLite matches the partial index job_claim.
_CANDIDATE = ("id", "priority", "fair_seq", "owner", "tokens_estimate", "pinned_endpoint")


def _candidates_sql() -> str:
    sql = (
        f"SELECT {{columns}} FROM {{table}} WHERE status = {status_literals([Status.QUEUED])} "
        "AND model = %s AND available_at <= %s AND follows_id IS NULL "
        # past its deadline a job is never called; the expiry sweep ends it (llmqueue.jobs.expiry)
        "AND (deadline IS NULL OR deadline > %s) "
        "ORDER BY priority DESC, fair_seq, id LIMIT %s"
    )
    if connection.features.has_select_for_update_skip_locked:
        sql += " FOR UPDATE SKIP LOCKED"
    return sql


def _candidates(room: dict[str, int], *, limit: int, now: dt.datetime) -> list[Candidate]:
    """The due jobs of each model with room, in the queue's order across models."""
    candidates: list[Candidate] = []
    due = db_param(Job, "available_at", now)
    sql = _candidates_sql()
    for model, free in room.items():
        # Twice what fits: some may be held back by their owner's limits.
        rows = rows_read(Job, _CANDIDATE, sql, [model, due, due, 2 * min(free, limit)])
        candidates.extend(
            Candidate((-p, seq, pk), model, owner, tokens, pin)
            for pk, p, seq, owner, tokens, pin in rows
        )
    candidates.sort()
    return candidates
