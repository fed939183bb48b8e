"""A small key/value cache shared by every process: Redis when it is configured and up, else each
process's own copies. Values are JSON. Readers fill it with ``fetch``/``afetch``; writers change it
with ``set``/``delete`` and every process sees the change on its next read.

Two signals carry a change to the other processes:

- **The invalidation marker**, a file in ``DATA_DIR`` that every ``set``/``delete`` appends a byte
  to (after the caller's commit, when the caller runs them in ``transaction.on_commit``). Every
  copy a process keeps in memory is valid only while the marker is the one it saw before it
  loaded the value: a lookup ``stat``s the file (a few µs, no query, no round trip) and drops all
  copies when it changed, and a value whose load raced a change is not kept. This is the whole
  story without Redis, and it reaches every process of one host (the operator's ``manage.py``
  included).
- **With Redis**, values live in Redis, and ``set``/``delete``/``add`` also publish the key on
  ``INVALIDATIONS``. ``afetch`` keeps a *near cache* of Redis values in process memory, because a
  Redis round trip through redis-py costs the hot path ~150 µs and it reads the same few keys all
  the time. A copy is used only while this process's listener is subscribed (other hosts' changes
  come by message), the marker is unchanged (this host's changes, with no race), and for at most
  ``NEAR_SECONDS`` should a message be lost. A read that raced an invalidation is not kept
  (generation check).

While Redis is down (``hepgg.lib.redis``'s breaker), readers skip it and use their own copies
under the marker alone. Writers still try Redis (invalidations are rare and must not be missed
by a process that already sees Redis again). When Redis answers again, each process that saw it
go first deletes every cached entry in Redis and tells the others to drop their near copies:
changes made meanwhile reached only the marker, so the entries Redis kept may be stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from hepgg.lib.redis import (
    OUTAGE,
    async_redis,
    on_redis_back,
    redis_configured,
    redis_failed,
    redis_up,
    sync_redis,
)

logger = logging.getLogger(__name__)

_NAMESPACE = "hepgg:cache:"
INVALIDATIONS = "hepgg:sharedcache:invalidate"
_EVERYTHING = "*"  # the message that drops every near copy
NEAR_SECONDS = 10.0
MARKER_NAME = "cache-invalidations"
_MARKER_ROTATE_BYTES = 1024 * 1024
_MAX_COPIES = 50_000

Ttl = float | Callable[[Any], float]


# -- the marker ----------------------------------------------------------------------------------
def _marker_path() -> str:
    return _marker_in(str(settings.DATA_DIR))


@functools.lru_cache(maxsize=8)
def _marker_in(data_dir: str) -> str:
    # Read on every warm credential check: built once, not a Path per request.
    return os.path.join(data_dir, MARKER_NAME)


def marker() -> tuple[int, int, int]:
    """The marker's state now: it changes with every ``set``/``delete`` on this host."""
    try:
        st = os.stat(_marker_path())
    except FileNotFoundError:
        return (0, 0, 0)
    # Appends make the size grow strictly, so two bumps within one clock tick still differ;
    # the inode and mtime tell a rotated file from the old one.
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _bump_marker() -> None:
    path = _marker_path()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        os.write(fd, b".")
    finally:
        os.close(fd)
    if size >= _MARKER_ROTATE_BYTES:
        # A fresh file (new inode) is a change too. A bump that lands in the old file after
        # this is preceded by this change, made after that bump's commit: nothing is missed.
        fd, fresh = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{MARKER_NAME}.")
        os.close(fd)
        os.replace(fresh, path)


# -- this process's copies -----------------------------------------------------------------------
class _Copies:
    """Values this process keeps in memory, dropped whenever the marker changes.

    The near cache of Redis values (entries live ``NEAR_SECONDS``) while Redis is up; the cache
    itself (entries live their full TTL) while there is no Redis or it is down. The role changes
    with the breaker, and the copies are dropped when it does.
    """

    def __init__(self) -> None:
        self.entries: dict[str, tuple[float, Any]] = {}
        self.generation = 0  # bumped by every drop; a load kept only if it did not move
        self.marker: tuple[int, int, int] | None = None
        self.redis_role: bool | None = None
        self._lock = threading.Lock()

    def check(self, redis_role: bool) -> int:
        """Drop everything if the marker or the role changed; returns the generation now."""
        now = marker()
        if now != self.marker or redis_role is not self.redis_role:
            with self._lock:
                self.entries.clear()
                self.generation += 1
                self.marker, self.redis_role = now, redis_role
        return self.generation

    def get(self, key: str) -> Any | None:
        item = self.entries.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def keep(self, key: str, value: Any, ttl: float, generation: int) -> None:
        with self._lock:
            if generation != self.generation or marker() != self.marker:
                return  # something changed while the value was loading: it may be stale
            if len(self.entries) >= _MAX_COPIES:
                self.entries.clear()
            self.entries[key] = (time.monotonic() + ttl, value)

    def drop(self, key: str | None) -> None:
        with self._lock:
            self.generation += 1
            if key is None:
                self.entries.clear()
            else:
                self.entries.pop(key, None)


_copies = _Copies()


# -- the near cache's listener -------------------------------------------------------------------
class _Listener:
    """One subscription to ``INVALIDATIONS``, on the loop that serves requests; ``live`` while it
    is subscribed."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.subscribed: asyncio.Task[None] | None = None  # the task whose subscription is live

    @property
    def live(self) -> bool:
        return self.subscribed is not None and self.subscribed is self.task

    def ensure(self) -> None:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._listen())  # another loop's task hears nothing

    async def _listen(self) -> None:
        pubsub = async_redis().pubsub()
        task = asyncio.current_task()
        try:
            await pubsub.subscribe(INVALIDATIONS)
            _copies.drop(None)  # anything kept before this subscription may have missed a message
            self.subscribed = task
            # Polling with a timeout rather than ``listen()``: redis-py can swallow a
            # cancellation that lands inside its connect or read, and a loop that is shutting
            # down (asyncio.run, async_to_sync) would then wait for this task forever.
            while task is None or not task.cancelling():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None and message["type"] == "message":
                    key = message["data"].decode()
                    _copies.drop(None if key == _EVERYTHING else key)
        except asyncio.CancelledError:
            raise
        except OUTAGE as exc:  # often the first to know: stop using Redis now
            redis_failed(exc)
        except Exception:
            logger.warning("shared cache invalidation listener lost; near cache off")
        finally:
            if self.subscribed is task:
                self.subscribed = None
            _copies.drop(None)
            # Bounded, for the same reason: closing must not hold a loop's shutdown up.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(pubsub.aclose(), timeout=1)


_listener = _Listener()


# -- reading -------------------------------------------------------------------------------------
def _key(key: str) -> str:
    return _NAMESPACE + key


def _seconds(ttl: Ttl, value: Any) -> float:
    return ttl(value) if callable(ttl) else ttl


def _as_stored(value: Any) -> Any:
    """``value`` as a reader gets it back from Redis: the same types in both deployments."""
    return json.loads(json.dumps(value))


def fetch(key: str, load: Callable[[], Any], ttl: Ttl) -> Any:
    """The cached value of ``key``, or ``load()`` cached for ``ttl`` seconds (a number, or a
    function of the value). Sync code only. ``load`` must return a JSON-able value, never None.

    A filler never overwrites: a writer's value (a tombstone, say) that lands between the load
    and the fill wins, so a load that raced a revoke cannot bring the old value back.
    """
    full = _key(key)
    if redis_up():
        try:
            raw = sync_redis().get(full)
        except OUTAGE as exc:
            redis_failed(exc)
        else:
            if raw is not None:
                return json.loads(raw)
            value = load()
            try:
                _fill(full, value, _seconds(ttl, value))
            except OUTAGE as exc:
                redis_failed(exc)
            return value
    generation = _copies.check(redis_role=False)
    value = _copies.get(full)
    if value is None:
        value = _as_stored(load())
        _copies.keep(full, value, _seconds(ttl, value), generation)
    return value


async def afetch(key: str, load: Callable[[], Awaitable[Any]], ttl: Ttl) -> Any:
    """As ``fetch``, on the event loop: no thread hop (nor round trip, nor query) when warm."""
    full = _key(key)
    if redis_up():
        _listener.ensure()
        generation = _copies.check(redis_role=True)
        value = _copies.get(full) if _listener.live else None
        if value is not None:
            return value
        try:
            raw = await async_redis().get(full)
        except OUTAGE as exc:
            redis_failed(exc)
        else:
            if raw is not None:
                value = json.loads(raw)
                if _listener.live:
                    _copies.keep(full, value, NEAR_SECONDS, generation)
                return value
            value = await load()
            try:
                await _afill(full, value, _seconds(ttl, value))
            except OUTAGE as exc:
                redis_failed(exc)
            return value
    generation = _copies.check(redis_role=False)
    value = _copies.get(full)
    if value is None:
        value = _as_stored(await load())
        _copies.keep(full, value, _seconds(ttl, value), generation)
    return value


def _fill(full: str, value: Any, ttl: float) -> None:
    with sync_redis().pipeline(transaction=False) as pipe:
        pipe.set(full, json.dumps(value), px=int(ttl * 1000), nx=True)
        pipe.publish(INVALIDATIONS, full)
        pipe.execute()


async def _afill(full: str, value: Any, ttl: float) -> None:
    async with async_redis().pipeline(transaction=False) as pipe:
        pipe.set(full, json.dumps(value), px=int(ttl * 1000), nx=True)
        pipe.publish(INVALIDATIONS, full)
        await pipe.execute()


# -- writing -------------------------------------------------------------------------------------
def set(key: str, value: Any, ttl: float) -> None:
    """Overwrite ``key`` everywhere (a tombstone, a fresh value)."""
    full = _key(key)
    if redis_configured():
        try:
            with sync_redis().pipeline(transaction=False) as pipe:
                pipe.set(full, json.dumps(value), px=int(ttl * 1000))
                pipe.publish(INVALIDATIONS, full)
                pipe.execute()
        except OUTAGE as exc:
            redis_failed(exc)
    _bump_marker()


def delete(*keys: str) -> None:
    """Drop ``keys`` everywhere; the next reader loads them again."""
    if not keys:
        return
    if redis_configured():
        full = [_key(k) for k in keys]
        try:
            with sync_redis().pipeline(transaction=False) as pipe:
                pipe.delete(*full)
                for name in full:
                    pipe.publish(INVALIDATIONS, name)
                pipe.execute()
        except OUTAGE as exc:
            redis_failed(exc)
    _bump_marker()


def _forget_what_redis_kept(client: Any) -> None:
    """On Redis's return: the entries it kept may predate changes it never heard of."""
    for batch in _batches(client.scan_iter(match=_NAMESPACE + "*", count=1000), 1000):
        client.unlink(*batch)
    client.publish(INVALIDATIONS, _EVERYTHING)
    _copies.drop(None)


def _batches(items: Any, size: int) -> Any:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


on_redis_back(_forget_what_redis_kept)


def clear_local() -> None:
    """Forget this process's copies (tests)."""
    _copies.drop(None)
