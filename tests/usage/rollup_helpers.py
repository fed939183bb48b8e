"""Building usage histories for the rollup and report tests, and reading them back raw."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from accounts.models import Account, ApiKey, Machine
from usage.models import TOKEN_FIELDS, UsageEvent
from usage.rollups import percentile

T0 = datetime(2026, 11, 1, tzinfo=UTC)
MODELS = ["claude-sonnet-5-5", "claude-opus-4-8", "cf-gpt-oss-20b"]


def event(account: Account, when: datetime, *, recorded_at: datetime | None = None, **fields):
    """One event, written as the usage writer would (``recorded_at`` defaults to its time)."""
    fields.setdefault("source", "proxy")
    fields.setdefault("model", MODELS[0])
    return UsageEvent.objects.create(
        account=account, occurred_at=when, recorded_at=recorded_at or when, **fields
    )


def history(
    account: Account,
    *,
    machine: Machine | None = None,
    key: ApiKey | None = None,
    days: int = 3,
    per_day: int = 40,
    seed: int = 7,
    start: datetime = T0,
) -> list[UsageEvent]:
    """``per_day`` events a day with varied models, tokens, costs (some unpriced), errors,
    latencies and sessions, spread over every hour."""
    rng = random.Random(seed)
    rows = []
    for day in range(days):
        for n in range(per_day):
            when = start + timedelta(days=day, seconds=rng.randrange(86400))
            source = rng.choice(["proxy", "proxy", "sync", "gateway"])
            unpriced = rng.random() < 0.1
            rows.append(
                UsageEvent(
                    account=account,
                    source=source,
                    model="cf-gpt-oss-20b" if source == "gateway" else rng.choice(MODELS[:2]),
                    api_key=key if source == "gateway" else None,
                    machine=machine if source != "gateway" else None,
                    occurred_at=when,
                    recorded_at=when,
                    input_tokens=rng.randrange(1, 5000),
                    output_tokens=rng.randrange(1, 2000),
                    cache_creation_input_tokens=rng.randrange(0, 3000),
                    cache_read_input_tokens=rng.randrange(0, 50000),
                    cost_usd=None if unpriced else Decimal(rng.randrange(1, 10**6)) / 10**8,
                    status_code=rng.choice([200] * 12 + [429, 529]),
                    latency_ms=None if rng.random() < 0.05 else rng.uniform(50, 20000),
                    ttfb_ms=None if rng.random() < 0.1 else rng.uniform(20, 3000),
                    session_id="" if source == "gateway" else f"s-{day}-{n % 3}",
                    details={"error_type": "overloaded_error"} if rng.random() < 0.03 else {},
                )
            )
    return UsageEvent.objects.bulk_create(rows)


def raw_totals(events: list[UsageEvent] | Any) -> dict[str, Any]:
    """What a bucket over ``events`` must hold, computed here from the raw rows."""
    events = list(events)
    costs = [e.cost_usd for e in events if e.cost_usd is not None]
    latencies = [e.latency_ms for e in events if e.latency_ms is not None]
    ttfbs = [e.ttfb_ms for e in events if e.ttfb_ms is not None]
    return {
        "requests": len(events),
        **{name: sum(getattr(e, name) for e in events) for name in TOKEN_FIELDS},
        "cost_usd": sum(costs, Decimal(0)) if costs else None,
        "unpriced_requests": len(events) - len(costs),
        "errors": sum(
            1
            for e in events
            if (e.status_code or 0) >= 400 or "error" in e.details or "error_type" in e.details
        ),
        "latency_p50_ms": percentile(latencies, 0.5),
        "latency_p95_ms": percentile(latencies, 0.95),
        "ttfb_p50_ms": percentile(ttfbs, 0.5),
        "ttfb_p95_ms": percentile(ttfbs, 0.95),
    }


def bucket_values(bucket: Any) -> dict[str, Any]:
    return {name: getattr(bucket, name) for name in raw_totals([])}


def close(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal, floats to a millionth (percentiles are computed in SQL or in Python)."""
    if a.keys() != b.keys():
        return False
    for name, value in a.items():
        other = b[name]
        if isinstance(value, float) or isinstance(other, float):
            if value is None or other is None or abs(value - other) > 1e-6 * max(1, abs(value)):
                return False
        elif value != other:
            return False
    return True
