"""Celery tasks: thin wrappers that take times, call one service, and retry only what a retry can
fix. Imported by the worker (``celery -A hepgg.celery worker``), never by the web processes: those
enqueue nothing (beat schedules these, and late events reach the rollup through the watermark)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from usage.rollups import usage_events_purge, usage_rollup

# A lost or refused database connection is transient (a restart, a failover): the next attempt
# finds the work where the failed one left it, since every step is a replace in a transaction.
_TRANSIENT = (OperationalError, InterfaceError)


@shared_task(
    name="usage.rollup",
    autoretry_for=_TRANSIENT,
    retry_backoff=5,
    retry_kwargs={"max_retries": 3},
    acks_late=True,
    soft_time_limit=540,
    time_limit=600,
)
def rollup_usage(since: str | None = None) -> dict[str, Any]:
    """Run the usage rollup; ``since`` (ISO 8601) recomputes every hour from then on."""
    moment = datetime.fromisoformat(since) if since else None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return usage_rollup(since=moment).as_dict()


@shared_task(
    name="usage.purge_events",
    autoretry_for=_TRANSIENT,
    retry_backoff=30,
    retry_kwargs={"max_retries": 3},
    acks_late=True,
    soft_time_limit=1500,
    time_limit=1800,
)
def purge_usage_events() -> int:
    """Delete raw usage events older than the retention window (rollups are kept)."""
    return usage_events_purge()
