"""Long-running tasks: the slots that bound how many run, and how they stop.

Slots: how many long-running tasks of a kind may run, held by heartbeat.

A drain takes one of its host's ``DRAINS_PER_HOST`` slots; the health checker takes the one
slot of the fleet. A slot is free when nobody holds it, when its holder's heartbeat is older
than ``SLOT_STALE_S`` (the holder hung or its machine died), or when its holder was a process
of this very host that no longer runs (a crash: no need to wait for the heartbeat to age).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import multiprocessing
import os
import secrets
import signal
import socket
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from multiprocessing.synchronize import Event
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from llmqueue.conf import conf
from llmqueue.jobs import jobs_reap
from llmqueue.models import DrainSlot

#: the health checker's slot: one for the whole fleet, whatever host holds it
HEALTH_HOST = "@health"


#: hex characters of an owner's tag (the lease tokens' prefix): 48 random bits, so that no two
#: drains that ever ran share one
TAG_LENGTH = 12
#: set by ``llmqueue_worker`` when its cluster stops; its worker processes inherit it (fork)
_cluster_stopping: Event | None = None


def host_name() -> str:
    """The host whose drain slots this process takes: ``HOST_NAME``, else the machine's."""
    return conf.HOST_NAME or socket.gethostname()


@functools.cache
def machine_key() -> str:
    """Where this process's pid means something: the machine (its host name and boot) and
    the pid namespace (containers on one machine each have their own), hashed to 8
    characters so that an owner fits its column. The real machine, whatever HOST_NAME says."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux: no pid is ever judged dead (heartbeats decide)
        boot, namespace = secrets.token_hex(8), 0
    seed = f"{socket.gethostname()}/{boot}/{namespace}"
    return hashlib.sha256(seed.encode()).hexdigest()[:8]


def slot_owner() -> str:
    """A holder name for this process, at most 29 characters: its pid and ``machine_key()``
    (for the crash check) and a random tag that prefixes its leases."""
    return f"{os.getpid()}-{machine_key()}-{secrets.token_hex(TAG_LENGTH // 2)}"


def owner_tag(owner: str) -> str:
    """The random part of an owner: the prefix of every lease token its drain takes. Empty
    for an owner from before tags (its tokens are all random: its claims wait for their
    leases)."""
    tag = owner.rsplit("-", 1)[-1]
    return tag if len(tag) == TAG_LENGTH else ""


def cluster_stopping() -> Event:
    """The event a stopping cluster sets; made before the cluster forks its processes."""
    global _cluster_stopping
    if _cluster_stopping is None:
        _cluster_stopping = multiprocessing.get_context("fork").Event()
    return _cluster_stopping


def _pid_dead(owner: str | None) -> bool:
    """True when ``owner`` names a process of this machine (and pid namespace) that no longer
    runs (or is a zombie). Two named hosts (HOST_NAME) on one machine see each other's pids."""
    pid_text, _, rest = (owner or "").partition("-")
    if rest.rsplit("-", 1)[0] != machine_key() or not pid_text.isdigit():
        return False
    try:
        with open(f"/proc/{int(pid_text)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in {"Z", "X"}
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _live(slot: DrainSlot, now: datetime) -> bool:
    if not slot.owner or slot.heartbeat_at is None:
        return False
    if slot.heartbeat_at < now - timedelta(seconds=conf.SLOT_STALE_S):
        return False
    return not _pid_dead(slot.owner)


def slot_acquire(*, host: str, count: int, owner: str) -> DrainSlot | None:
    """Take one of ``host``'s ``count`` slots for ``owner``; None when live holders have all."""
    now = timezone.now()
    have = set(DrainSlot.objects.filter(host=host).values_list("number", flat=True))
    if any(n not in have for n in range(count)):
        slots_register(host=host, count=count)
    for slot in DrainSlot.objects.filter(host=host, number__lt=count).order_by("number"):
        if _live(slot, now):
            continue
        with transaction.atomic():
            # Compare-and-set on what we saw: of two takers that saw the slot free, one wins,
            # and gives the dead holder's claims back (the row stays locked till then).
            won = DrainSlot.objects.filter(
                pk=slot.pk, owner=slot.owner, heartbeat_at=slot.heartbeat_at
            ).update(owner=owner, heartbeat_at=now)
            if won and (tag := owner_tag(slot.owner or "")):
                jobs_reap(holders=[tag])
        if won:
            slot.owner, slot.heartbeat_at = owner, now
            return slot
    return None


def slots_reap_dead() -> int:
    """Give back to the queue, at once, the claims of every drain known to be dead: its
    process gone from this machine, or its heartbeat older than SLOT_STALE_S. They stop
    counting against their endpoints' max_concurrency now, not when their leases lapse.

    A live drain's claims are never touched: its pid runs and it beats. One whose beat
    stalled past SLOT_STALE_S is deemed dead, as ``slot_acquire`` deems it; its results are
    then fenced off by their lease tokens (``jobs_record``). Returns the jobs given back.
    """
    now = timezone.now()
    held = DrainSlot.objects.filter(owner__isnull=False).exclude(host=HEALTH_HOST)
    reaped = 0
    for slot in held:
        if _live(slot, now):
            continue
        with transaction.atomic():
            # Compare-and-set: of two reapers (or a reaper and a taker), one frees the slot,
            # and only that one gives its holder's claims back.
            if DrainSlot.objects.filter(
                pk=slot.pk, owner=slot.owner, heartbeat_at=slot.heartbeat_at
            ).update(owner=None) and (tag := owner_tag(slot.owner or "")):
                reaped += jobs_reap(holders=[tag])
    return reaped


def slot_beat(slot: DrainSlot) -> bool:
    """Renew the heartbeat; False if the slot was taken from us (we looked dead)."""
    return bool(
        DrainSlot.objects.filter(pk=slot.pk, owner=slot.owner).update(heartbeat_at=timezone.now())
    )


def slot_release(slot: DrainSlot) -> None:
    DrainSlot.objects.filter(pk=slot.pk, owner=slot.owner).update(owner=None)


def slot_hosts() -> int:
    """How many hosts have drain slots (have run a drain, or a worker, at some time)."""
    return DrainSlot.objects.exclude(host=HEALTH_HOST).values("host").distinct().count()


def slots_register(*, host: str, count: int) -> None:
    """Make sure ``host``'s slots exist, so the fleet knows the host before it drains."""
    DrainSlot.objects.bulk_create(
        [DrainSlot(host=host, number=n) for n in range(count)], ignore_conflicts=True
    )


def slots_live(*, health: bool = False) -> int:
    """How many slots are held by live holders: drains anywhere in the fleet, or the checker."""
    now = timezone.now()
    fresh = DrainSlot.objects.filter(
        owner__isnull=False, heartbeat_at__gte=now - timedelta(seconds=conf.SLOT_STALE_S)
    )
    fresh = fresh.filter(host=HEALTH_HOST) if health else fresh.exclude(host=HEALTH_HOST)
    return sum(1 for s in fresh if _live(s, now))


@contextlib.contextmanager
def stop_on_signals(on_stop: Callable[[int], None]) -> Iterator[None]:
    """Run a long task that stops cleanly on SIGINT or SIGTERM, calling ``on_stop(signum)``.

    django-q2 runs a task in its worker's main thread, where SIGINT is ignored and SIGTERM
    kills. Inside this block either one asks the task to stop instead. ``llmqueue_worker``
    (``llmqueue.worker.supervise``) stops its cluster by SIGINT to every process of it, after
    it set ``cluster_stopping()``, which a task that starts later sees here. After a SIGTERM
    (systemd signals the whole group) the worker still dies, once the task settled.
    """
    got: list[int] = []

    def handler(signum: int, frame: object) -> None:
        got.append(signum)
        on_stop(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    # Looked at after the handlers are in: a cluster that began stopping before this task
    # started sent its signal before we could catch it, and set the event first.
    if _cluster_stopping is not None and _cluster_stopping.is_set():
        on_stop(signal.SIGINT)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if signal.SIGTERM in got:
        os.kill(os.getpid(), signal.SIGTERM)
