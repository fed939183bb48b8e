"""Buffers that are written in batches, off the request path: one flusher per buffer and loop.

A module that batches (usage events, rate-limit charges, subscription-limit snapshots) keeps
its own buffer and hands this module two things: how to write it (``flush``, a coroutine run on
the event loop, and optionally ``flush_sync`` for code with no loop) and how often. The request
path only calls ``Flusher.poke()``, which appends nothing and does no I/O: it makes sure the
running loop has a task that calls ``flush`` every ``interval()`` seconds, or at once when
``poke(now=True)`` says the buffer is full.

One task per event loop, because the async clients a flush uses (Redis) belong to the
loop that made them, and tests run several loops in one process. Shutdown has one path:
``flush_all()`` (the ASGI lifespan shutdown, under uvicorn) or ``flush_all_sync()`` (an exit
hook, under daphne, which sends no lifespan events); ``hepgg.lifespan`` calls both.

Buffers that write to the database do it in ``in_writer_thread``: one thread per process that
keeps its database connection between flushes, as a request thread does (Django's
``CONN_MAX_AGE`` and health checks apply). A connection per flush cost a backend start on the
server and a connect in this process, a dozen times a second under load (measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)

T = TypeVar("T")

_LOG_EVERY_SECONDS = 60.0

# Weak: a buffer made for a test goes away with it.
_flushers: weakref.WeakSet[Flusher] = weakref.WeakSet()


class Flusher:
    """Calls ``flush()`` every ``interval()`` seconds on each loop that pokes it, while
    ``pending()`` says there is something to write. A failing flush is logged (at most once a
    minute, so that an outage does not flood the log), never raised: the buffer's own ``flush``
    decides what to keep for the next one."""

    def __init__(
        self,
        name: str,
        *,
        flush: Callable[[], Awaitable[Any]],
        interval: Callable[[], float],
        pending: Callable[[], bool],
        flush_sync: Callable[[], Any] | None = None,
    ) -> None:
        self.name = name
        self._flush = flush
        self._flush_sync = flush_sync
        self._interval = interval
        self._pending = pending
        self._wakeups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references
        self._failures = 0
        self._logged_at = -math.inf
        _flushers.add(self)

    def poke(self, *, now: bool = False) -> None:
        """Make sure the running loop flushes within ``interval()`` (``now``: at once).

        No I/O, safe on the request path; from sync code (no running loop) it does nothing,
        and the next flush, or the exit hook, writes the buffer."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        wakeup = self._wakeups.get(loop)
        if wakeup is None:
            wakeup = self._wakeups[loop] = asyncio.Event()
            task = loop.create_task(self._run(wakeup), name=f"flusher: {self.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if now:
            wakeup.set()

    def pending(self) -> bool:
        return self._pending()

    async def flush(self) -> None:
        """Flush now, on this loop; a failure is logged."""
        try:
            await self._flush()
        except Exception:
            self._failed("flush")
        else:
            self._failures = 0

    def flush_sync(self) -> None:
        """Flush now from sync code (exit hooks); a buffer with no sync flush is skipped."""
        if self._flush_sync is None or not self.pending():
            return
        try:
            self._flush_sync()
        except Exception:
            self._logged_at = -math.inf  # the last word before the process ends: always said
            self._failed("flush at exit")

    def _failed(self, what: str) -> None:
        self._failures += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_SECONDS:
            self._logged_at = now
            logger.warning(
                "%s: %s failed (%d in a row)", self.name, what, self._failures, exc_info=True
            )

    async def _run(self, wakeup: asyncio.Event) -> None:
        # Flushes start every interval (not an interval after the last one ended), so nothing
        # waits in the buffer longer than the interval and one flush's own duration.
        loop = asyncio.get_running_loop()
        due = loop.time() + self._interval()
        while True:
            with contextlib.suppress(TimeoutError):  # the interval passed: flush anyway
                await asyncio.wait_for(wakeup.wait(), timeout=max(0.0, due - loop.time()))
            wakeup.clear()
            due = loop.time() + self._interval()
            if self.pending():
                await self.flush()


async def flush_all() -> None:
    """Flush every buffer of this process on the running loop (graceful shutdown, tests)."""
    for flusher in list(_flushers):
        if flusher.pending():
            await flusher.flush()


def flush_all_sync() -> None:
    """Flush every buffer that can be flushed without a loop (the exit hook)."""
    for flusher in list(_flushers):
        flusher.flush_sync()


# -- the writer thread -------------------------------------------------------------------------
_writer: ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()


def _writer_thread() -> ThreadPoolExecutor:
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch writer")
        return _writer


def _job(write: Callable[[], T]) -> T:
    # As around a request: a connection that failed, or is older than CONN_MAX_AGE, is closed
    # (and the next job connects again); a healthy one is kept for the next flush.
    close_old_connections()
    try:
        return write()
    finally:
        close_old_connections()


async def in_writer_thread(write: Callable[[], T]) -> T:
    """Run ``write`` (sync code that uses the database) in the writer thread, and wait for it."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_writer_thread(), _job, write)


def close_writer_connections() -> None:
    """Close the writer thread's database connections (shutdown; a test database about to be
    dropped). The next flush connects again."""
    with _writer_lock:
        writer = _writer
    if writer is not None:
        writer.submit(connections.close_all).result()
