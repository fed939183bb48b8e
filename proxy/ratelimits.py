"""The latest subscription limits per machine, written off the request path.

``rate_limits.observe(machine_id, values)`` only replaces an entry in a dict; a task on the event
loop writes what changed every ``PROXY_RATELIMIT_FLUSH_SECONDS`` (one thread hop per flush, one
conditional UPDATE per machine seen since the last one). Only the latest values matter, so a
burst of requests from one machine costs one write; what a crash loses is seconds of a value the
next response brings again.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

logger = logging.getLogger(__name__)


class RateLimitSnapshots:
    def __init__(self) -> None:
        self._pending: dict[int, tuple[datetime, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )

    def observe(self, machine_id: int, values: dict[str, str]) -> None:
        """Remember ``values`` as the machine's latest (no I/O: safe on the request path)."""
        self._pending[machine_id] = (timezone.now(), values)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop not in self._flushers:
            self._flushers[loop] = loop.create_task(self._run())

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write the pending snapshots now (sync code); returns how many were written."""
        from proxy.models import MachineRateLimit

        with self._lock:
            batch, self._pending = self._pending, {}
        written = 0
        for machine_id, (observed_at, values) in batch.items():
            try:
                MachineRateLimit.objects.record_latest(
                    machine_id=machine_id, observed_at=observed_at, values=values
                )
                written += 1
            except Exception:  # a machine deleted meanwhile, a database blip: not worth a retry
                logger.exception("could not store the rate limits of machine %s", machine_id)
        return written

    async def aflush(self) -> int:
        return await sync_to_async(self._flush_in_thread, thread_sensitive=False)()

    def _flush_in_thread(self) -> int:
        close_old_connections()
        try:
            return self.flush()
        finally:
            close_old_connections()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(settings.PROXY_RATELIMIT_FLUSH_SECONDS)
            if self._pending:
                await self.aflush()


rate_limits = RateLimitSnapshots()


@atexit.register
def _flush_at_exit() -> None:
    if rate_limits.pending:
        try:
            rate_limits.flush()
        except Exception:
            logger.exception("rate-limit snapshot flush at exit failed")
