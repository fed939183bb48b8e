"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from hepgg.lib.redis import OUTAGE, redis_failed, sync_redis

# /readyz answers within this, whatever the dependencies do: a load balancer's probe must not
# hang on a database that swallows packets (its connect timeout alone is 2 s at least).
CHECK_SECONDS = 1.5

_running: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[str]]] = {}


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # a worker thread's connection: not left behind


def _redis() -> None:
    # A real ping, breaker or not: readiness reports what is true now (the client's short
    # timeouts bound it); a failure also tells the breaker.
    try:
        sync_redis().ping()
    except OUTAGE as exc:
        redis_failed(exc)
        raise


def _outcome(check: Callable[[], None]) -> str:
    try:
        check()
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def _probe(name: str, check: Callable[[], None]) -> str:
    """``check``'s outcome, run in a worker thread, or an error after ``CHECK_SECONDS``.

    Probes that arrive while one is still running share it, so a dependency that hangs ties
    up one thread, not one per probe."""
    loop = asyncio.get_running_loop()
    running = _running.get(name)
    if running is None or running[0] is not loop or running[1].done():
        future = asyncio.ensure_future(sync_to_async(_outcome, thread_sensitive=False)(check))
        _running[name] = running = (loop, future)
    try:
        return await asyncio.wait_for(asyncio.shield(running[1]), CHECK_SECONDS)
    except TimeoutError:
        return f"error: no answer within {CHECK_SECONDS:g} s"


async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database (and Redis, when configured) answer; else 503 naming what failed.
    Answers within ``CHECK_SECONDS`` (the checks run side by side)."""
    names = ["database", *(["redis"] if settings.REDIS_URL else [])]
    checks = {"database": _database, "redis": _redis}
    outcomes = await asyncio.gather(*(_probe(name, checks[name]) for name in names))
    results = dict(zip(names, outcomes, strict=True))
    failed = [name for name, state in results.items() if state != "ok"]
    body: dict[str, object] = {"status": "ok" if not failed else "unavailable", "checks": results}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)
