"""Waiting for jobs to end, without a thread or a query per waiter.

    ended = await job_wait(job_id=7, timeout=30.0)   # True once the job is terminal

Every waiter of a process (of its event loop) registers with one poller: a task that asks the
database, once per tick (``LLMQUEUE_WAIT_POLL_S``), which of all the waited-for jobs are
terminal, and wakes their waiters. A thousand waiting clients cost one query per tick, not a
thousand, and no thread each: a waiter is a future on the event loop. The poller runs while
anyone waits and stops when no one does.

The query runs on the poller's own thread, so that it keeps one database connection rather
than borrowing a request's (a request's thread ends with its request).

A request itself still has a thread: Django's ASGI handler runs each request's sync code
(middleware, signals, ORM calls) on a thread of its own (asgiref's ThreadSensitiveContext),
kept until the request ends. Idle while the request waits, that would still be a thread per
waiter, so a view calls ``request_thread_release`` before it waits: the request's database
connection is closed and its thread ends; sync code after the wait gets a new one.

Its database work goes through ``db_section``: ``DB_SECTIONS`` threads per process, each with
one lasting connection, do the database work of every waiting request in turn. Else a
thousand waiters woken by one tick would open a thousand connections (PostgreSQL's default
max_connections is 100: "sorry, too many clients already").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync, sync_to_async
from django.db import DatabaseError, connection, connections
from django.db import Error as DjangoDbError

from llmqueue import metrics
from llmqueue.conf import conf
from llmqueue.models import TERMINAL, Job

log = logging.getLogger(__name__)

T = TypeVar("T")

#: threads (and so database connections) of one web process for its async views' database
#: work (``db_section``)
DB_SECTIONS = 16
#: ids per query: far under SQLite's 32,766 bound variables, and an IN list PostgreSQL plans
#: well; 1,000 waiters are one query
CHUNK = 5000


def _terminal_among(ids: list[int]) -> list[int]:
    try:
        found: list[int] = []
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            found += Job.objects.filter(pk__in=chunk, status__in=TERMINAL).values_list(
                "pk", flat=True
            )
            metrics.WAIT_POLLS.inc()
        return found
    except DatabaseError:
        # A broken connection (a restarted server, a dropped socket): the next tick reconnects.
        connection.close()
        raise


def _connection_close() -> None:
    # Called in the poller's thread: ``connection`` names that thread's own connection there
    # (``connection.close`` taken on the event loop's thread would be the loop thread's).
    connection.close()


class JobPoller:
    """The waiters of one event loop, and the task that wakes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiters: dict[int, set[asyncio.Future[None]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmqueue-waiting")
        #: queries made so far (the tests and the benchmark read it)
        self.queries = 0

    def add(self, job_id: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        self.waiters.setdefault(job_id, set()).add(future)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name="llmqueue-job-poller")
        return future

    def discard(self, job_id: int, future: asyncio.Future[None]) -> None:
        futures = self.waiters.get(job_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self.waiters[job_id]

    async def _run(self) -> None:
        try:
            await self._poll()
        finally:
            # No one waits: its connection is not kept open for the next waiter, which may
            # come much later (and a test database must be droppable).
            await self.loop.run_in_executor(self.executor, _connection_close)

    async def _poll(self) -> None:
        while self.waiters:
            await asyncio.sleep(float(conf.WAIT_POLL_S))
            ids = list(self.waiters)
            if not ids:
                break
            try:
                ended = await self.loop.run_in_executor(self.executor, _terminal_among, ids)
            except DatabaseError:
                log.exception("waiting poller: the query failed; trying again next tick")
                continue
            finally:
                self.queries += (len(ids) + CHUNK - 1) // CHUNK
            for job_id in ended:
                for future in self.waiters.pop(job_id, ()):
                    if not future.done():
                        future.set_result(None)


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, JobPoller] = (
    weakref.WeakKeyDictionary()
)


def job_poller() -> JobPoller:
    """This event loop's poller (one per loop: an ASGI server runs one loop per process)."""
    loop = asyncio.get_running_loop()
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = JobPoller(loop)
    return poller


async def job_wait(*, job_id: int, timeout: float) -> bool:
    """Wait until the job is terminal (True) or ``timeout`` seconds pass (False).

    The caller has seen the job not terminal; a job that ends between that look and this call
    is found at the next tick.
    """
    if timeout <= 0:
        return False
    poller = job_poller()
    future = poller.add(job_id)
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout)
        return True
    except TimeoutError:
        return False
    finally:
        poller.discard(job_id, future)


def _connections_drop() -> None:
    # In the request's thread: a connection may only be closed by the thread that opened it,
    # and the next thread of this request must open its own (the handler keeps connections
    # per request context, not per thread).
    for conn in connections.all(initialized_only=True):
        conn.close()
        del connections[conn.alias]


def _request_thread() -> bool:
    """Whether this runs in a request of Django's ASGI handler, whose sync code has a thread
    of its own (under WSGI or the test client it shares the caller's, and its connection)."""
    context = SyncToAsync.thread_sensitive_context.get(None)
    return context is not None and context in SyncToAsync.context_to_thread_executor


async def request_thread_release() -> None:
    """End the thread Django's ASGI handler keeps for this request, before a long wait (see
    the module docstring). Outside such a request (WSGI, the test client) it does nothing."""
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None or not _request_thread():
        return
    await sync_to_async(_connections_drop)()
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)  # its one thread is idle: it ends now


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ThreadPoolExecutor] = (
    weakref.WeakKeyDictionary()
)


async def db_section(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the sync ``fn`` (database work of an async view) on one of the ``DB_SECTIONS``
    threads of this event loop, each keeping one connection, so that a thousand requests
    woken at once share a few connections instead of opening one each. Outside an ASGI
    request (WSGI, the test client) it runs in the caller's thread, on its connection."""
    # Django's ASGI handler gives each request a thread-sensitive context (kept after
    # request_thread_release ended its thread); WSGI and the test client give none.
    if SyncToAsync.thread_sensitive_context.get(None) is None:
        return await sync_to_async(fn)(*args, **kwargs)
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = ThreadPoolExecutor(DB_SECTIONS, thread_name_prefix="llmqueue-db")
    return await loop.run_in_executor(pool, functools.partial(_db_call, fn, *args, **kwargs))


def _db_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except DjangoDbError:
        # A broken connection (a restarted server, a dropped socket) is not kept: the next
        # section on this thread connects again.
        connection.close()
        raise
