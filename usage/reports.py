"""``GET /usage`` and ``GET /me``: exact sums from the rollups plus the raw events they do not
cover, so the answer costs a few indexed reads whatever the history holds.

``usage_summarize`` splits the requested time range into parts (``plan_range``):

- whole UTC days read from the day rollups (``UsageBucket``; sessions from ``SessionBucket``),
- whole hours at the range's ends read from the hour rollups,
- partial hours at the ends, and every *dirty* hour, read from the raw events.

An hour is dirty when its rollup may be out of date: it is pending, or it holds an event recorded
after the watermark (a new request, a late ``ccas sync``, a proxy record replacing a synced one).
A dirty hour is read raw in full and its rollup is left out, so nothing is counted twice or missed,
whatever a concurrent rollup run does. Days before ``RollupState.purged_before`` (retention) are
final: their rollups are read as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncHour, TruncMonth, TruncWeek

from accounts.models import Account
from usage.models import (
    TOKEN_FIELDS,
    Period,
    RollupPending,
    SessionBucket,
    UsageBucket,
    UsageEvent,
    bucket_label,
)
from usage.rollups import DAY, HOUR, floor_day, floor_hour, rollup_state

GROUP_BY = ("day", "week", "month", "model", "machine", "key", "session")

_TRUNC = {"day": TruncDay, "week": TruncWeek, "month": TruncMonth}
_DIMENSION = {"model": "model", "machine": "machine__public_id", "key": "api_key__public_id"}

Bound = datetime | None
Span = tuple[Bound, Bound]


def ceil_hour(moment: datetime) -> datetime:
    start = floor_hour(moment)
    return start if start == moment else start + HOUR


def ceil_day(moment: datetime) -> datetime:
    start = floor_day(moment)
    return start if start == moment else start + DAY


@dataclass
class Plan:
    """Where each part of a time range is read from (see the module doc)."""

    days: Span | None = None  # day rollups with start in [a, b), less skip_days
    skip_days: set[datetime] = field(default_factory=set)
    hours: list[tuple[datetime, datetime]] = field(default_factory=list)  # hour rollups
    skip_hours: set[datetime] = field(default_factory=set)
    raw: list[Span] = field(default_factory=list)  # raw events with occurred_at in [a, b)


def _merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, with overlapping or touching spans joined (None bounds are open ends)."""
    low = datetime.min.replace(tzinfo=None)
    ordered = sorted(spans, key=lambda s: (s[0] is not None, (s[0] or low).replace(tzinfo=None)))
    merged: list[Span] = []
    for start, end in ordered:
        if merged:
            last_start, last_end = merged[-1]
            if last_end is None:
                continue
            if start is None or start <= last_end:
                merged[-1] = (last_start, None if end is None else max(last_end, end))
                continue
        merged.append((start, end))
    return merged


def plan_range(
    since: Bound, until: Bound, dirty_hours: Iterable[datetime], *, hourly: bool = True
) -> Plan:
    """Split ``[since, until)`` into rollup and raw parts; ``hourly=False`` for tables that only
    have day rollups (their partial days are read raw)."""
    plan = Plan()
    if since is not None and until is not None and since >= until:
        return plan
    dirty = {
        h
        for h in dirty_hours
        if (since is None or h + HOUR > since) and (until is None or h < until)
    }
    s_hour = ceil_hour(since) if since is not None else None
    u_hour = floor_hour(until) if until is not None else None
    s_day = ceil_day(since) if since is not None else None
    u_day = floor_day(until) if until is not None else None
    whole_days = s_day is None or u_day is None or s_day < u_day
    raw: list[Span] = []
    if whole_days:
        plan.days = (s_day, u_day)
        plan.skip_days = {floor_day(h) for h in dirty}
    if hourly:
        if whole_days:
            if since is not None and s_hour < s_day:  # type: ignore[operator]
                plan.hours.append((s_hour, s_day))  # type: ignore[arg-type]
            if until is not None and u_day < u_hour:  # type: ignore[operator]
                plan.hours.append((u_day, u_hour))  # type: ignore[arg-type]
            plan.hours += [(day, day + DAY) for day in sorted(plan.skip_days)]
            whole_hours = True
        else:
            whole_hours = s_hour < u_hour  # type: ignore[operator]
            if whole_hours:
                plan.hours.append((s_hour, u_hour))  # type: ignore[arg-type]
        if not whole_hours:
            plan.raw = [(since, until)]
            return plan
        plan.skip_hours = dirty
        if since is not None and since < s_hour:  # type: ignore[operator]
            raw.append((since, s_hour))
        if until is not None and u_hour < until:  # type: ignore[operator]
            raw.append((u_hour, until))
        raw += [
            (
                h if since is None else max(h, since),
                h + HOUR if until is None else min(h + HOUR, until),
            )
            for h in dirty
        ]
    else:
        if not whole_days:
            plan.raw = [(since, until)]
            return plan
        if since is not None and since < s_day:  # type: ignore[operator]
            raw.append((since, s_day))
        if until is not None and u_day < until:  # type: ignore[operator]
            raw.append((u_day, until))
        raw += [
            (
                d if since is None else max(d, since),
                d + DAY if until is None else min(d + DAY, until),
            )
            for d in plan.skip_days
        ]
    plan.raw = _merge(raw)
    return plan


def dirty_hours(account: Account | None = None) -> tuple[set[datetime], bool]:
    """The hours whose rollups may be stale, and whether anything was ever rolled up."""
    state = rollup_state()
    if state.recorded_through is None:
        return set(), False
    tail = UsageEvent.objects.filter(recorded_at__gt=state.recorded_through)
    if account is not None:
        tail = tail.filter(account=account)
    # One round trip: the pending hours and the tail's hours (UNION drops the duplicates).
    hours = set(
        RollupPending.objects.order_by()
        .values_list("hour", flat=True)
        .union(tail.order_by().annotate(hour=TruncHour("occurred_at")).values_list("hour"))
    )
    if state.purged_before is not None:  # final days: their raw events are gone
        hours = {h for h in hours if h >= state.purged_before}
    return hours, True


def _span_q(name: str, spans: Iterable[Span]) -> Q | None:
    q: Q | None = None
    for start, end in spans:
        part = Q()
        if start is not None:
            part &= Q(**{f"{name}__gte": start})
        if end is not None:
            part &= Q(**{f"{name}__lt": end})
        q = part if q is None else q | part
    return q


def _rollup_q(plan: Plan) -> Q | None:
    q: Q | None = None
    if plan.days is not None:
        days = Q(period=Period.DAY)
        start, end = plan.days
        if start is not None:
            days &= Q(start__gte=start)
        if end is not None:
            days &= Q(start__lt=end)
        if plan.skip_days:
            days &= ~Q(start__in=plan.skip_days)
        q = days
    hours = _span_q("start", plan.hours)
    if hours is not None:
        hours &= Q(period=Period.HOUR)
        if plan.skip_hours:
            hours &= ~Q(start__in=plan.skip_hours)
        q = hours if q is None else q | hours
    return q


def _session_q(plan: Plan) -> Q | None:
    if plan.days is None:
        return None
    q = Q()
    start, end = plan.days
    if start is not None:
        q &= Q(start__gte=start)
    if end is not None:
        q &= Q(start__lt=end)
    if plan.skip_days:
        q &= ~Q(start__in=plan.skip_days)
    return q


# Aggregates are named "sum_<field>": a name equal to a field's would shadow the field in filters.
_ROLLED = {
    "sum_requests": Coalesce(Sum("requests"), 0),
    **{f"sum_{name}": Coalesce(Sum(name), 0) for name in TOKEN_FIELDS},
    "sum_cost_usd": Sum("cost_usd"),
    "sum_unpriced_requests": Coalesce(Sum("unpriced_requests"), 0),
}
_RAW = {
    "sum_requests": Count("id"),
    **{f"sum_{name}": Coalesce(Sum(name), 0) for name in TOKEN_FIELDS},
    "sum_cost_usd": Sum("cost_usd"),
    "sum_unpriced_requests": Count("id", filter=Q(cost_usd__isnull=True)),
}
_COUNTS = ("requests", *TOKEN_FIELDS, "unpriced_requests")


def _grouped(queryset: QuerySet[Any], group_by: str, when: str, sums: dict[str, Any]) -> list:
    if group_by == "session":
        bucket: Any = F("session_id")
    elif group_by in _TRUNC:
        bucket = _TRUNC[group_by](when)
    else:
        bucket = F(_DIMENSION[group_by])
    return list(queryset.order_by().annotate(bucket=bucket).values("bucket").annotate(**sums))


def _public(totals: dict[str, Any]) -> dict[str, Any]:
    cost = totals["cost_usd"]
    return {
        **{name: totals[name] for name in ("requests", *TOKEN_FIELDS)},
        "cost_usd": None if cost is None else round(float(cost), 8),
        "unpriced_requests": totals["unpriced_requests"],
    }


def usage_summarize(
    *,
    account: Account,
    group_by: str = "day",
    since: datetime | None = None,
    until: datetime | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """``{"data": [{"bucket", "requests", token counts, "cost_usd", "unpriced_requests"}],
    "totals": {...}}`` for ``account`` over ``[since, until)``; exact (see the module doc).

    ``cost_usd`` sums the priced events (null when none was priced); ``unpriced_requests`` counts
    the others.
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")
    dirty, rolled = dirty_hours(account)
    hourly = group_by != "session"
    plan = plan_range(since, until, dirty, hourly=hourly) if rolled else Plan(raw=[(since, until)])
    rows: list[dict[str, Any]] = []
    rollup_model = UsageBucket if hourly else SessionBucket
    rollup_q = _rollup_q(plan) if hourly else _session_q(plan)
    if rollup_q is not None:
        rollups = rollup_model.objects.filter(rollup_q, account=account)
        if source:
            rollups = rollups.filter(source=source)
        rows += _grouped(rollups, group_by, "start", _ROLLED)
    raw_q = _span_q("occurred_at", plan.raw)
    if raw_q is not None:
        events = UsageEvent.objects.filter(raw_q, account=account)
        if source:
            events = events.filter(source=source)
        rows += _grouped(events, group_by, "occurred_at", _RAW)
    buckets: dict[Any, dict[str, Any]] = {}
    total = {name: 0 for name in _COUNTS} | {"cost_usd": None}
    for row in rows:
        label = bucket_label(row["bucket"], group_by)
        into = buckets.setdefault(label, {name: 0 for name in _COUNTS} | {"cost_usd": None})
        for target in (into, total):
            for name in _COUNTS:
                target[name] += row[f"sum_{name}"]
            if row["sum_cost_usd"] is not None:
                target["cost_usd"] = (target["cost_usd"] or Decimal(0)) + row["sum_cost_usd"]
    ordered = sorted(buckets.items(), key=lambda item: (item[0] is None, item[0] or ""))
    return {
        "data": [{"bucket": label, **_public(values)} for label, values in ordered],
        "totals": _public(total),
    }
