"""Redis clients: one sync client per process, one asyncio client per event loop.

An asyncio connection pool belongs to the loop that created it, so sharing one across loops
(tests start several) breaks in confusing ways; a client per loop avoids that.

The pools are *blocking* pools of ``REDIS_MAX_CONNECTIONS``: a burst of requests waits a moment
for a free connection instead of failing with "Too many connections" (redis-py's default pool
raises once it is full; 500 Claude streams opened at once did exactly that).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import redis
import redis.asyncio as aredis
from django.conf import settings

_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def redis_configured() -> bool:
    return bool(settings.REDIS_URL)


def _pool_options() -> dict[str, Any]:
    return {
        "url": settings.REDIS_URL,
        "max_connections": settings.REDIS_MAX_CONNECTIONS,
        "timeout": 5,  # seconds to wait for a free connection
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
    }


def sync_redis() -> redis.Redis:
    """The process's Redis client. Only call it when ``REDIS_URL`` is set."""
    global _sync_client
    if _sync_client is None:
        with _sync_lock:
            if _sync_client is None:
                pool = redis.BlockingConnectionPool.from_url(**_pool_options())
                _sync_client = redis.Redis(connection_pool=pool)
    return _sync_client


def async_redis() -> aredis.Redis:
    """The running loop's asyncio Redis client. Only call it when ``REDIS_URL`` is set."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = aredis.BlockingConnectionPool.from_url(**_pool_options())
        client = aredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client
