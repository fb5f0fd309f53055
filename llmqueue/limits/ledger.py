"""Rate limits and quotas: token buckets in the database, and the rules that charge them.

At dispatch (in the drain's claim transaction) a job pays, all or nothing:

    global          1 request      LLMQUEUE_GLOBAL_RPS (burst GLOBAL_BURST)
    endpoint-rpm    1 request      Endpoint.rpm_limit per minute (burst LIMIT_BURST_S)
    endpoint-tpm    its tokens     Endpoint.tpm_limit per minute (burst LIMIT_TOKENS_BURST_S)
    user-rpm        1 request      UserLimits.requests_per_minute (burst LIMIT_BURST_S)
    user-tpm        its tokens     UserLimits.tokens_per_minute (burst LIMIT_TOKENS_BURST_S)

A job that cannot pay stays queued, spending no attempt; the drain looks again at its next
poll. Tokens are estimated before the call (``buckets.estimate_tokens``) and corrected from
the response's ``usage`` after it (``buckets_reconcile``). A job's token charge is capped at
the bucket's capacity, so a request larger than a minute's limit goes alone in a full minute
instead of waiting forever; the rest is carried as debt.

At submission (``submission_admit``) a user pays into ``user-submit`` (submissions per
minute) and is held to quotas of jobs and tokens per day and per month (UTC).

Every bucket row is read under a lock and written back with a compare-and-set on its
version, so the limit holds across every worker process and machine: the row is the truth,
not a counter in some process's memory.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from llmqueue.conf import conf
from llmqueue.db.rows import placeholders, rows_read
from llmqueue.errors import OverLimit
from llmqueue.models import Endpoint, Job, TokenBucket, UserLimits
from llmqueue.policies.buckets import Bucket, BucketState, bucket_peek, bucket_refund, bucket_take

GLOBAL, EP_RPM, EP_TPM = "global", "endpoint-rpm", "endpoint-tpm"
USER_RPM, USER_TPM, USER_SUBMIT = "user-rpm", "user-tpm", "user-submit"

Key = tuple[str, str]
Charge = tuple[Key, float]

#: UserLimits' limit fields, in the order people read them
LIMIT_FIELDS = [
    "submissions_per_minute",
    "requests_per_minute",
    "tokens_per_minute",
    "jobs_per_day",
    "jobs_per_month",
    "tokens_per_day",
    "tokens_per_month",
]


def limits_for(user_ids: Iterable[int]) -> dict[int, dict[str, int | None]]:
    """Each user's effective limits: their own row's values, else the default row's. Its SQL
    is written once (``llmqueue.db.rows``): every drain step reads the limits of the jobs' owners.
    """
    ids = list(set(user_ids))
    where = "user_id IS NULL"
    if ids:
        where += f" OR user_id IN ({placeholders(ids)})"
    found = rows_read(
        UserLimits, ["user", *LIMIT_FIELDS], f"SELECT {{columns}} FROM {{table}} WHERE {where}", ids
    )
    rows = {uid: dict(zip(LIMIT_FIELDS, values, strict=True)) for uid, *values in found}
    default = rows.get(None, {})
    merged = {}
    for uid in ids:
        own = rows.get(uid, {})
        merged[uid] = {
            f: own[f] if own.get(f) is not None else default.get(f) for f in LIMIT_FIELDS
        }
    return merged


class Ledger:
    """The buckets a claim may charge: loaded and locked once, decided in memory, saved once."""

    def __init__(self, specs: dict[Key, Bucket], now: float) -> None:
        self.specs = specs
        self.now = now
        self.states: dict[Key, BucketState] = {}
        self._loaded: dict[Key, BucketState] = {}
        if specs:
            self._load()

    def _rows(self) -> Any:
        q = Q()
        for scope, key in self.specs:
            q |= Q(scope=scope, key=key)
        return TokenBucket.objects.select_for_update().filter(q)

    def _load(self) -> None:
        rows = {(r.scope, r.key): r for r in self._rows()}
        missing = [k for k in self.specs if k not in rows]
        if missing:
            TokenBucket.objects.bulk_create(
                [_new_row(k, self.specs[k], self.now) for k in missing], ignore_conflicts=True
            )
            rows = {(r.scope, r.key): r for r in self._rows()}
        for k, r in rows.items():
            self.states[k] = self._loaded[k] = BucketState(r.tokens, r.updated_at, r.version)

    def cost(self, key: Key, amount: float) -> Charge:
        # Never more than a full bucket: a request larger than the limit goes alone, not never.
        return key, min(amount, self.specs[key].capacity)

    def can_pay(self, charges: Sequence[Charge]) -> bool:
        return all(
            bucket_take(self.states[k], c, self.now, self.specs[k])[0]
            for k, c in charges
            if k in self.specs
        )

    def blocked_by(self, charges: Sequence[Charge]) -> str | None:
        """The scope of the first bucket that cannot pay its charge now; None if all can."""
        for k, c in charges:
            if k in self.specs and not bucket_take(self.states[k], c, self.now, self.specs[k])[0]:
                return k[0]
        return None

    def wait(self, charges: Sequence[Charge]) -> float:
        """Seconds until every one of ``charges`` could be paid (0 if now)."""
        waits = [
            bucket_take(self.states[k], c, self.now, self.specs[k])[2]
            for k, c in charges
            if k in self.specs
        ]
        return max(waits, default=0.0)

    def pay(self, charges: Sequence[Charge]) -> None:
        for k, c in charges:
            if k in self.specs:
                ok, self.states[k], _ = bucket_take(self.states[k], c, self.now, self.specs[k])
                assert ok, "pay only what can_pay allowed"

    def save(self) -> None:
        for k, state in self.states.items():
            old = self._loaded[k]
            if state is old:
                continue
            spec = self.specs[k]
            won = TokenBucket.objects.filter(scope=k[0], key=k[1], version=old.version).update(
                tokens=state.tokens,
                updated_at=state.updated_at,
                version=state.version,
                capacity=spec.capacity,
                refill_per_s=spec.refill_per_s,
            )
            if not won:  # the rows are locked by this transaction: this cannot happen
                raise RuntimeError(f"token bucket {k} changed under its lock")


def _new_row(k: Key, spec: Bucket, now: float) -> TokenBucket:
    return TokenBucket(
        scope=k[0],
        key=k[1],
        capacity=spec.capacity,
        refill_per_s=spec.refill_per_s,
        tokens=spec.capacity,
        updated_at=now,
    )


def _per_minute(limit: int | None, *, burst_s: float = 60.0) -> Bucket | None:
    return Bucket.per_minute(limit, burst_s=burst_s) if limit else None


def dispatch_ledger(
    *, endpoints: Iterable[Endpoint], owner_ids: Iterable[int], now: float
) -> Ledger:
    """The buckets that jobs of these owners, sent to these endpoints, must pay into."""
    specs: dict[Key, Bucket | None] = {}
    if conf.GLOBAL_RPS:
        burst = conf.GLOBAL_BURST or max(1.0, conf.GLOBAL_RPS)
        specs[(GLOBAL, "")] = Bucket(capacity=burst, refill_per_s=conf.GLOBAL_RPS)
    # Paced: a few seconds' worth at once, not the whole minute (LIMIT_BURST_S).
    burst, tokens_burst = conf.LIMIT_BURST_S, conf.LIMIT_TOKENS_BURST_S
    for e in endpoints:
        specs[(EP_RPM, str(e.pk))] = _per_minute(e.rpm_limit, burst_s=burst)
        specs[(EP_TPM, str(e.pk))] = _per_minute(e.tpm_limit, burst_s=tokens_burst)
    for uid, limits in limits_for(owner_ids).items():
        specs[(USER_RPM, str(uid))] = _per_minute(limits["requests_per_minute"], burst_s=burst)
        specs[(USER_TPM, str(uid))] = _per_minute(limits["tokens_per_minute"], burst_s=tokens_burst)
    return Ledger({k: v for k, v in specs.items() if v is not None}, now)


def user_charges(ledger: Ledger, owner_id: int, tokens: int) -> list[Charge]:
    charges = [((GLOBAL, ""), 1.0), ((USER_RPM, str(owner_id)), 1.0)]
    tpm = (USER_TPM, str(owner_id))
    if tpm in ledger.specs:
        charges.append(ledger.cost(tpm, tokens))
    return charges


def endpoint_charges(ledger: Ledger, endpoint_id: int, tokens: int) -> list[Charge]:
    charges: list[Charge] = [((EP_RPM, str(endpoint_id)), 1.0)]
    tpm = (EP_TPM, str(endpoint_id))
    if tpm in ledger.specs:
        charges.append(ledger.cost(tpm, tokens))
    return charges


def tokens_used(body: Any) -> int | None:
    """The LLM tokens an OpenAI-compatible response says it used (``usage.total_tokens``)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and total >= 0 else None


def charges_tokens(charges: Sequence[Charge]) -> bool:
    """Whether these charges include LLM tokens (a tokens-per-minute bucket)."""
    return any(key[0] in (EP_TPM, USER_TPM) for key, _ in charges)


def buckets_reconcile(usages: Sequence[tuple[int, int, int, int]]) -> None:
    """Correct token charges with the real usage: (endpoint id, owner id, estimated, used).

    One atomic update per bucket (tokens += estimate - used), within the capacity; the
    version moves so that a claim holding an older copy could not write it back.
    """
    if not usages:  # (an empty Q() below would match every bucket)
        return
    deltas: dict[Key, float] = {}
    for endpoint_id, owner_id, estimated, used in usages:
        for key in ((EP_TPM, str(endpoint_id)), (USER_TPM, str(owner_id))):
            deltas[key] = deltas.get(key, 0.0) + (estimated - used)
    wanted = Q()
    for scope, name in deltas:
        wanted |= Q(scope=scope, key=name)
    for row in TokenBucket.objects.select_for_update().filter(wanted):
        delta = deltas[(row.scope, row.key)]
        if not delta:
            continue
        spec = Bucket(row.capacity, row.refill_per_s)
        new = bucket_refund(BucketState(row.tokens, row.updated_at, row.version), delta, spec)
        TokenBucket.objects.filter(pk=row.pk).update(tokens=new.tokens, version=F("version") + 1)


def bucket_try(*, scope: str, key: str, spec: Bucket, cost: float) -> tuple[bool, float, float]:
    """Take ``cost`` from one bucket, atomically: (taken?, seconds to wait if not, level left).

    One short transaction holding the bucket's row: exact under any number of concurrent
    takers on SQLite and PostgreSQL.
    """
    with transaction.atomic():
        ledger = Ledger({(scope, key): spec}, time.time())
        charge = [((scope, key), cost)]
        ok = ledger.can_pay(charge)
        wait = 0.0 if ok else ledger.wait(charge)
        if ok:
            ledger.pay(charge)
            ledger.save()
        return ok, wait, bucket_peek(ledger.states[(scope, key)], ledger.now, spec)


# --- at submission -------------------------------------------------------------------------------


def _period_starts(now: dt.datetime) -> tuple[dt.datetime, dt.datetime, dt.datetime, dt.datetime]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)
    return day, day + dt.timedelta(days=1), month, next_month


def usage_of(user: Any, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """A user's limits and what they used of them (for GET /api/usage/)."""
    now = now or timezone.now()
    limits = limits_for([user.pk])[user.pk]
    day, next_day, month, next_month = _period_starts(now)
    jobs = Job.objects.filter(owner=user)
    totals = {
        "day": jobs.filter(created_at__gte=day).aggregate(n=Count("id"), t=Sum("tokens_estimate")),
        "month": jobs.filter(created_at__gte=month).aggregate(
            n=Count("id"), t=Sum("tokens_estimate")
        ),
    }
    row = TokenBucket.objects.filter(scope=USER_SUBMIT, key=str(user.pk)).first()
    spec = _per_minute(limits["submissions_per_minute"])
    remaining = None
    if spec is not None:
        state = (
            BucketState(row.tokens, row.updated_at)
            if row
            else BucketState.full(spec, now.timestamp())
        )
        remaining = max(0, math.floor(bucket_peek(state, now.timestamp(), spec)))
    return {
        "limits": limits,
        "usage": {
            "jobs_today": totals["day"]["n"] or 0,
            "tokens_today": totals["day"]["t"] or 0,
            "jobs_this_month": totals["month"]["n"] or 0,
            "tokens_this_month": totals["month"]["t"] or 0,
            "submissions_remaining": remaining,
        },
        "resets": {"day": next_day, "month": next_month},
    }


def submission_admit(*, owner: Any, jobs: int, tokens: int) -> None:
    """Charge one submission of ``jobs`` jobs and ``tokens`` tokens, or raise OverLimit.

    Call inside the submitting transaction: a refused submission writes nothing.
    """
    now = timezone.now()
    limits = limits_for([owner.pk])[owner.pk]
    spec = _per_minute(limits["submissions_per_minute"])
    if spec is not None:
        ok, wait, level = bucket_try(scope=USER_SUBMIT, key=str(owner.pk), spec=spec, cost=1)
        if not ok:
            raise OverLimit(
                "submissions_per_minute",
                limit=int(spec.capacity),
                remaining=0,
                retry_after=wait,
                reset=(spec.capacity - level) / spec.refill_per_s,
            )
    _check_quotas(owner, limits, jobs, tokens, now)


def _check_quotas(
    owner: Any, limits: dict[str, int | None], jobs: int, tokens: int, now: dt.datetime
) -> None:
    day, next_day, month, next_month = _period_starts(now)
    checks = [
        ("jobs_per_day", day, next_day, "n", jobs),
        ("tokens_per_day", day, next_day, "t", tokens),
        ("jobs_per_month", month, next_month, "n", jobs),
        ("tokens_per_month", month, next_month, "t", tokens),
    ]
    used: dict[dt.datetime, dict[str, int]] = {}
    for name, start, end, what, adding in checks:
        limit = limits[name]
        if limit is None:
            continue
        if start not in used:
            agg = Job.objects.filter(owner=owner, created_at__gte=start).aggregate(
                n=Count("id"), t=Sum("tokens_estimate")
            )
            used[start] = {"n": agg["n"] or 0, "t": agg["t"] or 0}
        if used[start][what] + adding > limit:
            reset = (end - now).total_seconds()
            raise OverLimit(
                name,
                limit=limit,
                remaining=max(0, limit - used[start][what]),
                retry_after=reset,
                reset=reset,
            )
