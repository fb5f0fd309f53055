"""Slows a guesser of API keys: wrong keys are counted per client address in Django's cache
(local memory on one host, Redis across a fleet), and an address past the limit is refused
with 429 until its window ends, whatever it sends.

A fixed window, not a bucket: the counter is one cache key per address and window, created
with the window's timeout, so it needs no cleanup and costs one cache call per failure.
"""

from __future__ import annotations

import time

from django.core.cache import cache
from django.http import HttpRequest

from llmqueue.conf import conf


def _window() -> tuple[int, int]:
    """This window's number and the seconds until it ends."""
    size = max(1, int(conf.KEY_FAILURE_WINDOW_S))
    now = int(time.time())
    return now // size, size - now % size


def _counter(address: str, window: int) -> str:
    return f"llmqueue:key-failures:{address}:{window}"


def client_address(request: HttpRequest) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is the client's to forge. Behind a proxy, the proxy
    # should set REMOTE_ADDR (e.g. uvicorn's --proxy-headers with --forwarded-allow-ips).
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def key_guessing_wait(*, address: str) -> int | None:
    """Seconds ``address`` must wait before it may try a key again, or None if it may."""
    window, remaining = _window()
    failures = cache.get(_counter(address, window), 0)
    return remaining if failures >= conf.KEY_FAILURES_PER_WINDOW else None


def key_failure_record(*, address: str) -> None:
    """Count one wrong key from ``address``."""
    window, remaining = _window()
    counter = _counter(address, window)
    # add() then incr(): atomic on Redis and in local memory; the timeout ends the window.
    if not cache.add(counter, 1, timeout=remaining + 1):
        try:
            cache.incr(counter)
        except ValueError:  # expired between the two calls: this failure starts it again
            cache.add(counter, 1, timeout=remaining + 1)
