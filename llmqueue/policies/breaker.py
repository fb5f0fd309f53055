"""Circuit breaker per endpoint, kept as data.

A breaker stands between the queue and one endpoint and remembers how recent calls went::

               failures reach the threshold
    CLOSED ---------------------------------> OPEN
      ^                                        |  the wait is over: the next allow()
      |  K probe successes                     v  moves on and grants the first probe
      +------------------------------------ HALF_OPEN
                                               |  any probe failure: OPEN again,
                                               +  with twice the wait (up to a cap)

An active health check that passes while the breaker is open ends the wait at once
(``breaker_health_passed``: OPEN -> HALF_OPEN, as Envoy's
``successful_active_health_check_uneject_host``): the probes decide as before, and the
doubled wait only spaces probes while the endpoint still fails its checks.

*Closed*: calls flow. The breaker trips on either of two signs: ``failure_threshold``
consecutive failures (a dead endpoint), or a failure rate of at least ``failure_rate`` over
the last ``window_size`` calls (a sick one that still answers some), the rate being judged
only once the window is full, as in Resilience4j's minimum number of calls.
*Open*: calls are refused without being tried until ``open_until``, so a failing endpoint
gets room to recover and jobs go elsewhere instead of spending their attempts.
*Half open*: at most ``half_open_probes`` calls are let through; if all of them succeed the
breaker closes and forgets the past, if one fails it opens again for twice as long.

Outcomes come in three kinds. Connect errors, timeouts and 5xx are *failures*. A 429 says
"slower", not "broken", and any other 4xx is the request's own fault: both are *neutral*.
They neither trip nor heal the breaker and take no place in the window, so a burst of 429s
can neither open an endpoint nor dilute its failure rate.

Unlike pybreaker, which keeps the state in an object with a storage behind it, this module
is only pure functions from a ``BreakerState`` to the next one, over an explicit clock
(``now``, seconds since the epoch, shared by every machine). The storage loads a state,
calls one function, and writes the result back with a compare-and-set on ``version``
(``filter(pk=..., breaker_version=old.version).update(...)``); if that update matched no
row, another process moved first: load again and decide again. A function that changes
nothing returns the very state it was given, whose version is unchanged: nothing to write.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from llmqueue.calls.types import CallOutcome


class Phase(enum.StrEnum):
    #: calls flow; failures are counted
    CLOSED = "closed"
    #: calls are refused until ``open_until``
    OPEN = "open"
    #: a few probe calls decide between closing and opening again
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int = 5
    failure_rate: float = 0.5
    window_size: int = 20
    open_base_s: float = 10.0
    open_cap_s: float = 300.0
    half_open_probes: int = 1
    #: a probe with no outcome after this long is presumed lost (its worker died) and its
    #: place is granted again; keep it above the endpoint's call timeout
    probe_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.window_size < 1 or self.half_open_probes < 1:
            raise ValueError("failure_threshold, window_size and half_open_probes must be >= 1")
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if not 0.0 < self.open_base_s <= self.open_cap_s:
            raise ValueError("need 0 < open_base_s <= open_cap_s")
        if self.probe_timeout_s <= 0:
            raise ValueError("probe_timeout_s must be > 0")


#: the window's letters: one per counted call, oldest first
_SUCCESS, _FAILURE = "s", "f"


@dataclass(frozen=True, slots=True)
class BreakerState:
    phase: Phase = Phase.CLOSED
    consecutive_failures: int = 0
    #: the last ``window_size`` counted calls, oldest first, as "s" and "f" (readable in admin)
    window: str = ""
    opened_at: float | None = None
    open_until: float | None = None
    #: how many times in a row the breaker opened without closing in between (0 = first trip)
    reopen_count: int = 0
    probes_granted: int = 0
    probes_succeeded: int = 0
    #: when the last probe was granted, to notice probes whose outcome never comes
    probe_granted_at: float | None = None
    version: int = 0


def open_wait(reopen_count: int, settings: BreakerSettings) -> float:
    """Seconds the breaker stays open after its ``reopen_count``-th consecutive re-open."""
    # 2**n overflows a float long after it passes any sane cap: stop doubling there.
    if reopen_count >= 64:
        return settings.open_cap_s
    return min(settings.open_cap_s, settings.open_base_s * 2.0**reopen_count)


def breaker_allow(
    state: BreakerState, now: float, settings: BreakerSettings
) -> tuple[bool, BreakerState]:
    """May a call go to the endpoint now? Returns the answer and the state to write back.

    Closed: yes, and nothing changes. Open: no until ``open_until``; from then on the first
    caller moves the breaker to half open and carries the first probe. Half open: yes while
    fewer than ``half_open_probes`` probes are out, no after that. A granted probe is
    written state: the caller must win its compare-and-set before making the call.
    """
    if state.phase is Phase.CLOSED:
        return True, state
    if state.phase is Phase.OPEN:
        if state.open_until is not None and now < state.open_until:
            return False, state
        return True, _changed(
            state,
            phase=Phase.HALF_OPEN,
            probes_granted=1,
            probes_succeeded=0,
            probe_granted_at=now,
        )
    if state.probes_granted < settings.half_open_probes:
        return True, _changed(state, probes_granted=state.probes_granted + 1, probe_granted_at=now)
    granted_at = state.probe_granted_at
    lost = granted_at is None or now >= granted_at + settings.probe_timeout_s
    if lost and state.probes_succeeded < state.probes_granted:
        # The outstanding probes never reported: their workers died or lost their lease.
        # Without this the breaker would wait in half open forever for an answer.
        return True, _changed(
            state, probes_granted=state.probes_succeeded + 1, probe_granted_at=now
        )
    return False, state


def breaker_record(
    state: BreakerState,
    outcome: CallOutcome,
    now: float,
    settings: BreakerSettings,
    *,
    started_at: float | None = None,
) -> BreakerState:
    """The state after a call that ended with ``outcome``.

    Pass ``started_at`` when known: a call that started before the breaker opened ends
    later, and its outcome says nothing about the probes, so while open or half open such
    stragglers are ignored. While open every outcome is ignored: no call was allowed.
    """
    if state.phase is Phase.OPEN:
        return state
    if state.phase is Phase.HALF_OPEN:
        straggler = (
            started_at is not None
            and state.open_until is not None
            and (started_at < state.open_until)
        )
        return state if straggler else _record_half_open(state, outcome, now, settings)
    if outcome is CallOutcome.NEUTRAL:
        return state
    if outcome is CallOutcome.SUCCESS:
        window = (state.window + _SUCCESS)[-settings.window_size :]
        return _changed(state, consecutive_failures=0, window=window)
    window = (state.window + _FAILURE)[-settings.window_size :]
    consecutive = state.consecutive_failures + 1
    if consecutive >= settings.failure_threshold or _rate_tripped(window, settings):
        return _opened(state, now, reopen_count=0, settings=settings)
    return _changed(state, consecutive_failures=consecutive, window=window)


def breaker_health_passed(state: BreakerState, now: float) -> BreakerState:
    """The state after an active health check passed: an open breaker moves to half open now.

    Without this an endpoint that was down long enough for its wait to reach the cap would
    sit out up to that cap after it came back, though its checks already say it is up. The
    wait is cut short (``open_until = now``), so calls that started before now still count
    as stragglers and not as probes; ``reopen_count`` is kept, so a probe that fails opens
    the breaker for the doubled wait again. Any other phase is left as it is.
    """
    if state.phase is not Phase.OPEN or (state.open_until is not None and now >= state.open_until):
        # Closed or half open: nothing to end. Open but past its wait: the next allow()
        # grants a probe anyway.
        return state
    return _changed(
        state,
        phase=Phase.HALF_OPEN,
        open_until=now,
        probes_granted=0,
        probes_succeeded=0,
        probe_granted_at=None,
    )


def breaker_retry_in(state: BreakerState, now: float) -> float:
    """Seconds until an open breaker lets a probe through; 0 when it is not open."""
    if state.phase is not Phase.OPEN or state.open_until is None:
        return 0.0
    return max(0.0, state.open_until - now)


def _record_half_open(
    state: BreakerState, outcome: CallOutcome, now: float, settings: BreakerSettings
) -> BreakerState:
    if outcome is CallOutcome.FAILURE:
        return _opened(state, now, reopen_count=state.reopen_count + 1, settings=settings)
    if outcome is CallOutcome.NEUTRAL:
        # A probe answered 429 proved nothing; give its place back so another probe can go,
        # or with one probe the breaker would be stuck waiting for a success.
        if state.probes_granted > state.probes_succeeded:
            return _changed(state, probes_granted=state.probes_granted - 1)
        return state
    if state.probes_succeeded >= state.probes_granted:
        return state  # a success no probe accounts for: not ours to count
    succeeded = state.probes_succeeded + 1
    if succeeded >= settings.half_open_probes:
        # Closing forgets the past: failures from before the trip must not re-trip it.
        return BreakerState(version=state.version + 1)
    return _changed(state, probes_succeeded=succeeded)


def _rate_tripped(window: str, settings: BreakerSettings) -> bool:
    if len(window) < settings.window_size:
        return False
    # A ratio against the setting, not a product: 6 / 20 >= 0.3 holds, 6 >= 0.3 * 20 does not.
    return window.count(_FAILURE) / len(window) >= settings.failure_rate


def _opened(
    state: BreakerState, now: float, *, reopen_count: int, settings: BreakerSettings
) -> BreakerState:
    return BreakerState(
        phase=Phase.OPEN,
        opened_at=now,
        open_until=now + open_wait(reopen_count, settings),
        reopen_count=reopen_count,
        version=state.version + 1,
    )


def _changed(state: BreakerState, **fields: Any) -> BreakerState:
    return dataclasses.replace(state, version=state.version + 1, **fields)
