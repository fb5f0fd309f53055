"""Run the django-q2 cluster so that every way a process manager stops it stops it cleanly.

`manage.py llmqueue_worker` runs this. Why not `manage.py qcluster` alone (django-q2 1.11):
- SIGTERM or SIGINT to the main process alone (Docker, Kubernetes): django-q2 stops by putting
  STOP pills in its task queue and waiting for every worker to take one, which a worker does
  only after its task. A drain is a task that runs for minutes (``DRAIN_MAX_SECONDS``), and
  nobody told it to stop.
- SIGTERM to the whole group (systemd): the sentinel dies at once (SIG_DFL) while it sleeps
  in ``stop_event.wait()``; the main process's handler then calls ``stop_event.set()``, whose
  ``notify_all()`` waits for every sleeper to acknowledge, the dead sentinel included: the
  main process hangs in a futex for good (seen: still there minutes later, the drains long
  settled and gone).

Here the main process owns the stop. On SIGTERM or SIGINT, to it alone or to its group:
1. it sets ``cluster_stopping()`` (inherited by every forked process), then sends SIGINT to
   every process of the cluster: a drain stops claiming, lets its calls run for
   ``STOP_GRACE_S`` and gives the rest back to the queue with their attempt refunded
   (``Drainer._settle``); a drain that starts later sees the event and stops at once;
   everything else ignores SIGINT;
2. it stops the cluster the django-q2 way (pusher, STOP pills, monitor), which now ends
   as soon as the drains settled;
3. whatever still runs ``STOP_GRACE_S`` + 3 s after the signal is killed, so the whole
   cluster is gone within ``STOP_GRACE_S`` + 5 s. (A killed drain's claims go back to the
   queue as soon as another drain sees its pid gone.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path

from django_q.cluster import Cluster

from llmqueue.conf import conf
from llmqueue.worker.slots import cluster_stopping

log = logging.getLogger(__name__)

#: what the stop may take beyond STOP_GRACE_S before the rest is killed (settling writes,
#: the cluster's own stop); 2 s more stay for the process manager's margin
STOP_SLACK_S = 3.0


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, pgid, state) of every process on this machine (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        found.append((int(entry.name), int(fields[1]), int(fields[2]), fields[0]))
    return found


def cluster_pids() -> set[int]:
    """The live processes of this cluster but this one: its descendants, and, when it leads
    its process group, the group's members (the workers of a sentinel that was killed are
    orphans by then, still in the group)."""
    me = os.getpid()
    procs = [p for p in _processes() if p[3] not in ("Z", "X")]
    leader = os.getpgid(0) == me
    mine = {pid for pid, _, pgid, _ in procs if leader and pgid == me}
    children: dict[int, list[int]] = {}
    for pid, ppid, _, _ in procs:
        children.setdefault(ppid, []).append(pid)
    todo = [me]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in mine:
                mine.add(child)
                todo.append(child)
    mine.discard(me)
    return mine


def _signal_all(signum: int) -> None:
    for pid in cluster_pids():
        with contextlib.suppress(ProcessLookupError):  # gone meanwhile
            os.kill(pid, signum)


def cluster_run() -> bool:
    """Run the cluster until SIGTERM or SIGINT, then stop it within STOP_GRACE_S + 5 s.
    False if it stopped because its sentinel died instead (a process manager restarts it)."""
    stopping = cluster_stopping()  # before any fork, so that every process shares it
    signalled = threading.Event()
    cluster = Cluster()

    def on_signal(signum: int, frame: object) -> None:
        if not signalled.is_set():
            log.info("llmqueue worker got %s: stopping", signal.Signals(signum).name)
        signalled.set()

    # Replaces the handlers Cluster() installed: theirs stop in the handler, and wait there.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
    except RuntimeError:  # the sentinel died while starting (killed by our own stop signal?)
        if not signalled.is_set():
            raise
    while not signalled.wait(0.5):
        if not cluster.sentinel.is_alive():
            log.error("the cluster's sentinel died; stopping the rest")
            break
    cluster_stop(cluster, stopping=stopping)
    return signalled.is_set()


def cluster_stop(cluster: Cluster, *, stopping: Event) -> None:
    """Stop drains (they settle), then the cluster; kill what is left at the deadline."""
    started = time.monotonic()
    deadline = started + conf.STOP_GRACE_S + STOP_SLACK_S
    stopping.set()
    _signal_all(signal.SIGINT)
    if cluster.sentinel is not None and cluster.sentinel.is_alive():
        # django-q2's own stop: the pusher stops, each worker takes a STOP pill once its task
        # (a settling drain at most) is done, the monitor saves the last results.
        threading.Thread(target=cluster.stop, name="cluster-stop", daemon=True).start()
    while cluster_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = cluster_pids()
    if left:
        log.warning("killing %d cluster processes still running after the grace", len(left))
        _signal_all(signal.SIGKILL)
        end = time.monotonic() + 1.5
        while cluster_pids() and time.monotonic() < end:
            time.sleep(0.05)
    log.info("llmqueue worker stopped in %.1f s", time.monotonic() - started)
