"""The host's multiprocess directory: the files of its processes' counters, and the archive that
the files of dead processes are folded into, so that a scrape reads the live processes and
one archive, not every worker that ever ran (``llmqueue.metrics`` explains the two kinds of
metrics)."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.mmap_dict import MmapedDict


class HostCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's merge of the processes' files, with two repairs.

    Files of processes that died are first folded into one archive per metric type
    (``multiprocess_compact``), so that a scrape reads the live processes and the archive,
    not every worker that ever ran. And empty files are skipped: a process creates its file
    and sizes it a moment later, and one killed in between leaves it empty, which the
    library's merge fails on (prometheus/client_python#1199). An empty file holds no counts.
    """

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        self.dir = path
        super().__init__(registry, path=path)

    def collect(self) -> Any:
        # Under the directory's lock: a scrape must never see both the archive that holds a
        # dead process's counts and that process's file (a count twice, then a "reset").
        with _dir_lock(self.dir):
            multiprocess_compact(self.dir)
            files = [f for f in glob.glob(os.path.join(self.dir, "*.db")) if _filled(f)]
            return self.merge(files)


def _filled(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:  # its process's files were removed meanwhile
        return False


#: the name that takes a pid's place in the file of dead processes' merged counts
ARCHIVE = "archive"
#: the compaction in progress: archives written, dead files to remove (a crash mid-way is
#: finished by the next scrape, so that no file is counted twice or lost)
_JOURNAL = "compaction.json"


@contextlib.contextmanager
def _dir_lock(path: str) -> Iterator[None]:
    with open(os.path.join(path, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _file_pid(path: str) -> int | None:
    tail = os.path.basename(path)[: -len(".db")].rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the pid: not ours, but alive
        return True
    return True


def multiprocess_compact(path: str) -> int:
    """Fold the files of this host's dead processes into ``<type>_archive.db``; returns how
    many were folded. Counters and histograms are summed (so totals never go back); a dead
    process's gauges say nothing about now and are dropped. Call under the directory's lock.
    """
    _journal_finish(path)
    dead = [
        f
        for f in glob.glob(os.path.join(path, "*.db"))
        if (pid := _file_pid(f)) is not None and pid != os.getpid() and not _alive(pid)
    ]
    if not dead:
        return 0
    by_type: dict[str, list[str]] = {}
    for f in dead:
        typ = os.path.basename(f).split("_", 1)[0]
        if typ != "gauge":
            by_type.setdefault(typ, []).append(f)
    for typ, files in by_type.items():
        archive = os.path.join(path, f"{typ}_{ARCHIVE}.db")
        totals: dict[str, list[float]] = {}
        for f in [archive, *files]:
            if not _filled(f):
                continue
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(f):
                total = totals.setdefault(key, [0.0, 0.0])
                total[0] += value
                total[1] = max(total[1], timestamp)
        with contextlib.suppress(FileNotFoundError):  # a crash's leftover: it would add up
            os.remove(f"{archive}.new")
        merged = MmapedDict(f"{archive}.new")
        for key, (value, timestamp) in totals.items():
            merged.write_value(key, value, timestamp)
        merged.close()
    journal = os.path.join(path, _JOURNAL)
    with open(f"{journal}.new", "w") as out:
        json.dump({"types": sorted(by_type), "dead": [os.path.basename(f) for f in dead]}, out)
    os.replace(f"{journal}.new", journal)
    _journal_finish(path)
    return len(dead)


def _journal_finish(path: str) -> None:
    """Install the new archives and remove the dead files the journal names (idempotent)."""
    journal = os.path.join(path, _JOURNAL)
    try:
        with open(journal) as f:
            todo = json.load(f)
    except FileNotFoundError:
        return
    for typ in todo["types"]:
        archive = os.path.join(path, f"{typ}_{ARCHIVE}.db")
        with contextlib.suppress(FileNotFoundError):  # installed before a crash
            os.replace(f"{archive}.new", archive)
    for name in todo["dead"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, name))
    os.remove(journal)
