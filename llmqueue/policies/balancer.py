"""Endpoint selection: which endpoint of a model's pool takes the next job.

Pure: the caller passes a snapshot of the pool (endpoints that are enabled, healthy, whose
breaker allows and that have room), and a strategy keeps only its own rotation state, in
this process. Four strategies, by the names ``strategy_for`` knows them:

round_robin
    Each endpoint in turn, weights ignored. The default of ``endpoint_pick`` today.
weighted_round_robin
    nginx's smooth weighted round robin: in every cycle of ``sum(weights)`` picks each
    endpoint gets exactly its weight, spread out rather than in runs.
least_in_flight
    The power of two random choices: draw two endpoints, take the one with more weight per
    call in flight. Nearly as good as asking every endpoint, without the herd.
latency
    Peak-EWMA, as in Finagle and Linkerd: the endpoint with the lowest expected wait,
    ``latency * (in_flight + 1)``, made worse by its recent share of failures and 429s,
    between two random choices.

The choices are random where the snapshot may be stale: every drain of the fleet picks from
its own snapshot, and a rule that always takes the single best endpoint would send every
drain's burst to the same one at once. Two random choices still steer clear of the worst
(Mitzenmacher, *The Power of Two Choices in Randomized Load Balancing*).

An endpoint of weight 0 takes no new jobs under the weighted strategies (it is draining).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from llmqueue.errors import ConfigurationError


class Candidate(Protocol):
    @property
    def id(self) -> int: ...


class Snapshot(Candidate, Protocol):
    """What the weighted strategies read about an endpoint at the moment of picking."""

    @property
    def weight(self) -> int: ...

    #: calls it is serving now, across the fleet
    @property
    def in_flight(self) -> int: ...

    #: peak-EWMA of its successful calls' durations (``ewma_update``); None before the first
    @property
    def ewma_latency_ms(self) -> float | None: ...

    #: share of its recent calls that failed or got a 429 (``failure_ratio``), in [0, 1)
    @property
    def failure_ratio(self) -> float: ...


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    """A plain ``Snapshot``, for the storage layer to build from a row."""

    id: int
    weight: int = 1
    in_flight: int = 0
    ewma_latency_ms: float | None = None
    failure_ratio: float = 0.0


C = TypeVar("C", bound=Candidate)
S = TypeVar("S", bound=Snapshot)


class Strategy(Protocol):
    def pick(self, model: str, pool: Sequence[S]) -> S | None:
        """The endpoint of ``pool`` that takes the next job for ``model``; None if none can."""
        ...


def ewma_update(prev: float | None, sample: float, dt: float, tau: float) -> float:
    """Peak-EWMA: jump up to a slower sample at once, decay toward faster ones over ``tau``.

    ``dt`` is the time since ``prev`` was updated, in the unit of ``tau``. The average
    forgets at ``exp(-dt / tau)``, so it follows the clock and not the call count: a burst
    of fast answers in one instant cannot erase a slow one, and one slow answer is believed
    at once, because a slowing endpoint is the one to stop sending to quickly.
    """
    if prev is None or sample >= prev:
        return sample
    keep = math.exp(-max(dt, 0.0) / tau)
    return prev * keep + sample * (1.0 - keep)


@dataclass(frozen=True, slots=True)
class FailureStats:
    """Recent calls and failures of an endpoint, each count fading by ``exp(-dt / tau)``."""

    failures: float = 0.0
    calls: float = 0.0
    updated_at: float = 0.0


def failure_record(stats: FailureStats, now: float, tau: float, *, failed: bool) -> FailureStats:
    """The stats after one more call; ``failed`` for a connect error, timeout, 5xx or 429."""
    keep = math.exp(-max(now - stats.updated_at, 0.0) / tau)
    return FailureStats(
        failures=stats.failures * keep + (1.0 if failed else 0.0),
        calls=stats.calls * keep + 1.0,
        updated_at=max(now, stats.updated_at),
    )


def failure_ratio(stats: FailureStats, now: float, tau: float) -> float:
    """The share of recent calls that failed, as seen at ``now``; always below 1.

    One imagined success is added to the calls: a single failure reads as 1/2, not as
    certain doom, and as both counts fade with time, the ratio fades with them, so an
    endpoint that failed and then got no traffic is tried again rather than shunned forever.
    """
    keep = math.exp(-max(now - stats.updated_at, 0.0) / tau)
    return stats.failures * keep / (stats.calls * keep + 1.0)


class RoundRobin:
    """Round robin over a pool, per model; a pool that changes keeps its place by position."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    def pick(self, model: str, pool: Sequence[C]) -> C | None:
        if not pool:
            return None
        counter = self._counters.setdefault(model, itertools.count())
        ordered = sorted(pool, key=lambda c: c.id)
        return ordered[next(counter) % len(ordered)]


class WeightedRoundRobin:
    """nginx's smooth weighted round robin, per model.

    Each pick adds every endpoint's weight to its running score, takes the highest score,
    and takes the total weight off the winner. Scores always sum to zero, so the winner's
    score was at least zero and stays above ``-total``: no prefix of ``k`` picks gives an
    endpoint more than ``ceil(k * weight / total)``, and every cycle of ``total`` picks
    gives each exactly its weight.
    """

    def __init__(self) -> None:
        self._scores: dict[str, dict[int, int]] = {}

    def pick(self, model: str, pool: Sequence[S]) -> S | None:
        eligible = sorted((c for c in pool if c.weight > 0), key=lambda c: c.id)
        if not eligible:
            return None
        old = self._scores.get(model, {})
        # Endpoints that left the pool take their scores with them; newcomers start at 0.
        scores = {c.id: old.get(c.id, 0) + c.weight for c in eligible}
        best = max(eligible, key=lambda c: scores[c.id])  # ties: the lowest id, as listed
        scores[best.id] -= sum(c.weight for c in eligible)
        self._scores[model] = scores
        return best


class LeastInFlight:
    """Two random choices; the one with more weight per call in flight (plus the new one)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, model: str, pool: Sequence[S]) -> S | None:
        return _best_of_two(pool, self._rng, lambda c: -c.weight / (c.in_flight + 1))


class PeakEwma:
    """Two random choices; the one where a new job would expect to wait least.

    Its cost is ``(latency + failure_cost_ms * r / (1 - r)) * (in_flight + 1) / weight``, ``r``
    being the failure ratio: ``r / (1 - r)`` failed attempts are expected per success, and
    each costs the job a retry's backoff, not the few milliseconds the failure took. Counted
    as latency, fast failures would make a broken endpoint look like the best one. An
    endpoint with no latency yet is taken to be as fast as the pool's average, so a newcomer
    is tried without being flooded.
    """

    def __init__(
        self, rng: random.Random | None = None, *, failure_cost_ms: float = 1000.0
    ) -> None:
        self._rng = rng or random.Random()
        # About what a retry costs a job: the first backoff is up to BACKOFF_BASE_S (1 s).
        self._failure_cost_ms = failure_cost_ms

    def pick(self, model: str, pool: Sequence[S]) -> S | None:
        known = [c.ewma_latency_ms for c in pool if c.ewma_latency_ms is not None]
        average = sum(known) / len(known) if known else 1.0

        def cost(c: Snapshot) -> float:
            latency = average if c.ewma_latency_ms is None else c.ewma_latency_ms
            ratio = min(c.failure_ratio, 0.999)
            failing = self._failure_cost_ms * ratio / (1.0 - ratio)
            return (latency + failing) * (c.in_flight + 1) / c.weight

        return _best_of_two(pool, self._rng, cost)


def _best_of_two(
    pool: Sequence[S], rng: random.Random, cost: Callable[[Snapshot], float]
) -> S | None:
    eligible = sorted((c for c in pool if c.weight > 0), key=lambda c: c.id)
    if len(eligible) <= 1:
        return eligible[0] if eligible else None
    first, second = rng.sample(eligible, 2)
    return second if cost(second) < cost(first) else first


STRATEGIES: dict[str, Callable[[random.Random | None], Strategy]] = {
    "round_robin": lambda rng: RoundRobin(),
    "weighted_round_robin": lambda rng: WeightedRoundRobin(),
    "least_in_flight": LeastInFlight,
    "latency": PeakEwma,
}


def strategy_for(name: str, *, rng: random.Random | None = None) -> Strategy:
    """A new strategy by name; ``rng`` seeds the random ones (tests, simulations)."""
    try:
        make = STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ConfigurationError(f"unknown balancer strategy {name!r}; known: {known}") from None
    return make(rng)


_default = RoundRobin()


def endpoint_pick(model: str, pool: Sequence[C]) -> C | None:
    """The endpoint of ``pool`` that takes the next job for ``model``, or None if it is empty."""
    return _default.pick(model, pool)
