"""A small key/value cache shared by every process: Redis when configured, else process memory.

Django's cache framework would do for sync code, but its async methods hop to a thread for every
call; the hot paths (``/v1``, ``/anthropic``) read this cache with no thread hop: the asyncio Redis
client, or a dict when there is no Redis (then there is one process, so a dict is shared enough).
Values are JSON.

With Redis, ``aget`` also keeps a *near cache* in process memory, because a Redis round trip
through redis-py costs the hot path ~150 µs (measured) and it reads the same few keys all the
time. Every ``set`` and ``delete`` publishes the key on ``INVALIDATIONS``; each process listens and
drops its copy, so a revoke still takes effect at once everywhere. The near cache is used only
while this process's listener is subscribed, a read that raced an invalidation is not kept
(generation check), and entries live at most ``NEAR_SECONDS`` should a message ever be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from typing import Any

from hepgg.lib.redis import async_redis, redis_configured, sync_redis

logger = logging.getLogger(__name__)

_NAMESPACE = "hepgg:"
INVALIDATIONS = "hepgg:sharedcache:invalidate"
NEAR_SECONDS = 10.0
MAX_LOCAL_ENTRIES = 100_000  # the in-process store (no Redis): at most this many keys


class _LocalStore:
    def __init__(self) -> None:
        self._data: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            self._data.pop(key, None)
            return None
        return value

    def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        with self._lock:
            if only_if_absent and self.get(key) is not None:
                return False
            if len(self._data) > MAX_LOCAL_ENTRIES:  # bound memory: drop expired, then oldest
                now = time.monotonic()
                self._data = {k: v for k, v in self._data.items() if v[0] >= now}
                if len(self._data) > MAX_LOCAL_ENTRIES // 2:  # a flood of unknown tokens, say
                    self._data = dict(list(self._data.items())[-(MAX_LOCAL_ENTRIES // 2) :])
            self._data[key] = (time.monotonic() + ttl, value)
            return True

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


_local = _LocalStore()


class _NearCache:
    """This process's copies of Redis values, dropped when any process changes them."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[float, Any]] = {}
        self.generation = 0  # bumped by every invalidation this process hears of
        self.live = False  # the listener is subscribed: copies can be trusted
        self.listener: asyncio.Task[None] | None = None

    def get(self, key: str) -> Any | None:
        item = self.entries.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def keep(self, key: str, value: Any, generation: int) -> None:
        if self.live and generation == self.generation:
            if len(self.entries) > 50_000:
                self.entries.clear()
            self.entries[key] = (time.monotonic() + NEAR_SECONDS, value)

    def drop(self, key: str | None) -> None:
        self.generation += 1
        if key is None:
            self.entries.clear()
        else:
            self.entries.pop(key, None)

    def ensure_listener(self) -> None:
        if self.listener is None or self.listener.done():
            self.listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        pubsub = async_redis().pubsub()
        task = asyncio.current_task()
        try:
            await pubsub.subscribe(INVALIDATIONS)
            self.drop(None)  # anything kept before this subscription may have missed a message
            self.live = True
            # Polling with a timeout rather than ``listen()``: redis-py can swallow a
            # cancellation that lands inside its connect or read, and a loop that is shutting
            # down (asyncio.run, async_to_sync) would then wait for this task forever.
            while task is None or not task.cancelling():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None and message["type"] == "message":
                    self.drop(message["data"].decode())
        except asyncio.CancelledError:
            raise
        except Exception:  # a lost connection: stop trusting copies; the next aget retries
            logger.warning("shared cache invalidation listener lost; near cache off")
        finally:
            self.live = False
            self.drop(None)
            # Bounded, for the same reason: closing must not hold a loop's shutdown up.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(pubsub.aclose(), timeout=1)


_near = _NearCache()


def _key(key: str) -> str:
    return _NAMESPACE + key


def get(key: str) -> Any | None:
    raw = sync_redis().get(_key(key)) if redis_configured() else _local.get(_key(key))
    return None if raw is None else json.loads(raw)


def set(key: str, value: Any, ttl: float) -> None:
    raw = json.dumps(value)
    if redis_configured():
        sync_redis().set(_key(key), raw, px=int(ttl * 1000))
    else:
        _local.set(_key(key), raw, ttl)


def delete(*keys: str) -> None:
    if not keys:
        return
    if redis_configured():
        sync_redis().delete(*(_key(k) for k in keys))
    else:
        for key in keys:
            _local.delete(_key(key))


def add(key: str, value: Any, ttl: float) -> bool:
    """Set ``key`` only if it is absent; True when this call set it (an atomic claim)."""
    raw = json.dumps(value)
    if redis_configured():
        return bool(sync_redis().set(_key(key), raw, px=int(ttl * 1000), nx=True))
    return _local.set(_key(key), raw, ttl, only_if_absent=True)


async def aget(key: str) -> Any | None:
    """The value of ``key``: from the near cache when it can be trusted, else from the store."""
    if not redis_configured():
        raw = _local.get(_key(key))
        return None if raw is None else json.loads(raw)
    full = _key(key)
    _near.ensure_listener()
    value = _near.get(full)
    if value is not None:
        return value
    generation = _near.generation
    raw = await async_redis().get(full)
    if raw is None:
        return None
    value = json.loads(raw)
    _near.keep(full, value, generation)
    return value


async def aadd(key: str, value: Any, ttl: float) -> bool:
    raw = json.dumps(value)
    if redis_configured():
        return bool(await async_redis().set(_key(key), raw, px=int(ttl * 1000), nx=True))
    return _local.set(_key(key), raw, ttl, only_if_absent=True)


def clear_local() -> None:
    """Forget the in-process store and near cache (tests)."""
    _local.clear()
    _near.drop(None)
