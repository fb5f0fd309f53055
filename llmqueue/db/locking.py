"""Writers take turns on SQLite: a file lock in front of SQLite's own write lock.

SQLite lets one writer at a time; a writer that finds the lock taken waits in SQLite's busy
handler, which sleeps in growing steps (1, 2, 5, 10... ms) and so oversleeps the moment the
writer before it commits. With two drains and a submitter that cost a quarter of each
drain's time (py-spy, bench/throughput.py). A blocking flock instead wakes the next writer
as soon as the last one is done. The hot writers (the drains' steps and bulk submissions)
take their turn here; PostgreSQL has row locks and needs none of this.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator

from django.db import connection


@contextlib.contextmanager
def writer_turn() -> Iterator[None]:
    """Hold the SQLite writers' turn for the block (a no-op on other databases)."""
    if connection.vendor != "sqlite":
        yield
        return
    with open(f"{connection.settings_dict['NAME']}.writers", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
