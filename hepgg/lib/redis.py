"""Redis clients, and the breaker that keeps a Redis outage off the request path.

Clients: one sync client per process, one asyncio client per event loop (an asyncio connection
pool belongs to the loop that created it, so sharing one across loops breaks in confusing ways).
The pools are *blocking* pools of ``REDIS_MAX_CONNECTIONS``: a burst of requests waits a moment
for a free connection instead of failing with "Too many connections" (redis-py's default pool
raises once it is full; 500 Claude streams opened at once did exactly that).

The breaker: every Redis user asks ``redis_up()`` before a call and reports a failed call with
``redis_failed(exc)`` (for the errors in ``OUTAGE``), then falls back to what it can do alone
(``hepgg.lib.sharedcache``: the database and the process's own copies; ``hepgg.lib.ratelimit``:
per-process counters). The first failure marks Redis down for the whole process; from then on
callers skip Redis without trying, so no request waits for a connect, and a thread probes Redis
in the background every ``PROBE_SECONDS``. When a probe answers, the hooks registered with
``on_redis_back`` run (on the probe's connection) before callers are let back in.

The first request to meet an outage is bounded by the client timeouts: a stopped Redis refuses
the connection at once; an unreachable host costs ``REDIS_CONNECT_TIMEOUT``; a hung server
``REDIS_SOCKET_TIMEOUT``. Both are short because Redis answers in microseconds when it is well.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

logger = logging.getLogger(__name__)

# What an unreachable, stopped or hung Redis raises (redis-py wraps most socket errors in its
# ConnectionError; OSError covers the rest). Anything else is a bug and is not swallowed.
OUTAGE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)
PROBE_SECONDS = 0.5

_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def redis_configured() -> bool:
    return bool(settings.REDIS_URL)


def _pool_options(retry: Any) -> dict[str, Any]:
    return {
        "url": settings.REDIS_URL,
        "max_connections": settings.REDIS_MAX_CONNECTIONS,
        "timeout": 5,  # seconds to wait for a free connection
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        # One immediate retry on a connection error, none on a timeout: a pooled connection
        # that Redis closed (a restart, its idle timeout) is replaced on the spot, while a
        # hung or unreachable Redis still costs a request one timeout, not two.
        "retry": retry,
    }


def sync_redis() -> redis.Redis:
    """The process's Redis client. Only call it when ``REDIS_URL`` is set."""
    global _sync_client
    if _sync_client is None:
        with _sync_lock:
            if _sync_client is None:
                retry = SyncRetry(NoBackoff(), 1, (redis.exceptions.ConnectionError,))
                pool = redis.BlockingConnectionPool.from_url(**_pool_options(retry))
                _sync_client = redis.Redis(connection_pool=pool)
    return _sync_client


def async_redis() -> aredis.Redis:
    """The running loop's asyncio Redis client. Only call it when ``REDIS_URL`` is set."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        retry = AsyncRetry(NoBackoff(), 1, (redis.exceptions.ConnectionError,))
        pool = aredis.BlockingConnectionPool.from_url(**_pool_options(retry))
        client = aredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


class _Breaker:
    """Whether this process uses Redis now; a background probe closes it again."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.hooks: list[Callable[[redis.Redis], None]] = []
        self._lock = threading.Lock()

    def trip(self, exc: BaseException) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            threading.Thread(target=self._probe, name="hepgg-redis-probe", daemon=True).start()
        logger.warning(
            "Redis is unreachable (%s: %s); serving without it until it answers again",
            type(exc).__name__,
            exc,
        )

    def _probe(self) -> None:
        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        )
        try:
            while True:
                time.sleep(PROBE_SECONDS)
                try:
                    client.ping()
                    for hook in self.hooks:
                        hook(client)
                except OUTAGE:
                    continue
                except Exception:  # a hook's bug must not leave the process without Redis
                    logger.exception("a Redis recovery hook failed; trying again")
                    continue
                with self._lock:
                    down_for = time.monotonic() - (self.down_since or 0.0)
                    self.down_since = None
                logger.warning("Redis answers again after %.1f s; using it again", down_for)
                return
        finally:
            client.close()

    def reset(self) -> None:
        """In a forked child: the probe thread did not survive the fork, so start over."""
        self._lock = threading.Lock()
        self.down_since = None


_breaker = _Breaker()
os.register_at_fork(after_in_child=_breaker.reset)


def redis_up() -> bool:
    """Redis is configured and no call has failed since the last successful probe."""
    return _breaker.down_since is None and bool(settings.REDIS_URL)


def redis_failed(exc: BaseException) -> None:
    """Report a call that failed with one of ``OUTAGE``: Redis is down for this process."""
    _breaker.trip(exc)


def on_redis_back(hook: Callable[[redis.Redis], None]) -> None:
    """Run ``hook(client)`` after a successful probe, before callers use Redis again.

    A hook that raises keeps Redis marked down, and the probe tries again.
    """
    if hook not in _breaker.hooks:
        _breaker.hooks.append(hook)
