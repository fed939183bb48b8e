"""Liveness and readiness probes."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from hepgg.lib.redis import OUTAGE, redis_failed, sync_redis


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database (and Redis, when configured) answer; else 503 naming what failed."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if settings.REDIS_URL:
        # A real ping, breaker or not: readiness reports what is true now. The client's short
        # timeouts (REDIS_CONNECT_TIMEOUT, REDIS_SOCKET_TIMEOUT) bound how long it can take.
        try:
            sync_redis().ping()
            checks["redis"] = "ok"
        except OUTAGE as exc:
            redis_failed(exc)
            checks["redis"] = f"error: {type(exc).__name__}"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    failed = [name for name, state in checks.items() if state != "ok"]
    body = {"status": "ok" if not failed else "unavailable", "checks": checks}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)
