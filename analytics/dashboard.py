"""The usage dashboard's data, read from the rollups only (day buckets, session buckets, daily
stats) and the proxy's latest subscription limits per machine: a handful of indexed queries
whatever the history holds, so the page stays fast with a year of data.

Everything here is one account's (``account``) or every account's (``account=None``), for the UTC
days ``since`` to ``until`` inclusive.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Case, F, FloatField, Max, Min, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Cast, Coalesce, TruncDate

from accounts.models import Account, ApiKey, Machine
from proxy.models import MachineRateLimit
from usage.models import (
    SESSION_RANK,
    DailySeries,
    DailyStats,
    Dimension,
    Period,
    SessionBucket,
    SessionTotal,
    UsageBucket,
)
from usage.rollups import rollup_state

TOP = 8  # machines and keys shown one by one; the rest are summed as "other"
TOP_SESSIONS = 15
_TOKENS = (
    F("input_tokens") + F("output_tokens") + F("cache_creation_input_tokens")
    + F("cache_read_input_tokens")
)  # fmt: skip


@dataclass(frozen=True)
class Window:
    account: Account | None
    since: date
    until: date  # inclusive

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.until + timedelta(days=1), time.min, tzinfo=UTC)

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=n) for n in range((self.until - self.since).days + 1)]

    def scoped(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        queryset = queryset.filter(start__gte=self.start, start__lt=self.end)
        return queryset if self.account is None else queryset.filter(account=self.account)


def _money(value: Decimal | float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _stacked(
    rows: list[dict[str, Any]], key: str, days: list[date], labels: dict[Any, str], top: int | None
) -> dict[str, Any]:
    """Per-day tokens and cost series, one per value of ``key`` (the ``top`` largest by tokens,
    the others summed under "other")."""
    totals: dict[Any, int] = defaultdict(int)
    for row in rows:
        totals[row[key]] += row["tokens"]
    ranked = sorted(totals, key=lambda k: (-totals[k], labels.get(k, str(k))))
    ranked = [k for k in ranked if k is not None]  # None: the tail folded by the database
    shown = ranked if top is None else ranked[:top]
    index = {day: i for i, day in enumerate(days)}
    series: dict[str, dict[str, list[Any]]] = {}
    for row in rows:
        known = row[key] is not None and row[key] in shown
        name = labels.get(row[key], str(row[key])) if known else "other"
        entry = series.setdefault(name, {"tokens": [0] * len(days), "cost": [0.0] * len(days)})
        i = index[row["day"]]
        entry["tokens"][i] += row["tokens"]
        entry["cost"][i] = round(entry["cost"][i] + (row["cost"] or 0), 6)
    order = [labels.get(k, str(k)) for k in shown] + (["other"] if "other" in series else [])
    return {"series": [{"label": name, **series[name]} for name in order if name in series]}


def _top_series(buckets: QuerySet[Any], field: str, sums: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-day sums for the ``TOP`` values of ``field`` by tokens, the rest summed under None:
    the database ranks the values and folds the long tail (hundreds of machines) in one query,
    so only ~TOP rows a day come back."""
    top = (
        buckets.values(field)
        .annotate(total=Sum(_TOKENS))
        .order_by("-total", field)
        .values(field)[:TOP]
    )
    folded = Case(When(**{f"{field}__in": top}, then=F(field)), default=Value(None))
    rows = list(buckets.annotate(folded=folded).values("day", "folded").annotate(**sums))
    for row in rows:
        row[field] = row.pop("folded")
    return rows


def _series(window: Window, dimension: str) -> QuerySet[Any]:
    """The window's ``DailySeries`` rows of ``dimension``: the account's, or for every account the
    all-accounts rows of models and every account's rows of machines and keys."""
    rows = (
        DailySeries.objects.filter(
            dimension=dimension, start__gte=window.start, start__lt=window.end
        )
        .order_by()
        .annotate(day=TruncDate("start", tzinfo=UTC))
    )
    if window.account is not None:
        return rows.filter(account=window.account)
    return rows.filter(account=None) if dimension == Dimension.MODEL else rows


def analytics_dashboard(*, window: Window) -> dict[str, Any]:
    """Everything the analytics page draws, JSON-ready (see the module doc)."""
    days = window.days
    index = {day: i for i, day in enumerate(days)}
    # Dates and floats: a year of every account's series is thousands of rows, and building
    # datetimes and Decimals for them would cost more than the queries.
    sums = {
        "tokens": Coalesce(Sum(_TOKENS), 0),
        "cost": Cast(Sum("cost_usd"), FloatField()),
    }
    models = _series(window, Dimension.MODEL)
    by_model = list(models.values("day", "model").annotate(**sums))
    per_day = {
        row["day"]: row
        for row in models.values("day").annotate(
            requests=Coalesce(Sum("requests"), 0), errors=Coalesce(Sum("errors"), 0)
        )
    }
    totals: dict[str, Any] = models.aggregate(
        requests=Coalesce(Sum("requests"), 0),
        errors=Coalesce(Sum("errors"), 0),
        unpriced=Coalesce(Sum("unpriced_requests"), 0),
        input=Coalesce(Sum("input_tokens"), 0),
        output=Coalesce(Sum("output_tokens"), 0),
        cache_write=Coalesce(Sum("cache_creation_input_tokens"), 0),
        cache_read=Coalesce(Sum("cache_read_input_tokens"), 0),
        tokens=Coalesce(Sum(_TOKENS), 0),
        cost=Sum("cost_usd"),
    )
    machines = _series(window, Dimension.MACHINE).filter(machine__isnull=False)
    by_machine = _top_series(machines, "machine_id", sums)
    by_key = _top_series(
        _series(window, Dimension.KEY).filter(api_key__isnull=False), "api_key_id", sums
    )

    machine_labels = {
        m.id: m.hostname if window.account else f"{m.hostname} ({m.account.email})"
        for m in Machine.objects.filter(
            id__in={r["machine_id"] for r in by_machine}
        ).select_related("account")
    }
    key_labels = {
        k.id: (f"{k.name or k.prefix + '…'} · {k.model.slug}")
        + ("" if window.account else f" ({k.account.email})")
        for k in ApiKey.objects.filter(id__in={r["api_key_id"] for r in by_key}).select_related(
            "model", "account"
        )
    }

    requests = [per_day[day]["requests"] if day in per_day else 0 for day in days]
    errors = [per_day[day]["errors"] if day in per_day else 0 for day in days]
    totals["cost"] = _money(totals["cost"])

    stats = DailyStats.objects.filter(start__gte=window.start, start__lt=window.end)
    stats = stats.filter(account=window.account) if window.account else stats.filter(account=None)
    latency: dict[str, list[float | None]] = {
        name: [None] * len(days) for name in ("latency_p50", "latency_p95", "ttfb_p50", "ttfb_p95")
    }
    for stat in stats:
        i = index[stat.start.astimezone(UTC).date()]
        for name in latency:
            value = getattr(stat, f"{name}_ms")
            latency[name][i] = None if value is None else round(value, 1)

    error_rate = [
        round(100 * e / r, 2) if r else None for e, r in zip(errors, requests, strict=True)
    ]
    totals["error_rate"] = (
        round(100 * totals["errors"] / totals["requests"], 2) if totals["requests"] else None
    )
    return {
        # What the charts draw (the page hands it to dashboard.js as JSON).
        "charts": {
            "days": [day.isoformat() for day in days],
            "by_model": _stacked(by_model, "model", days, {}, None),
            "by_machine": _stacked(by_machine, "machine_id", days, machine_labels, TOP),
            "by_key": _stacked(by_key, "api_key_id", days, key_labels, TOP),
            "requests": requests,
            "errors": errors,
            "error_rate": error_rate,
            **latency,
        },
        "totals": dict(totals),
        "sessions": top_sessions(window),
        "subscriptions": subscription_limits(window.account),
        "rolled_up_through": rollup_state().recorded_through,
    }


def top_sessions(window: Window) -> list[dict[str, Any]]:
    """The Claude Code sessions of the window that cost the most (then used the most tokens),
    with what they did within the window.

    Sessions whose days all lie in the window count whole: their ``SessionTotal`` rows, read in
    rank order by an index. The few that straddle the window's first or last day (several-day
    sessions, by a partial index) are summed from their ``SessionBucket`` days in the window.
    """
    totals = SessionTotal.objects.order_by(*SESSION_RANK, "account_id", "session_id")
    if window.account is not None:
        totals = totals.filter(account=window.account)
    fields = ("account_id", "session_id", "requests", "tokens", "cost", "first", "last")
    inside = totals.filter(first_day__gte=window.start, last_day__lt=window.end).annotate(
        cost=F("cost_usd"), first=F("first_at"), last=F("last_at")
    )
    top = list(inside.filter(cost_usd__isnull=False).values(*fields)[:TOP_SESSIONS])
    if len(top) < TOP_SESSIONS:
        top += inside.filter(cost_usd__isnull=True).values(*fields)[: TOP_SESSIONS - len(top)]
    straddling = set(
        totals.filter(first_day__lt=F("last_day"), last_day__gte=window.start)
        .filter(first_day__lt=window.end)
        .filter(Q(first_day__lt=window.start) | Q(last_day__gte=window.end))
        .order_by()
        .values_list("account_id", "session_id")
    )
    rows = window.scoped(SessionBucket.objects.exclude(session_id="")).order_by()
    partial: list[dict[str, Any]] = []
    if straddling:
        partial = [
            row
            for row in rows.filter(
                account_id__in={account for account, _ in straddling},
                session_id__in={session for _, session in straddling},
            )
            .values("account_id", "session_id")
            .annotate(
                requests=Sum("requests"),
                tokens=Sum(_TOKENS),
                cost=Sum("cost_usd"),
                first=Min("first_at"),
                last=Max("last_at"),
            )
            .values(*fields)
            if (row["account_id"], row["session_id"]) in straddling
        ]
    top = sorted(
        top + partial,
        key=lambda t: (
            t["cost"] is None,
            -(t["cost"] or 0),
            -t["tokens"],
            t["account_id"],
            t["session_id"],
        ),
    )[:TOP_SESSIONS]
    if not top:
        return []
    details: dict[tuple[int, str], dict[str, set[str]]] = defaultdict(
        lambda: {"models": set(), "machines": set()}
    )
    for row in rows.filter(
        account_id__in={t["account_id"] for t in top}, session_id__in={t["session_id"] for t in top}
    ).values("account_id", "session_id", "model_names", "machine__hostname"):
        entry = details[(row["account_id"], row["session_id"])]
        entry["models"].update(name for name in row["model_names"].split(",") if name)
        if row["machine__hostname"]:
            entry["machines"].add(row["machine__hostname"])
    emails = dict(
        Account.objects.filter(id__in={t["account_id"] for t in top}).values_list("id", "email")
    )
    return [
        {
            "session_id": t["session_id"],
            "account": emails.get(t["account_id"], ""),
            "machines": sorted(details[(t["account_id"], t["session_id"])]["machines"]),
            "models": sorted(details[(t["account_id"], t["session_id"])]["models"]),
            "first_at": t["first"],
            "last_at": t["last"],
            "requests": t["requests"],
            "tokens": t["tokens"],
            "cost": _money(t["cost"]),
        }
        for t in top
    ]


def subscription_limits(account: Account | None) -> list[dict[str, Any]]:
    """Each machine's latest 5-hour and weekly subscription utilisation, as the proxy last saw
    it in the ``anthropic-ratelimit-unified-*`` headers (subscription logins only)."""
    limits = MachineRateLimit.objects.select_related("machine__account").order_by(
        "machine__account__email", "machine__hostname"
    )
    if account is not None:
        limits = limits.filter(machine__account=account)
    return [
        {
            "machine": limit.machine.hostname,
            "account": limit.machine.account.email,
            "status": limit.status,
            "representative_claim": str(limit.values.get("representative-claim", "")),
            "five_hour": _percent(limit.five_hour_utilization),
            "five_hour_reset": limit.five_hour_reset,
            "weekly": _percent(limit.weekly_utilization),
            "weekly_reset": limit.weekly_reset,
            "observed_at": limit.observed_at,
        }
        for limit in limits[:500]
    ]


def _percent(fraction: float | None) -> float | None:
    """Anthropic reports utilisation as a fraction (0.42); the page shows 42 (%), capped at 100
    for the bar's width (the number itself is shown as sent)."""
    return None if fraction is None else round(fraction * 100, 1)


CSV_COLUMNS = (
    "day", "account", "source", "model", "api_key", "machine", "requests", "input_tokens",
    "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cost_usd",
    "unpriced_requests", "errors", "latency_p50_ms", "latency_p95_ms", "ttfb_p50_ms",
    "ttfb_p95_ms",
)  # fmt: skip


def analytics_csv(*, window: Window) -> Iterator[str]:
    """The window's day buckets as CSV lines (header first), one per account x source x model x
    key or machine and day."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(list(CSV_COLUMNS))
    buckets = (
        window.scoped(UsageBucket.objects.filter(period=Period.DAY))
        .order_by("start", "account__email", "source", "model")
        .values_list(
            "start",
            "account__email",
            "source",
            "model",
            "api_key__prefix",
            "api_key__name",
            "machine__hostname",
            "requests",
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cost_usd",
            "unpriced_requests",
            "errors",
            "latency_p50_ms",
            "latency_p95_ms",
            "ttfb_p50_ms",
            "ttfb_p95_ms",
        )
    )
    for row in buckets.iterator(chunk_size=5000):
        start, email, source, model, prefix, name, host, *numbers = row
        key = f"{name or ''} ({prefix}…)".strip() if prefix else ""
        yield line(
            [
                start.astimezone(UTC).date().isoformat(),
                email,
                source,
                model,
                key,
                host or "",
                *numbers,
            ]
        )
