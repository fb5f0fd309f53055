"""Which endpoint may take a job now, and what the endpoints learn from each call.

The storage side of the balancer and the breaker (both pure, in their own modules):

- ``dispatch_pools`` reads every enabled, healthy endpoint once per claim, with its calls in
  flight across the fleet (running jobs under a live lease, from the Job table, so a drain
  that died leaves no count behind once its leases lapse) and its breaker, and returns the
  ``Pools`` a claim assigns jobs from.
- ``endpoints_learn`` feeds finished calls to each endpoint's breaker, latency average and
  failure share.

Both run inside the drain's claim transaction, with the endpoint rows locked (PostgreSQL:
FOR UPDATE; SQLite: the IMMEDIATE transaction), so no two drains hand out the same free
place or the same half-open probe. The breaker's own compare-and-set on ``breaker_version``
still guards every change, whatever the caller holds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from django.db import connection
from django.utils import timezone

from llmqueue.calls.types import CallOutcome, CallResult, Target
from llmqueue.conf import conf
from llmqueue.db.rows import db_param, instances_read, placeholders, rows_read, rows_update
from llmqueue.models import Endpoint, Job, Status, status_literals
from llmqueue.policies.balancer import (
    FailureStats,
    Strategy,
    ewma_update,
    failure_ratio,
    failure_record,
    strategy_for,
)
from llmqueue.policies.breaker import (
    BreakerSettings,
    BreakerState,
    Phase,
    breaker_allow,
    breaker_health_passed,
    breaker_record,
)


def breaker_settings() -> BreakerSettings:
    return BreakerSettings(
        failure_threshold=conf.BREAKER_FAILURES,
        failure_rate=conf.BREAKER_FAILURE_RATE,
        window_size=conf.BREAKER_WINDOW,
        open_base_s=conf.BREAKER_OPEN_S,
        open_cap_s=conf.BREAKER_OPEN_CAP_S,
        half_open_probes=conf.BREAKER_PROBES,
        probe_timeout_s=conf.BREAKER_PROBE_TIMEOUT_S,
    )


def breaker_of(endpoint: Endpoint) -> BreakerState:
    data = dict(endpoint.breaker or {})
    data["version"] = endpoint.breaker_version
    if "phase" in data:
        data["phase"] = Phase(data["phase"])
    return BreakerState(**data)


def breaker_save(endpoint_id: int, old: BreakerState, new: BreakerState) -> bool:
    """Compare-and-set: write ``new`` if the stored state is still ``old``; True if it won."""
    if new is old:
        return True
    data = dataclasses.asdict(new)
    version = data.pop("version")
    return bool(
        Endpoint.objects.filter(pk=endpoint_id, breaker_version=old.version).update(
            breaker=data, breaker_version=version, breaker_state=new.phase.value
        )
    )


def latency_now(e: Endpoint, epoch: float) -> float | None:
    """The endpoint's latency average, faded by the time since its last sample.

    Without the fade, an endpoint that was slow once and then got no traffic would keep its
    bad average, and the latency strategy would never try it again to learn otherwise
    (Finagle's peak-EWMA decays the same way).
    """
    if e.latency_ms is None or e.latency_at is None:
        return e.latency_ms
    return e.latency_ms * math.exp(-max(0.0, epoch - e.latency_at) / conf.LATENCY_TAU_S)


def _stats(e: Endpoint) -> FailureStats:
    return FailureStats(e.recent_failures, e.recent_calls, e.recent_at)


def endpoint_in_flight(*, now: Any = None) -> dict[int, int]:
    """Calls in flight per endpoint id, across the fleet (a job claimed behind a full endpoint
    has none until it takes a place: ``llmqueue.worker.reserve``). Its SQL is written once
    (``llmqueue.db.rows``): every drain step runs it; the status is a literal so that SQLite
    matches the partial index job_running."""
    now = now or timezone.now()
    sql = (
        f"SELECT {{columns}}, COUNT(*) FROM {{table}} "
        f"WHERE status = {status_literals([Status.RUNNING])} "
        "AND lease_expires_at > %s AND endpoint_id IS NOT NULL GROUP BY endpoint_id"
    )
    rows = rows_read(Job, ("endpoint",), sql, [db_param(Job, "lease_expires_at", now)])
    return {endpoint_id: n for endpoint_id, n in rows}


def _locked(where: str, params: Sequence[Any] = ()) -> list[Endpoint]:
    """Endpoints, locked for the step's transaction (PostgreSQL: FOR UPDATE; SQLite: the
    IMMEDIATE transaction holds the database)."""
    sql = f"SELECT {{columns}} FROM {{table}} WHERE {where} ORDER BY name"
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    return instances_read(Endpoint, sql, params)


@dataclasses.dataclass
class Seat:
    """An endpoint as one claim sees it: what the balancer reads, and the room left."""

    id: int
    weight: int
    in_flight: int
    room: int
    ewma_latency_ms: float | None
    failure_ratio: float
    target: Target
    breaker: BreakerState
    #: a half-open or just-reopened breaker: each call is a probe the breaker must grant
    probing: bool
    #: jobs a drain may claim for it beyond its room, to wait in that drain's reserve for a
    #: place one of the drain's own calls here frees (``llmqueue.worker.reserve``): the
    #: endpoint never has more calls in flight for them
    behind: int = 0
    #: the room kept for calls: a job its drain cannot start now takes a place only above it
    #: (half the endpoint's max_concurrency), else it waits behind
    floor: int = 0


class Place(NamedTuple):
    """Where the balancer put one job: a seat, and whether the job has a place of its room
    (False: it waits behind the seat, in the claiming drain's reserve)."""

    seat: Seat
    seated: bool


class Pools:
    """The seats of every model, for one claim; ``assign`` hands out one job's place."""

    def __init__(
        self,
        by_model: dict[str, list[Seat]],
        settings: BreakerSettings,
        endpoints: list[Endpoint],
        usable: frozenset[int] = frozenset(),
    ) -> None:
        self.by_model = by_model
        self._settings = settings
        self._endpoints = endpoints
        #: the endpoints that may take calls now, full or not (enabled, healthy, not paused,
        #: breaker not open)
        self.usable = usable
        self._strategies: dict[str, Strategy] = {}  # read once per claim, not once per job

    def room(self) -> dict[str, int]:
        return {m: sum(s.room + s.behind for s in seats) for m, seats in self.by_model.items()}

    def endpoints(self) -> list[Endpoint]:
        """The endpoints that have seats."""
        return self._endpoints

    def assign(
        self,
        model: str,
        *,
        only: int | None = None,
        admit: Callable[[Seat], bool] | None = None,
        seat: bool = True,
    ) -> Place | None:
        """Where the next job of ``model`` goes; None when no endpoint can take it.

        A seat with room first (with ``seat`` False, the job cannot start now: only room above
        the seat's ``floor``, so that a reserve never holds the last places others could call
        with); only when none has room, a seat the job may wait behind. ``only``: the job is
        pinned to that endpoint. ``admit``: a seat the job may not use now (its rate limits,
        say) is passed over for this job.
        """
        seats = [s for s in self.by_model.get(model, ()) if only is None or s.id == only]
        if model not in self._strategies:
            self._strategies[model] = _strategy(model)
        strategy = self._strategies[model]
        refused: set[int] = set()
        while True:
            pool = [s for s in seats if s.room > (0 if seat else s.floor) and s.id not in refused]
            seated = bool(pool)
            if not seated:
                pool = [s for s in seats if s.behind > 0 and s.id not in refused]
            chosen = strategy.pick(model, pool)
            if chosen is None:
                return None
            if admit is not None and not admit(chosen):
                refused.add(chosen.id)
                continue
            if not seated:
                chosen.behind -= 1
                return Place(chosen, seated=False)
            if chosen.probing and not self._grant_probe(chosen):
                chosen.room = 0
                continue
            chosen.room -= 1
            chosen.in_flight += 1
            return Place(chosen, seated=True)

    def _grant_probe(self, seat: Seat) -> bool:
        allowed, new = breaker_allow(seat.breaker, time.time(), self._settings)
        if not allowed or not breaker_save(seat.id, seat.breaker, new):
            return False
        seat.breaker = new
        return True


_strategies: dict[str, Strategy] = {}


def _strategy(model: str) -> Strategy:
    # One instance per strategy name in this process: round robin keeps its rotation in it.
    name = (conf.BALANCER_BY_MODEL or {}).get(model) or conf.BALANCER
    if name not in _strategies:
        _strategies[name] = strategy_for(name)
    return _strategies[name]


def _trusted(state: BreakerState) -> bool:
    """Closed, and no failure since its last success: not on probation."""
    return state.phase is Phase.CLOSED and not state.consecutive_failures and "s" in state.window


def _room(endpoint: Endpoint, state: BreakerState, busy: int, settings: BreakerSettings) -> int:
    room = endpoint.max_concurrency - busy
    if state.phase is not Phase.CLOSED:
        # Only the probes the breaker still has to give, and never more than it allows.
        return min(room, max(settings.half_open_probes - state.probes_granted, 1))
    if not _trusted(state):
        # On probation: failing lately, or no success since the breaker (re)closed. Never more
        # calls at risk than it takes to trip it, so a dead endpoint costs at most
        # BREAKER_FAILURES calls before it opens, however many drains send to it at once.
        return min(room, settings.failure_threshold - state.consecutive_failures - busy)
    return room


def dispatch_pools(*, now: Any = None, behind: Mapping[int, int] | None = None) -> Pools:
    """Every model's seats: enabled, healthy endpoints whose breaker lets a call through and
    that have room. ``behind``: how many jobs the claiming drain may wait behind each
    endpoint, full or not (``Seat.behind``); granted only where the breaker trusts it. Call
    inside the claim's transaction."""
    now = now or timezone.now()
    epoch = now.timestamp()
    settings = breaker_settings()
    behind = behind or {}
    endpoints = _locked("enabled AND healthy")
    busy = endpoint_in_flight(now=now) if endpoints else {}
    by_model: dict[str, list[Seat]] = defaultdict(list)
    seated: list[Endpoint] = []
    usable: set[int] = set()
    for e in endpoints:
        state = breaker_of(e)
        if state.phase is Phase.OPEN and state.open_until is not None and epoch < state.open_until:
            continue
        if e.paused_until > epoch:  # it told us to back off
            continue
        usable.add(e.id)
        room = _room(e, state, busy.get(e.id, 0), settings)
        waiting = behind.get(e.id, 0) if _trusted(state) else 0
        if room <= 0 and waiting <= 0:
            continue
        seat = Seat(
            id=e.id,
            weight=e.weight,
            in_flight=busy.get(e.id, 0),
            room=max(room, 0),
            ewma_latency_ms=latency_now(e, epoch),
            failure_ratio=failure_ratio(_stats(e), epoch, conf.STATS_TAU_S),
            target=Target(e.id, e.name, e.base_url, e.api_key, e.timeout_s),
            breaker=state,
            probing=state.phase is not Phase.CLOSED,
            behind=max(waiting, 0),
            floor=e.max_concurrency // 2,
        )
        seated.append(e)
        for model in e.served_models or ():
            by_model[model].append(seat)
    return Pools(dict(by_model), settings, seated, frozenset(usable))


def endpoints_learn(results: Iterable[CallResult]) -> None:
    """Feed finished calls to their endpoints' breakers and stats, and pause the endpoints
    that asked for it.

    One locked read and one update per endpoint. Call inside the drain's transaction.
    """
    by_endpoint: dict[int, list[CallResult]] = defaultdict(list)
    for r in results:
        if r.health is not None or r.pause_s:
            by_endpoint[r.target.id].append(r)
    if not by_endpoint:
        return
    settings = breaker_settings()
    tau = conf.STATS_TAU_S
    for e in _locked(f"id IN ({placeholders(by_endpoint)})", list(by_endpoint)):
        _learn_one(e, by_endpoint[e.id], settings, tau)


def _learn_one(
    e: Endpoint, results: Iterable[CallResult], settings: BreakerSettings, tau: float
) -> None:
    old = state = breaker_of(e)
    latency, latency_at = e.latency_ms, e.latency_at
    stats = _stats(e)
    paused_until = e.paused_until
    latency_tau = conf.LATENCY_TAU_S
    for r in sorted(results, key=lambda r: r.started_at):
        started = r.started_at.timestamp()
        ended = started + r.duration_ms / 1000
        if r.pause_s:
            paused_until = max(paused_until, ended + r.pause_s)
        if r.health is not None:
            state = breaker_record(state, r.health, ended, settings, started_at=started)
        if r.health is CallOutcome.SUCCESS:
            since = ended - (latency_at or ended)
            latency = ewma_update(latency, r.duration_ms, since, latency_tau)
            latency_at = ended
        failed = r.health is CallOutcome.FAILURE or r.http_status == 429
        stats = failure_record(stats, ended, tau, failed=failed)
    fields: dict[str, Any] = {
        "latency_ms": latency,
        "latency_at": latency_at,
        "recent_failures": stats.failures,
        "recent_calls": stats.calls,
        "recent_at": stats.updated_at,
        "paused_until": paused_until,
    }
    if state is not old:
        data = dataclasses.asdict(state)
        moved = {
            "breaker_version": data.pop("version"),
            "breaker": data,
            "breaker_state": state.phase.value,
        }
        # Someone else may have moved the breaker meanwhile (it is locked here, so only a
        # reset from the admin can): then its word stands, and only the stats are written.
        if _endpoint_update(e.pk, fields | moved, version=old.version):
            return
    _endpoint_update(e.pk, fields)


def _endpoint_update(pk: int, fields: dict[str, Any], *, version: int | None = None) -> int:
    # One row, but every step writes it: one statement written once (llmqueue.db.rows).
    where = ("id",) if version is None else ("id", "breaker_version")
    match = (pk,) if version is None else (pk, version)
    return rows_update(
        Endpoint, assign=tuple(fields), where=where, rows=[(*fields.values(), *match)]
    )


def breaker_after_health_pass(*, endpoint_id: int) -> bool:
    """A passing active health check ends a healthy endpoint's open breaker wait (half open
    now, probes decide). True if it moved the breaker. The compare-and-set loses only to a
    drain that moved the breaker meanwhile; then that drain's word stands."""
    rows = Endpoint.objects.filter(pk=endpoint_id, healthy=True, breaker_state=Phase.OPEN.value)
    e = rows.first()
    if e is None:
        return False
    old = breaker_of(e)
    new = breaker_health_passed(old, time.time())
    return new is not old and breaker_save(e.pk, old, new)


def breaker_reset(*, endpoint_ids: Iterable[int]) -> int:
    """Close the breakers of these endpoints now (an operator's decision)."""
    n = 0
    for e in Endpoint.objects.filter(pk__in=list(endpoint_ids)):
        old = breaker_of(e)
        n += breaker_save(e.pk, old, BreakerState(version=old.version + 1))
    return n
