"""A small key/value cache shared by every process: Redis when configured, else process memory.

Django's cache framework would do for sync code, but its async methods hop to a thread for every
call; the hot paths (``/v1``, ``/anthropic``) read this cache with no thread hop: the asyncio Redis
client, or a dict when there is no Redis (then there is one process, so a dict is shared enough).
Values are JSON.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from hepgg.lib.redis import async_redis, redis_configured, sync_redis

_NAMESPACE = "hepgg:"


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
            if len(self._data) > 100_000:  # bound memory: drop expired entries, then the oldest
                now = time.monotonic()
                self._data = {k: v for k, v in self._data.items() if v[0] >= now}
            self._data[key] = (time.monotonic() + ttl, value)
            return True

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


_local = _LocalStore()


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
    raw = await async_redis().get(_key(key)) if redis_configured() else _local.get(_key(key))
    return None if raw is None else json.loads(raw)


async def aset(key: str, value: Any, ttl: float) -> None:
    raw = json.dumps(value)
    if redis_configured():
        await async_redis().set(_key(key), raw, px=int(ttl * 1000))
    else:
        _local.set(_key(key), raw, ttl)


async def aadd(key: str, value: Any, ttl: float) -> bool:
    raw = json.dumps(value)
    if redis_configured():
        return bool(await async_redis().set(_key(key), raw, px=int(ttl * 1000), nx=True))
    return _local.set(_key(key), raw, ttl, only_if_absent=True)


def clear_local() -> None:
    """Forget the in-process store (tests)."""
    _local.clear()
