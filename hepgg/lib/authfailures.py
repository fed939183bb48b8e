"""Failed authentication, counted per client address and credential type: slowed, then refused.

Every surface calls this at its refusal point, and only there: a request with a good credential
costs nothing (no Redis round trip, no query). Per ``(kind, client)`` and fixed window of
``AUTH_FAILURES_WINDOW_SECONDS``:

- the first ``AUTH_FAILURES_SLOW_AFTER`` failures are answered at once;
- each further failure waits before its refusal (doubling from 0.25 s, at most
  ``AUTH_FAILURES_MAX_DELAY`` seconds; async surfaces only: a sync view must not hold the
  thread that every sync view shares);
- past ``AUTH_FAILURES_LIMIT`` failures the client gets 429 with ``Retry-After`` (the rest of the
  window), and this process refuses that client's further credentials of that kind before even
  looking them up (``blocked``: process memory, no I/O).

Counters live in Redis (one pipelined ``INCR``/``EXPIRE`` per failure) so that every process
sees them; without Redis, or while it fails, in process memory. A failed Redis call trips the
process's breaker (``hepgg.lib.redis``): until its probe sees Redis again, failures are counted
in process without trying Redis, so an outage costs a refusal no connect or timeout. Process
memory is bounded (``MAX_TRACKED`` clients, the oldest dropped first), so no flood of addresses
can fill it.

The client is the connection's peer address, or, behind a load balancer, the rightmost entry of
the header ``CLIENT_IP_HEADER`` names (e.g. ``X-Forwarded-For``: the one the balancer appended).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from hepgg.lib.redis import OUTAGE, async_redis, redis_failed, redis_up, sync_redis

logger = logging.getLogger(__name__)

MAX_TRACKED = 10_000
_NAMESPACE = "hepgg:authfail:"


@dataclass(frozen=True, slots=True)
class Verdict:
    delay: float = 0.0  # seconds to wait before the 401
    retry_after: int | None = None  # refuse with 429 and this Retry-After


def _policy() -> tuple[int, int, int, float]:
    return (
        settings.AUTH_FAILURES_WINDOW_SECONDS,
        settings.AUTH_FAILURES_SLOW_AFTER,
        settings.AUTH_FAILURES_LIMIT,
        settings.AUTH_FAILURES_MAX_DELAY,
    )


class _Local:
    """Bounded per-process state: fallback counters, and clients known to be over the limit."""

    def __init__(self) -> None:
        self.counts: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> (window, n)
        self.blocked: OrderedDict[str, float] = OrderedDict()  # key -> until (monotonic)
        self.lock = threading.Lock()

    @staticmethod
    def _trim(table: OrderedDict[str, Any]) -> None:
        while len(table) > MAX_TRACKED:
            table.popitem(last=False)

    def incr(self, key: str, window: int) -> int:
        with self.lock:
            seen_window, n = self.counts.pop(key, (window, 0))
            n = n + 1 if seen_window == window else 1
            self.counts[key] = (window, n)
            self._trim(self.counts)
            return n

    def block(self, key: str, seconds: int) -> None:
        with self.lock:
            self.blocked.pop(key, None)
            self.blocked[key] = time.monotonic() + seconds
            self._trim(self.blocked)

    def blocked_for(self, key: str) -> int | None:
        until = self.blocked.get(key)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            with self.lock:
                self.blocked.pop(key, None)
            return None
        return max(1, int(left + 0.999))

    def clear(self) -> None:
        with self.lock:
            self.counts.clear()
            self.blocked.clear()


_local = _Local()


def clear_local() -> None:
    _local.clear()


def _key(kind: str, client: str) -> str:
    return f"{kind}:{client[:64]}"


def _window() -> tuple[int, int]:
    """The current window's number and the seconds left in it."""
    length = _policy()[0]
    now = time.time()
    return int(now // length), max(1, int(length - now % length + 0.999))


def _verdict(key: str, count: int, left: int) -> Verdict:
    _, slow_after, limit, max_delay = _policy()
    if count > limit:
        _local.block(key, left)
        return Verdict(retry_after=left)
    if count > slow_after:
        return Verdict(delay=min(max_delay, 0.25 * 2 ** (count - slow_after - 1)))
    return Verdict()


def blocked(kind: str, client: str) -> int | None:
    """Seconds this client must wait before presenting a ``kind`` credential again, if this
    process already refused it; None otherwise. No I/O: call it before resolving a credential."""
    return _local.blocked_for(_key(kind, client))


def _redis_key(key: str, window: int) -> str:
    return f"{_NAMESPACE}{key}:{window}"


def _redis_unavailable(exc: Exception) -> None:
    if isinstance(exc, OUTAGE):
        redis_failed(exc)
        logger.warning("auth failure counter: Redis unavailable, counting in process")
    else:  # not an outage (a bug, a wrong reply): still count, and say what it was
        logger.exception("auth failure counter: Redis call failed, counting in process")


async def afailed(kind: str, client: str) -> Verdict:
    """Count one failed ``kind`` credential from ``client``; waits out the slow stage's delay.
    Returns a ``Verdict`` whose ``retry_after`` is set when the answer must be a 429."""
    key = _key(kind, client)
    window, left = _window()
    count = None
    if redis_up():
        try:
            pipe = async_redis().pipeline(transaction=False)
            pipe.incr(_redis_key(key, window))
            pipe.expire(_redis_key(key, window), left + 1)
            count = int((await pipe.execute())[0])
        except Exception as exc:  # Redis down: count in this process rather than not at all
            _redis_unavailable(exc)
    if count is None:
        count = _local.incr(key, window)
    verdict = _verdict(key, count, left)
    if verdict.delay:
        await asyncio.sleep(verdict.delay)
    return verdict


def failed(kind: str, client: str) -> Verdict:
    """``afailed`` for sync code; it never sleeps (see the module docstring)."""
    key = _key(kind, client)
    window, left = _window()
    count = None
    if redis_up():
        try:
            pipe = sync_redis().pipeline(transaction=False)
            pipe.incr(_redis_key(key, window))
            pipe.expire(_redis_key(key, window), left + 1)
            count = int(pipe.execute()[0])
        except Exception as exc:
            _redis_unavailable(exc)
    if count is None:
        count = _local.incr(key, window)
    verdict = _verdict(key, count, left)
    return Verdict(retry_after=verdict.retry_after)


def client_of_scope(scope: dict[str, Any]) -> str:
    """The client address of an ASGI request."""
    header = settings.CLIENT_IP_HEADER.lower().encode()
    if header:
        for name, value in scope.get("headers", ()):
            if name == header:
                return value.decode("latin-1").rsplit(",", 1)[-1].strip()
    client = scope.get("client")
    return str(client[0]) if client else "-"


def client_of_meta(meta: dict[str, Any]) -> str:
    """The client address of a Django request (``request.META``)."""
    header = settings.CLIENT_IP_HEADER
    if header:
        value = meta.get("HTTP_" + header.upper().replace("-", "_"))
        if value:
            return str(value).rsplit(",", 1)[-1].strip()
    return str(meta.get("REMOTE_ADDR") or "-")


def client_of_request(request: Any) -> str | None:
    """The client address of a Django request for django-axes, which stores it as an IP
    address: None when there is no valid one (a login made in code, a garbled header)."""
    meta = getattr(request, "META", None) or {}
    for candidate in (client_of_meta(meta), meta.get("REMOTE_ADDR")):
        try:
            return str(ipaddress.ip_address(str(candidate)))
        except ValueError:
            continue
    return None


def admin_lockout_response(request: Any, *args: Any, **kwargs: Any) -> Any:
    """django-axes' answer to a locked-out admin login: 429 with ``Retry-After``."""
    from django.http import HttpResponse

    wait = int(settings.AXES_COOLOFF_TIME.total_seconds())
    response = HttpResponse(
        f"Too many failed logins from this address; try again in {wait // 60} minutes.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(wait)
    return response
