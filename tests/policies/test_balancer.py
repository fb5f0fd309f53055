"""Balancer strategies: exact weighted shares, two random choices, and peak-EWMA in a small
simulation over a fake clock."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from llmqueue.errors import ConfigurationError
from llmqueue.policies.balancer import (
    EndpointLoad,
    FailureStats,
    LeastInFlight,
    PeakEwma,
    RoundRobin,
    Strategy,
    WeightedRoundRobin,
    endpoint_pick,
    ewma_update,
    failure_ratio,
    failure_record,
    strategy_for,
)


def picks(strategy: Strategy, pool: list[EndpointLoad], n: int, model: str = "m") -> list[int]:
    chosen = []
    for _ in range(n):
        c = strategy.pick(model, pool)
        assert c is not None
        chosen.append(c.id)
    return chosen


# -- every strategy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["round_robin", "weighted_round_robin", "least_in_flight", "latency"]
)
def test_an_empty_pool_gets_none(name: str) -> None:
    assert strategy_for(name, rng=random.Random(0)).pick("m", []) is None


@pytest.mark.parametrize("name", ["weighted_round_robin", "least_in_flight", "latency"])
def test_weighted_strategies_skip_weight_zero(name: str) -> None:
    strategy = strategy_for(name, rng=random.Random(0))
    assert strategy.pick("m", [EndpointLoad(1, weight=0)]) is None
    pool = [EndpointLoad(1, weight=0), EndpointLoad(2), EndpointLoad(3, weight=0)]
    assert set(picks(strategy, pool, 50)) == {2}


def test_strategy_for_knows_four_names_and_refuses_others() -> None:
    assert isinstance(strategy_for("round_robin"), RoundRobin)
    assert isinstance(strategy_for("weighted_round_robin"), WeightedRoundRobin)
    assert isinstance(strategy_for("least_in_flight"), LeastInFlight)
    assert isinstance(strategy_for("latency"), PeakEwma)
    with pytest.raises(ConfigurationError, match="least_in_flight"):
        strategy_for("fastest")


@dataclass
class Slot:
    """Like the claim's slot: an id and nothing the weighted strategies need."""

    id: int
    room: int = 1


def test_endpoint_pick_still_rotates_over_bare_slots() -> None:
    pool = [Slot(3), Slot(1), Slot(2)]
    chosen = [endpoint_pick("rotation-test", pool) for _ in range(6)]
    assert [c.id for c in chosen if c is not None] == [1, 2, 3, 1, 2, 3]
    assert endpoint_pick("rotation-test", []) is None


# -- weighted round robin ---------------------------------------------------------------------


def test_wrr_gives_exact_shares_in_every_cycle_spread_out() -> None:
    pool = [EndpointLoad(1, weight=1), EndpointLoad(2, weight=2), EndpointLoad(3, weight=3)]
    chosen = picks(WeightedRoundRobin(), pool, 6 * 5)
    for cycle in range(5):
        assert Counter(chosen[cycle * 6 : cycle * 6 + 6]) == {1: 1, 2: 2, 3: 3}
    # Smooth: the heaviest is interleaved with the others, never three in a row.
    assert chosen[:6] == [3, 2, 1, 3, 2, 3]


@pytest.mark.parametrize("seed", range(30))
def test_wrr_never_gets_ahead_of_its_share_in_any_prefix(seed: int) -> None:
    rng = random.Random(seed)
    pool = [EndpointLoad(i, weight=rng.randint(1, 9)) for i in range(rng.randint(1, 6))]
    total = sum(c.weight for c in pool)
    chosen = picks(WeightedRoundRobin(), pool, 3 * total)
    counts: Counter[int] = Counter()
    for k, endpoint_id in enumerate(chosen, start=1):
        counts[endpoint_id] += 1
        for c in pool:
            assert counts[c.id] <= math.ceil(k * c.weight / total)
        if k % total == 0:
            assert all(counts[c.id] == c.weight * k // total for c in pool)


def test_wrr_keeps_state_per_model_and_follows_pool_changes() -> None:
    wrr = WeightedRoundRobin()
    pool = [EndpointLoad(1, weight=1), EndpointLoad(2, weight=1)]
    assert picks(wrr, pool, 1, model="a") == [1]
    assert picks(wrr, pool, 1, model="b") == [1]
    grown = [*pool, EndpointLoad(3, weight=2)]
    assert Counter(picks(wrr, grown, 8, model="a")) == {1: 2, 2: 2, 3: 4}


# -- least in flight --------------------------------------------------------------------------


def test_p2c_never_picks_the_most_loaded_and_splits_the_rest_by_draws() -> None:
    pool = [
        EndpointLoad(1, in_flight=10),
        EndpointLoad(2, in_flight=0),
        EndpointLoad(3, in_flight=5),
    ]
    counts = Counter(picks(LeastInFlight(random.Random(7)), pool, 3000))
    assert counts[1] == 0
    # 2 wins each pair it is in (2 of 3 pairs), 3 wins only the pair {1, 3}.
    assert counts[2] / 3000 == pytest.approx(2 / 3, abs=0.04)
    assert counts[3] / 3000 == pytest.approx(1 / 3, abs=0.04)


def test_p2c_prefers_weight_per_call_in_flight() -> None:
    strategy = LeastInFlight(random.Random(1))
    assert set(picks(strategy, [EndpointLoad(1, weight=1), EndpointLoad(2, weight=3)], 50)) == {2}
    busy_heavy = [EndpointLoad(1, weight=1, in_flight=0), EndpointLoad(2, weight=3, in_flight=5)]
    assert set(picks(strategy, busy_heavy, 50)) == {1}  # 1/1 beats 3/6


def test_p2c_with_a_seed_is_repeatable() -> None:
    pool = [EndpointLoad(i, in_flight=i % 3) for i in range(6)]
    assert picks(LeastInFlight(random.Random(5)), pool, 40) == picks(
        LeastInFlight(random.Random(5)), pool, 40
    )


# -- peak EWMA --------------------------------------------------------------------------------


def test_ewma_jumps_to_a_slower_sample_and_decays_toward_faster_ones_over_time() -> None:
    assert ewma_update(None, 80.0, 0.0, 10.0) == 80.0
    assert ewma_update(20.0, 80.0, 0.0, 10.0) == 80.0
    assert ewma_update(80.0, 20.0, 0.0, 10.0) == 80.0  # no time passed: nothing forgotten
    assert ewma_update(80.0, 20.0, 10.0, 10.0) == pytest.approx(20 + 60 / math.e)
    assert ewma_update(80.0, 20.0, 1e6, 10.0) == pytest.approx(20.0)


def test_failure_ratio_counts_recent_calls_and_fades_with_time() -> None:
    stats = FailureStats()
    assert failure_ratio(stats, 0.0, 10.0) == 0.0
    stats = failure_record(stats, 0.0, 10.0, failed=True)
    assert failure_ratio(stats, 0.0, 10.0) == 0.5  # one failure, one imagined success
    for _ in range(8):
        stats = failure_record(stats, 0.0, 10.0, failed=True)
    assert failure_ratio(stats, 0.0, 10.0) == pytest.approx(0.9)
    for _ in range(9):
        stats = failure_record(stats, 0.0, 10.0, failed=False)
    assert failure_ratio(stats, 0.0, 10.0) == pytest.approx(9 / 19)
    # Untouched, it fades toward zero: the endpoint gets tried again.
    assert failure_ratio(stats, 100.0, 10.0) < 0.01
    # A record from a clock slightly behind does not run time backwards.
    assert failure_record(stats, -5.0, 10.0, failed=False).updated_at == 0.0


@dataclass
class SimEndpoint:
    """An endpoint in the simulation: the balancer's view of it, and how it really behaves."""

    id: int
    service_ms: float
    failure_rate: float = 0.0
    fail_ms: float = 1.0
    weight: int = 1
    in_flight: int = 0
    ewma_latency_ms: float | None = None
    latency_at: float = 0.0
    failures: FailureStats = field(default_factory=FailureStats)


def simulate(
    strategy: Strategy,
    endpoints: list[SimEndpoint],
    *,
    arrivals: int = 5000,
    gap_ms: float = 2.0,
    tau_ms: float = 1000.0,
    failures_as_latency: bool = False,
    seed: int = 0,
) -> list[int]:
    """Jobs arrive every ``gap_ms``; each goes where ``strategy`` says, and what comes back
    feeds that endpoint's EWMA and failure stats as the storage layer will. Returns the
    picks. ``failures_as_latency`` is the mistake to avoid: failures fed into the EWMA."""
    rng = random.Random(seed)
    by_id = {e.id: e for e in endpoints}
    done: list[tuple[float, int, int, float, bool]] = []  # (at, seq, id, duration, failed)
    chosen = []
    for seq in range(arrivals):
        now = seq * gap_ms
        while done and done[0][0] <= now:
            at, _, endpoint_id, duration, failed = heapq.heappop(done)
            e = by_id[endpoint_id]
            e.in_flight -= 1
            if not failed or failures_as_latency:
                dt = at - e.latency_at
                e.ewma_latency_ms = ewma_update(e.ewma_latency_ms, duration, dt, tau_ms)
                e.latency_at = at
            if not failures_as_latency:
                e.failures = failure_record(e.failures, at, tau_ms, failed=failed)
        snapshot = [
            EndpointLoad(
                e.id,
                e.weight,
                e.in_flight,
                e.ewma_latency_ms,
                failure_ratio(e.failures, now, tau_ms),
            )
            for e in endpoints
        ]
        pick = strategy.pick("m", snapshot)
        assert pick is not None
        e = by_id[pick.id]
        e.in_flight += 1
        failed = rng.random() < e.failure_rate
        duration = e.fail_ms if failed else e.service_ms
        heapq.heappush(done, (now + duration, seq, e.id, duration, failed))
        chosen.append(e.id)
    return chosen


def share(chosen: list[int], endpoint_id: int) -> float:
    return chosen.count(endpoint_id) / len(chosen)


def test_latency_sends_little_to_an_endpoint_ten_times_slower() -> None:
    endpoints = [SimEndpoint(1, service_ms=10.0), SimEndpoint(2, service_ms=100.0)]
    chosen = simulate(PeakEwma(random.Random(1)), endpoints)
    assert share(chosen, 2) < 0.15
    # Round robin, for contrast, gives it half.
    rr = simulate(RoundRobin(), [SimEndpoint(1, 10.0), SimEndpoint(2, 100.0)])
    assert share(rr, 2) == pytest.approx(0.5)


def test_latency_among_three_spreads_over_the_fast_ones() -> None:
    endpoints = [SimEndpoint(1, 10.0), SimEndpoint(2, 100.0), SimEndpoint(3, 10.0)]
    chosen = simulate(PeakEwma(random.Random(2)), endpoints, gap_ms=1.0)
    assert share(chosen, 2) < 0.15
    assert min(share(chosen, 1), share(chosen, 3)) > 0.3


def test_latency_moves_away_from_an_endpoint_that_slows_down() -> None:
    endpoints = [SimEndpoint(1, 10.0), SimEndpoint(2, 30.0)]
    strategy = PeakEwma(random.Random(3))
    before = simulate(strategy, endpoints, arrivals=2000)
    endpoints[0].service_ms = 300.0  # the simulation goes on from where it was
    after = simulate(strategy, endpoints, arrivals=2000, seed=1)
    assert share(before, 1) > 0.6
    assert share(after, 1) < 0.15


def test_a_fast_failing_endpoint_loses_its_traffic() -> None:
    def pool() -> list[SimEndpoint]:
        return [SimEndpoint(1, 10.0, failure_rate=0.5, fail_ms=1.0), SimEndpoint(2, 50.0)]

    # Mistaking its quick failures for quick answers, the balancer would favour it...
    naive = simulate(PeakEwma(random.Random(4)), pool(), gap_ms=5.0, failures_as_latency=True)
    assert share(naive, 1) > 0.8
    # ...counted as failures, each costing a retry, they lose it the traffic, as long as the
    # healthy endpoint's queue costs less than a retry (10 in flight at 50 ms, against 1 s).
    chosen = simulate(PeakEwma(random.Random(4)), pool(), gap_ms=5.0)
    assert share(chosen, 1) < 0.05


def test_an_endpoint_that_stops_failing_wins_its_traffic_back() -> None:
    endpoints = [SimEndpoint(1, 10.0, failure_rate=1.0), SimEndpoint(2, 50.0)]
    strategy = PeakEwma(random.Random(5))
    failing = simulate(strategy, endpoints, arrivals=3000)
    endpoints[0].failure_rate = 0.0
    healed = simulate(strategy, endpoints, arrivals=3000, seed=1)
    assert share(failing, 1) < 0.05
    assert share(healed[-1000:], 1) > 0.6


def test_least_in_flight_in_simulation_favours_the_heavier_endpoint() -> None:
    endpoints = [SimEndpoint(1, 20.0, weight=1), SimEndpoint(2, 20.0, weight=3)]
    chosen = simulate(LeastInFlight(random.Random(6)), endpoints, gap_ms=1.0)
    assert share(chosen, 2) > 0.65
