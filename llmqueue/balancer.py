"""Endpoint selection: which endpoint of a model's pool takes the next job.

Pure: the caller passes a snapshot of the pool (endpoints that are enabled, healthy and have
room), this module keeps only its own rotation state. Today: round robin per model.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Candidate(Protocol):
    id: int


C = TypeVar("C", bound=Candidate)


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


_default = RoundRobin()


def endpoint_pick(model: str, pool: Sequence[C]) -> C | None:
    """The endpoint of ``pool`` that takes the next job for ``model``, or None if it is empty."""
    return _default.pick(model, pool)
