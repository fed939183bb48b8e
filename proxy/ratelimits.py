"""The latest subscription limits per machine, written off the request path.

``rate_limits.observe(machine_id, values)`` only replaces an entry in a dict; a flusher
(``hepgg.lib.batching``) writes what changed every ``PROXY_RATELIMIT_FLUSH_SECONDS`` (one hop
to the writer thread per flush, one conditional UPDATE per machine seen since the last one).
Only the latest values matter, so a burst of requests from one machine costs one write; what a
crash loses is seconds of a value the next response brings again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from hepgg.lib.batching import Flusher, in_writer_thread

logger = logging.getLogger(__name__)


class RateLimitSnapshots:
    def __init__(self) -> None:
        self._pending: dict[int, tuple[datetime, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._flusher = Flusher(
            "rate-limit snapshots",
            flush=self.aflush,
            flush_sync=self.flush,
            interval=lambda: settings.PROXY_RATELIMIT_FLUSH_SECONDS,
            pending=lambda: bool(self._pending),
        )

    def observe(self, machine_id: int, values: dict[str, str]) -> None:
        """Remember ``values`` as the machine's latest (no I/O: safe on the request path)."""
        self._pending[machine_id] = (timezone.now(), values)
        self._flusher.poke()

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
            except (OperationalError, InterfaceError):  # the database is down: each try would
                logger.warning("database unavailable: %d rate-limit snapshots dropped", len(batch))
                break  # wait out its connect timeout; the next response brings fresh values
            except Exception:  # a machine deleted meanwhile, a database blip: not worth a retry
                logger.exception("could not store the rate limits of machine %s", machine_id)
        return written

    async def aflush(self) -> int:
        return await in_writer_thread(self.flush)


rate_limits = RateLimitSnapshots()
