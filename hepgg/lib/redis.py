"""Redis clients: one sync client per process, one asyncio client per event loop.

An asyncio connection pool belongs to the loop that created it, so sharing one across loops
(tests start several) breaks in confusing ways; a client per loop avoids that.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

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


def sync_redis() -> redis.Redis:
    """The process's Redis client. Only call it when ``REDIS_URL`` is set."""
    global _sync_client
    if _sync_client is None:
        with _sync_lock:
            if _sync_client is None:
                _sync_client = redis.Redis.from_url(
                    settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5
                )
    return _sync_client


def async_redis() -> aredis.Redis:
    """The running loop's asyncio Redis client. Only call it when ``REDIS_URL`` is set."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = aredis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5
        )
        _async_clients[loop] = client
    return client
