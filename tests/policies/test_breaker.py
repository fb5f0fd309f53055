"""The circuit breaker's transitions, each at its boundary, over a fake clock."""

from __future__ import annotations

import pytest

from llmqueue.calls.types import CallOutcome, outcome_for_status
from llmqueue.policies.breaker import (
    BreakerSettings,
    BreakerState,
    Phase,
    breaker_allow,
    breaker_health_passed,
    breaker_record,
    breaker_retry_in,
    open_wait,
)

S, F, N = CallOutcome.SUCCESS, CallOutcome.FAILURE, CallOutcome.NEUTRAL
EPS = 1e-6
T0 = 1_000_000.0


def record(
    state: BreakerState,
    outcomes: list[CallOutcome],
    settings: BreakerSettings,
    now: float = T0,
) -> BreakerState:
    for outcome in outcomes:
        state = breaker_record(state, outcome, now, settings)
    return state


def tripped(settings: BreakerSettings, now: float = T0) -> BreakerState:
    state = record(BreakerState(), [F] * settings.failure_threshold, settings, now)
    assert state.phase is Phase.OPEN
    return state


def half_open(settings: BreakerSettings) -> tuple[BreakerState, float]:
    """A breaker that just moved to half open by granting its first probe, and that moment."""
    state = tripped(settings)
    assert state.open_until is not None
    allowed, state = breaker_allow(state, state.open_until, settings)
    assert allowed and state.phase is Phase.HALF_OPEN
    return state, state.open_until or 0.0


# -- closed -------------------------------------------------------------------------------


def test_threshold_minus_one_consecutive_failures_stays_closed() -> None:
    settings = BreakerSettings(failure_threshold=5)
    state = record(BreakerState(), [F] * 4, settings)
    assert state.phase is Phase.CLOSED
    assert state.consecutive_failures == 4
    assert breaker_allow(state, T0, settings) == (True, state)


def test_threshold_consecutive_failures_opens_for_the_base_wait() -> None:
    settings = BreakerSettings(failure_threshold=5, open_base_s=10.0)
    state = record(BreakerState(), [F] * 5, settings)
    assert state.phase is Phase.OPEN
    assert (state.opened_at, state.open_until, state.reopen_count) == (T0, T0 + 10.0, 0)


def test_a_success_resets_the_consecutive_count() -> None:
    settings = BreakerSettings(failure_threshold=3, window_size=100)
    state = record(BreakerState(), [F, F, S, F, F], settings)
    assert state.phase is Phase.CLOSED
    assert state.consecutive_failures == 2
    assert record(state, [F], settings).phase is Phase.OPEN


def test_rate_is_not_judged_before_the_window_is_full() -> None:
    # 10 failures in 19 calls is over 50%, but only 19 calls were seen.
    settings = BreakerSettings(failure_threshold=100, failure_rate=0.5, window_size=20)
    state = record(BreakerState(), [S, F] * 9 + [F], settings)
    assert len(state.window) == 19
    assert state.window.count("f") == 10
    assert state.phase is Phase.CLOSED


def test_rate_just_below_the_threshold_with_a_full_window_stays_closed() -> None:
    settings = BreakerSettings(failure_threshold=100, failure_rate=0.5, window_size=20)
    state = record(BreakerState(), [S] * 11 + [F] * 9, settings)
    assert len(state.window) == 20
    assert state.phase is Phase.CLOSED


def test_rate_at_the_threshold_with_a_full_window_opens() -> None:
    settings = BreakerSettings(failure_threshold=100, failure_rate=0.5, window_size=20)
    state = record(BreakerState(), [S] * 10 + [F] * 9, settings)
    assert state.phase is Phase.CLOSED  # 19 calls: rate not judged yet
    assert record(state, [F], settings).phase is Phase.OPEN  # 10 of 20 = 0.5


def test_rate_compares_exactly_at_awkward_fractions() -> None:
    settings = BreakerSettings(failure_threshold=100, failure_rate=0.3, window_size=20)
    state = record(BreakerState(), [S] * 14 + [F] * 5, settings)
    assert state.phase is Phase.CLOSED
    assert record(state, [F], settings).phase is Phase.OPEN  # 6 of 20 = 0.3


def test_the_window_slides_old_failures_out() -> None:
    settings = BreakerSettings(failure_threshold=100, failure_rate=0.5, window_size=4)
    state = record(BreakerState(), [F, S, S, S, S, F], settings)
    assert state.window == "sssf"
    assert state.phase is Phase.CLOSED


def test_neutral_outcomes_change_nothing_while_closed() -> None:
    settings = BreakerSettings(failure_threshold=3, window_size=3)
    state = record(BreakerState(), [F, F], settings)
    after = record(state, [N] * 50, settings)
    assert after is state
    # They did not break the streak of failures either, nor fill the window.
    assert record(after, [F], settings).phase is Phase.OPEN


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(None, F), (500, F), (503, F), (200, S), (204, S), (429, N), (400, N), (404, N)],
)
def test_outcome_for_status(status: int | None, outcome: CallOutcome) -> None:
    assert outcome_for_status(status) is outcome


# -- open ---------------------------------------------------------------------------------


def test_open_refuses_until_just_before_open_until() -> None:
    settings = BreakerSettings()
    state = tripped(settings)
    assert state.open_until is not None
    allowed, after = breaker_allow(state, state.open_until - EPS, settings)
    assert not allowed
    assert after is state
    assert breaker_retry_in(state, state.open_until - 4.0) == pytest.approx(4.0)


def test_at_open_until_the_first_caller_moves_to_half_open_with_a_probe() -> None:
    settings = BreakerSettings()
    state = tripped(settings)
    assert state.open_until is not None
    allowed, after = breaker_allow(state, state.open_until, settings)
    assert allowed
    assert after.phase is Phase.HALF_OPEN
    assert (after.probes_granted, after.probes_succeeded) == (1, 0)
    assert after.version == state.version + 1
    assert breaker_retry_in(after, state.open_until) == 0.0


def test_outcomes_while_open_are_ignored() -> None:
    settings = BreakerSettings()
    state = tripped(settings)
    for outcome in (S, F, N):
        assert breaker_record(state, outcome, T0 + 1, settings) is state


@pytest.mark.parametrize(
    ("reopen_count", "wait"),
    [(0, 10.0), (1, 20.0), (2, 40.0), (4, 160.0), (5, 300.0), (6, 300.0), (1000, 300.0)],
)
def test_open_wait_doubles_up_to_the_cap(reopen_count: int, wait: float) -> None:
    assert open_wait(reopen_count, BreakerSettings(open_base_s=10.0, open_cap_s=300.0)) == wait


# -- half open ----------------------------------------------------------------------------


def test_exactly_k_probes_are_granted() -> None:
    settings = BreakerSettings(half_open_probes=3)
    state, now = half_open(settings)
    grants = []
    for _ in range(10):
        allowed, state = breaker_allow(state, now, settings)
        grants.append(allowed)
    assert grants == [True, True] + [False] * 8  # the transition itself granted the first
    assert state.probes_granted == 3


def test_k_minus_one_successes_stay_half_open_and_k_close() -> None:
    settings = BreakerSettings(half_open_probes=3)
    state, now = half_open(settings)
    for _ in range(2):
        _, state = breaker_allow(state, now, settings)
    state = record(state, [S, S], settings, now)
    assert state.phase is Phase.HALF_OPEN
    state = record(state, [S], settings, now)
    assert state.phase is Phase.CLOSED
    assert state == BreakerState(version=state.version)  # closing forgets the past


def test_a_failure_in_half_open_reopens_with_doubled_wait() -> None:
    settings = BreakerSettings(open_base_s=10.0, open_cap_s=300.0)
    state, now = half_open(settings)
    state = breaker_record(state, F, now + 1, settings)
    assert state.phase is Phase.OPEN
    assert (state.reopen_count, state.open_until) == (1, now + 1 + 20.0)


def test_repeated_reopens_double_until_the_cap_and_closing_resets_it() -> None:
    settings = BreakerSettings(open_base_s=10.0, open_cap_s=50.0)
    state = tripped(settings)
    waits = []
    for _ in range(4):
        assert state.open_until is not None and state.opened_at is not None
        waits.append(state.open_until - state.opened_at)
        now = state.open_until
        _, state = breaker_allow(state, now, settings)
        state = breaker_record(state, F, now, settings)
    assert waits == [10.0, 20.0, 40.0, 50.0]
    assert state.open_until is not None
    _, state = breaker_allow(state, state.open_until, settings)
    state = breaker_record(state, S, state.open_until or 0.0, settings)
    assert state.phase is Phase.CLOSED
    state = tripped(settings, now=T0 + 10_000)
    assert state.open_until == T0 + 10_000 + 10.0  # back to the base wait


def test_closing_forgets_old_failures_in_the_window() -> None:
    settings = BreakerSettings(failure_threshold=2)
    state, now = half_open(settings)
    state = breaker_record(state, S, now, settings)
    assert state.phase is Phase.CLOSED
    assert record(state, [F], settings, now).phase is Phase.CLOSED


def test_a_neutral_probe_gives_its_place_back() -> None:
    settings = BreakerSettings(half_open_probes=1)
    state, now = half_open(settings)
    assert breaker_allow(state, now, settings)[0] is False
    state = breaker_record(state, N, now, settings)
    assert state.phase is Phase.HALF_OPEN
    allowed, state = breaker_allow(state, now, settings)
    assert allowed
    assert breaker_record(state, S, now, settings).phase is Phase.CLOSED


def test_a_lost_probe_is_granted_again_after_the_probe_timeout() -> None:
    settings = BreakerSettings(half_open_probes=1, probe_timeout_s=60.0)
    state, now = half_open(settings)
    assert breaker_allow(state, now + 60.0 - EPS, settings)[0] is False
    allowed, after = breaker_allow(state, now + 60.0, settings)
    assert allowed
    assert (after.phase, after.probes_granted) == (Phase.HALF_OPEN, 1)
    assert after.probe_granted_at == now + 60.0


def test_stragglers_from_before_the_trip_do_not_count_in_half_open() -> None:
    settings = BreakerSettings()
    state, now = half_open(settings)
    assert breaker_record(state, F, now + 1, settings, started_at=T0 - 5) is state
    assert breaker_record(state, S, now + 1, settings, started_at=T0 - 5) is state
    counted = breaker_record(state, S, now + 1, settings, started_at=now)
    assert counted.phase is Phase.CLOSED


def test_a_success_with_no_probe_out_is_not_counted() -> None:
    settings = BreakerSettings(half_open_probes=2)
    state, now = half_open(settings)
    state = breaker_record(state, S, now, settings)
    assert (state.phase, state.probes_succeeded) == (Phase.HALF_OPEN, 1)
    assert breaker_record(state, S, now, settings) is state  # only one probe was granted


# -- active health checks -----------------------------------------------------------------


def at_the_cap(settings: BreakerSettings) -> BreakerState:
    """A breaker whose probes failed until its open wait reached the cap, just reopened."""
    state = tripped(settings)
    while (state.open_until or 0.0) - (state.opened_at or 0.0) < settings.open_cap_s:
        now = state.open_until or 0.0
        allowed, state = breaker_allow(state, now, settings)
        assert allowed
        state = breaker_record(state, F, now, settings, started_at=now)
    assert state.phase is Phase.OPEN
    return state


def test_a_passing_check_moves_an_open_breaker_to_half_open_at_once() -> None:
    settings = BreakerSettings(open_base_s=10.0, open_cap_s=300.0, half_open_probes=2)
    state = at_the_cap(settings)
    assert state.reopen_count == 5 and state.opened_at is not None  # 10 * 2**5 > 300
    now = state.opened_at + 1.0
    assert breaker_allow(state, now, settings)[0] is False  # without the check: 299 s more
    after = breaker_health_passed(state, now)
    assert (after.phase, after.open_until, after.reopen_count) == (Phase.HALF_OPEN, now, 5)
    assert after.version == state.version + 1
    # its probes decide, as before: two go, a third waits
    allowed, after = breaker_allow(after, now, settings)
    assert allowed
    allowed, after = breaker_allow(after, now, settings)
    assert allowed
    assert breaker_allow(after, now, settings)[0] is False


def test_after_a_passing_check_probes_close_it_and_a_failed_probe_doubles_the_wait() -> None:
    settings = BreakerSettings(open_base_s=10.0, open_cap_s=300.0)
    capped = at_the_cap(settings)
    t = capped.opened_at or 0.0
    state = breaker_health_passed(capped, t + 1.0)
    _, probing = breaker_allow(state, t + 1.0, settings)
    closed = breaker_record(probing, S, t + 2.0, settings, started_at=t + 1.0)
    assert closed.phase is Phase.CLOSED
    reopened = breaker_record(probing, F, t + 2.0, settings, started_at=t + 1.0)
    assert (reopened.phase, reopened.open_until) == (Phase.OPEN, t + 2.0 + 300.0)


def test_calls_from_before_the_passing_check_do_not_count_as_probes() -> None:
    settings = BreakerSettings()
    capped = at_the_cap(settings)
    t = capped.opened_at or 0.0
    state = breaker_health_passed(capped, t + 1.0)
    _, probing = breaker_allow(state, t + 1.0, settings)
    assert breaker_record(probing, F, t + 2.0, settings, started_at=t + 0.5) is probing


@pytest.mark.parametrize("phase", ["closed", "half_open", "open_past_its_wait"])
def test_a_passing_check_changes_nothing_unless_the_breaker_waits(phase: str) -> None:
    settings = BreakerSettings()
    state = {
        "closed": BreakerState(),
        "half_open": half_open(settings)[0],
        "open_past_its_wait": tripped(settings),
    }[phase]
    now = T0 + 10.0  # tripped at T0 with a 10 s wait: its wait is over
    assert breaker_health_passed(state, now) is state


# -- versions -----------------------------------------------------------------------------


def test_every_change_bumps_the_version_and_no_change_keeps_it() -> None:
    settings = BreakerSettings(failure_threshold=2)
    state = BreakerState()
    versions = [state.version]
    for outcome in (S, F, N, F):
        state = breaker_record(state, outcome, T0, settings)
        versions.append(state.version)
    assert versions == [0, 1, 2, 2, 3]
    assert state.phase is Phase.OPEN


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"window_size": 0},
        {"half_open_probes": 0},
        {"failure_rate": 0.0},
        {"failure_rate": 1.5},
        {"open_base_s": 0.0},
        {"open_base_s": 20.0, "open_cap_s": 10.0},
        {"probe_timeout_s": 0.0},
    ],
)
def test_settings_refuse_values_that_cannot_work(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerSettings(**kwargs)  # type: ignore[arg-type]
