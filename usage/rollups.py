"""Rolling usage events up into hour and day buckets: ``usage_rollup()`` and
``usage_events_purge()``, the two services behind the Celery tasks, the management commands and
the embedded timer.

How a run works (zulip's ``analytics`` idea: recompute and replace, behind a watermark):

1. **Lease.** One run at a time: a conditional UPDATE takes ``RollupState.lease_until``; a crashed
   run's lease expires after ``USAGE_ROLLUP_LEASE_SECONDS``.
2. **Reprice.** When the price table changed since the last run, the events of every changed
   pattern get their cost recomputed (``catalog.pricing``) and their ``recorded_at`` bumped, which
   sends their hours through the steps below.
3. **Collect.** Every hour holding an event recorded after the watermark
   (``RollupState.recorded_through``) and before ``now - USAGE_ROLLUP_SETTLE_SECONDS`` goes into
   ``RollupPending``, and the watermark moves up, in one transaction. Late events (a ``ccas sync``
   of last week, spilled events replayed after an outage) reopen their hours this way.
4. **Recompute.** Day by day, oldest first, each in its own transaction: the pending hours' hour
   buckets, then the day's day buckets, session buckets and daily stats are recomputed from the raw
   events and replace the old rows, and the day's pending rows are deleted. A run that crashes
   loses only the day it was in: its transaction rolls back and the day stays pending for the
   next run. Nothing is ever incremented, so a retry cannot double count.

On PostgreSQL a day is read in two passes over its raw events, totals then percentiles
(``percentile_cont``), see ``_recompute_day_sql``; elsewhere (SQLite) the same numbers are
computed in Python. The dashboard's tables (``DailySeries``, ``SessionTotal``) are rebuilt from
the day's new buckets and sessions.

Retention: ``usage_events_purge`` deletes raw events older than ``USAGE_RAW_RETENTION_DAYS`` once
their hours are rolled up; rollups are kept, and days before ``RollupState.purged_before`` are
final (a late event for such a day is ignored, and deleted by the next purge).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from catalog.models import Price
from catalog.pricing import PriceTable, price_row
from usage.models import (
    TOKEN_FIELDS,
    DailySeries,
    DailyStats,
    Dimension,
    Period,
    RollupPending,
    RollupState,
    SessionBucket,
    SessionTotal,
    UsageBucket,
    UsageEvent,
)

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class RollupResult:
    ran: bool = True  # False: another run held the lease
    hours: int = 0  # hours recomputed
    days: int = 0  # days recomputed
    pending: int = 0  # hours still pending (a time budget ran out)
    repriced: int = 0  # events whose cost changed with the price table
    ignored_late: int = 0  # hours of late events for days already purged
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollup_state() -> RollupState:
    state, _ = RollupState.objects.get_or_create(pk=1)
    return state


# -- the lease ---------------------------------------------------------------------------------
def _lease_take(owner: str) -> bool:
    rollup_state()
    now = timezone.now()
    taken = (
        RollupState.objects.filter(pk=1)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            lease_until=now + timedelta(seconds=settings.USAGE_ROLLUP_LEASE_SECONDS),
            lease_owner=owner,
        )
    )
    return taken == 1


def _lease_renew(owner: str) -> bool:
    until = timezone.now() + timedelta(seconds=settings.USAGE_ROLLUP_LEASE_SECONDS)
    return RollupState.objects.filter(pk=1, lease_owner=owner).update(lease_until=until) == 1


def _lease_release(owner: str) -> None:
    RollupState.objects.filter(pk=1, lease_owner=owner).update(lease_until=None, lease_owner="")


# -- reprice -----------------------------------------------------------------------------------
def _model_regex(pattern: str) -> str:
    """The pattern as a regular expression both PostgreSQL and Python read alike."""
    pieces = (
        "".join(c if c.isalnum() else f"\\{c}" for c in piece) for piece in pattern.split("*")
    )
    return "^" + ".*".join(pieces) + "$"


def _reprice(state: RollupState, now: datetime) -> int:
    """Recompute the cost of the events a price change affects; returns how many changed."""
    prices = list(Price.objects.all())
    seen = {
        f"{p.effective_from.isoformat()}|{p.pattern}": [
            p.rates(),
            p.long_prompt_threshold,
            p.long_rates(),
        ]
        for p in prices
    }
    if state.prices_seen is None:  # the first run: events were priced by this table already
        state.prices_seen = seen
        state.save(update_fields=["prices_seen"])
        return 0
    if seen == state.prices_seen:
        return 0
    # Writers keep the table for GATEWAY_CATALOG_CACHE_SECONDS: reprice once they all have it.
    settle = timedelta(seconds=settings.GATEWAY_CATALOG_CACHE_SECONDS + 1)
    if prices and max(p.updated_at for p in prices) > now - settle:
        return 0
    old = state.prices_seen
    changed = {key for key in seen.keys() | old.keys() if seen.get(key) != old.get(key)}
    table = PriceTable(price_row(p) for p in prices)
    repriced = 0
    for key in sorted(changed):
        day, pattern = key.split("|", 1)
        since = datetime.fromisoformat(day).replace(tzinfo=UTC)
        events = UsageEvent.objects.filter(
            model__regex=_model_regex(pattern), occurred_at__gte=since
        ).order_by("id")
        last_id = 0
        while True:
            chunk = list(
                events.filter(id__gt=last_id).values(
                    "id", "model", "occurred_at", "cost_usd", "details", *TOKEN_FIELDS
                )[:2000]
            )
            if not chunk:
                break
            last_id = chunk[-1]["id"]
            updates = []
            for row in chunk:
                cost = table.cost(
                    model=row["model"],
                    occurred_at=row["occurred_at"],
                    cache_creation=(row["details"] or {}).get("cache_creation"),
                    **{name: row[name] for name in TOKEN_FIELDS},
                )
                if cost != row["cost_usd"]:
                    updates.append(UsageEvent(id=row["id"], cost_usd=cost, recorded_at=now))
            UsageEvent.objects.bulk_update(updates, ["cost_usd", "recorded_at"])
            repriced += len(updates)
    state.prices_seen = seen
    state.save(update_fields=["prices_seen"])
    if repriced:
        logger.info("repriced %d usage events after a price table change", repriced)
    return repriced


# -- collect -----------------------------------------------------------------------------------
def _pend(hours: set[datetime]) -> None:
    RollupPending.objects.bulk_create(
        [RollupPending(hour=hour) for hour in hours], ignore_conflicts=True, batch_size=1000
    )


def _collect(now: datetime) -> int:
    """Move the watermark up to ``now - settle``; returns the number of late hours ignored."""
    cut = now - timedelta(seconds=settings.USAGE_ROLLUP_SETTLE_SECONDS)
    with transaction.atomic():
        state = RollupState.objects.select_for_update().get(pk=1)
        if state.recorded_through is not None and cut <= state.recorded_through:
            return 0
        events = UsageEvent.objects.filter(recorded_at__lte=cut)
        if state.recorded_through is not None:
            events = events.filter(recorded_at__gt=state.recorded_through)
        hours = set(
            events.order_by()
            .annotate(hour=TruncHour("occurred_at"))
            .values_list("hour", flat=True)
            .distinct()
        )
        closed = {h for h in hours if state.purged_before and h < state.purged_before}
        if closed:
            logger.warning(
                "%d hour(s) got events older than the retention window (before %s): ignored",
                len(closed),
                state.purged_before,
            )
        _pend(hours - closed)
        state.recorded_through = cut
        state.save(update_fields=["recorded_through"])
    return len(closed)


def usage_rollup_mark(*, since: datetime) -> int:
    """Send every hour with events from ``since`` on through the next run (``--since``).

    Raises ``ValueError`` when ``since`` is before the retention window: those days' raw events
    are gone and their rollups are final.
    """
    state = rollup_state()
    if state.purged_before is not None and since < state.purged_before:
        raise ValueError(
            f"Raw events before {state.purged_before:%Y-%m-%d} were deleted by the retention "
            "policy; rollups before that day are final and cannot be recomputed."
        )
    hours = set(
        UsageEvent.objects.filter(occurred_at__gte=floor_hour(since))
        .order_by()
        .annotate(hour=TruncHour("occurred_at"))
        .values_list("hour", flat=True)
        .distinct()
    )
    # Hours that have buckets but no events any more (deleted events) are recomputed too.
    hours |= set(
        UsageBucket.objects.filter(period=Period.HOUR, start__gte=floor_hour(since))
        .values_list("start", flat=True)
        .distinct()
    )
    _pend(hours)
    return len(hours)


# -- recompute: PostgreSQL -----------------------------------------------------------------------
def _q(name: str) -> str:
    return connection.ops.quote_name(name)


_ERROR_SQL = "(status_code >= 400 OR details ?| array['error', 'error_type'])"
_TOTALS = (  # (column, how it is computed from the events)
    ("requests", "count(*)"),
    ("input_tokens", "coalesce(sum(input_tokens), 0)"),
    ("output_tokens", "coalesce(sum(output_tokens), 0)"),
    ("cache_creation_input_tokens", "coalesce(sum(cache_creation_input_tokens), 0)"),
    ("cache_read_input_tokens", "coalesce(sum(cache_read_input_tokens), 0)"),
    ("cost_usd", "sum(cost_usd)"),
    ("unpriced_requests", "count(*) FILTER (WHERE cost_usd IS NULL)"),
    ("errors", f"count(*) FILTER (WHERE {_ERROR_SQL})"),
)
_TOTAL_FIELDS = {column for column, _ in _TOTALS}
_TOTALS_COLUMNS = ", ".join(column for column, _ in _TOTALS)
_TOTALS_SQL_NAMED = ", ".join(f"{expression} AS {column}" for column, expression in _TOTALS)
_TOTALS_RESUMMED = ", ".join(f"sum({column})" for column, _ in _TOTALS)
_PERCENTILE_COLUMNS = "latency_p50_ms, latency_p95_ms, ttfb_p50_ms, ttfb_p95_ms"


_DIMS = "account_id, source, model, api_key_id, machine_id"
_PERCENTILE_SQL_NAMED = ", ".join(
    f"percentile_cont({p}) WITHIN GROUP (ORDER BY {column}) AS {column[:-3]}_p{p[2:]:0<2}_ms"
    for column in ("latency_ms", "ttfb_ms")
    for p in ("0.5", "0.95")
)
_SUMS = ", ".join(f"sum({column}) AS {column}" for column, _ in _TOTALS)
# GROUPING(account_id, d, key) of the percentile pass: which rollup level a row is.
_G_HOUR, _G_DAY, _G_ACCOUNT, _G_ALL = 0, 1, 3, 7


def _recompute_day_sql(day: datetime, hours: list[datetime]) -> None:
    """The day's rollups from one pass over its raw events (a day can hold millions).

    1. The pass hashes the events at the finest grain anything needs (hour x account x source x
       model x key x machine x session) into a temporary table: totals, and the latencies and
       TTFBs in arrays. Every other total (hour and day buckets, sessions, daily stats) is a sum
       of its rows, and sessions are grouped from it.
    2. Percentiles cannot be summed. The day's dimension tuples are numbered in order (``d``),
       each fine row gets the integer ``d * 32 + hour``, the fine rows (not the events) are
       sorted by it and their arrays unnested in that order; one grouped pass then gives every
       hour bucket's, day bucket's, account's and the day's ``percentile_cont`` (nested grouping
       sets, each a prefix of the one before: its sort finds the rows already in order).
    """
    events = _q(UsageEvent._meta.db_table)
    buckets = _q(UsageBucket._meta.db_table)
    sessions = _q(SessionBucket._meta.db_table)
    stats = _q(DailyStats._meta.db_table)
    series = _q(DailySeries._meta.db_table)
    totals = _q(SessionTotal._meta.db_table)
    bucket_columns = f"period, start, {_DIMS}, {_TOTALS_COLUMNS}, {_PERCENTILE_COLUMNS}"
    dims_f = ", ".join(f"f.{name}" for name in _DIMS.split(", "))
    fine_sums = ", ".join(f"sum(f.{column}) AS {column}" for column, _ in _TOTALS)
    params = {
        "day": day,
        "next": day + DAY,
        "hours": sorted(int((hour - day) / HOUR) for hour in hours),
    }
    with connection.cursor() as cursor:
        # For this transaction only: sorts and hashes in memory, no parallel workers or JIT for a
        # background job, no plain index scan (the account index would read the day in random
        # order), and hashing rather than sorting wherever text is grouped or joined on (the
        # planner's estimates of these temporary tables are far off).
        for setting in (
            "work_mem = '256MB'",
            "max_parallel_workers_per_gather = 0",
            "jit = off",
            "enable_indexscan = off",
            "enable_sort = off",
            "enable_mergejoin = off",
            "enable_nestloop = off",
        ):
            cursor.execute(f"SET LOCAL {setting}")
        cursor.execute(
            f"CREATE TEMPORARY TABLE rollup_fine ON COMMIT DROP AS "  # noqa: S608
            f"SELECT extract(hour FROM occurred_at AT TIME ZONE 'UTC')::int AS hour, {_DIMS}, "
            f"session_id, {_TOTALS_SQL_NAMED}, min(occurred_at) AS first_at, "
            f"max(occurred_at) AS last_at, array_agg(latency_ms) AS latencies, "
            f"array_agg(ttfb_ms) AS ttfbs FROM {events} "
            f"WHERE occurred_at >= %(day)s AND occurred_at < %(next)s "
            f"GROUP BY 1, {_DIMS}, session_id",
            params,
        )
        cursor.execute(
            "CREATE TEMPORARY TABLE rollup_dims ON COMMIT DROP AS "
            "SELECT row_number() OVER (ORDER BY account_id, source, model, k, m) AS d, * "
            "FROM (SELECT DISTINCT account_id, source, model, coalesce(api_key_id, 0) AS k, "
            "coalesce(machine_id, 0) AS m FROM rollup_fine) AS dims"
        )
        cursor.execute(
            "CREATE TEMPORARY TABLE rollup_keyed ON COMMIT DROP AS "
            "SELECT x.d, x.d * 32 + f.hour AS key, f.* FROM rollup_fine AS f "
            "JOIN rollup_dims AS x ON x.account_id = f.account_id AND x.source = f.source "
            "AND x.model = f.model AND x.k = coalesce(f.api_key_id, 0) "
            "AND x.m = coalesce(f.machine_id, 0)"
        )
        cursor.execute("SET LOCAL enable_sort = on")
        cursor.execute("SET LOCAL enable_nestloop = on")
        cursor.execute(
            f"CREATE TEMPORARY TABLE rollup_pct ON COMMIT DROP AS "  # noqa: S608
            f"SELECT GROUPING(account_id, d, key) AS g, account_id, d, key, "
            f"{_PERCENTILE_SQL_NAMED} FROM (SELECT account_id, d, key, latencies, ttfbs "
            f"FROM rollup_keyed ORDER BY key OFFSET 0) AS k, "
            f"LATERAL unnest(k.latencies, k.ttfbs) AS v (latency_ms, ttfb_ms) "
            f"GROUP BY ROLLUP (account_id, d, key)"
        )
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(
            f"CREATE TEMPORARY TABLE rollup_hour ON COMMIT DROP AS "  # noqa: S608
            f"SELECT f.d, f.hour, {dims_f}, {fine_sums} FROM rollup_keyed AS f "
            f"GROUP BY f.d, f.hour, {dims_f}"
        )
        cursor.execute(
            f"DELETE FROM {buckets} WHERE (period = 'hour' AND start >= %(day)s "  # noqa: S608
            f"AND start < %(next)s AND extract(hour FROM start AT TIME ZONE 'UTC')::int "
            f"= ANY(%(hours)s)) OR (period = 'day' AND start = %(day)s)",
            params,
        )
        cursor.execute(
            f"INSERT INTO {buckets} ({bucket_columns}) "  # noqa: S608 - names from models
            f"SELECT 'hour', %(day)s + make_interval(hours => f.hour), {dims_f}, "
            f"{_TOTALS_COLUMNS}, {_PERCENTILE_COLUMNS} FROM rollup_hour AS f "
            f"JOIN rollup_pct AS p ON p.g = {_G_HOUR} AND p.key = f.d * 32 + f.hour "
            f"WHERE f.hour = ANY(%(hours)s)",
            params,
        )
        cursor.execute(
            f"INSERT INTO {buckets} ({bucket_columns}) "  # noqa: S608
            f"SELECT 'day', %(day)s, {dims_f}, {_TOTALS_COLUMNS}, {_PERCENTILE_COLUMNS} "
            f"FROM (SELECT f.d, {dims_f}, {fine_sums} FROM rollup_hour AS f "
            f"GROUP BY f.d, {dims_f}) AS f JOIN rollup_pct AS p ON p.g = {_G_DAY} AND p.d = f.d",
            params,
        )
        cursor.execute("SET LOCAL enable_nestloop = on")
        cursor.execute(f"DELETE FROM {stats} WHERE start = %(day)s", params)  # noqa: S608
        cursor.execute(
            f"INSERT INTO {stats} (start, account_id, requests, errors, "  # noqa: S608
            f"{_PERCENTILE_COLUMNS}) SELECT %(day)s, t.account_id, t.requests, t.errors, "
            f"{_PERCENTILE_COLUMNS} FROM (SELECT account_id, sum(requests) AS requests, "
            f"sum(errors) AS errors FROM rollup_hour GROUP BY GROUPING SETS ((account_id), ())) "
            f"AS t JOIN rollup_pct AS p ON p.g IN ({_G_ACCOUNT}, {_G_ALL}) "
            f"AND p.account_id IS NOT DISTINCT FROM t.account_id",
            params,
        )
        # The dashboard's series: the day buckets summed per account x model, machine or key,
        # and per model for all accounts.
        cursor.execute(f"DELETE FROM {series} WHERE start = %(day)s", params)  # noqa: S608
        day_buckets = f"FROM {buckets} WHERE period = 'day' AND start = %(day)s"
        cursor.execute(
            f"INSERT INTO {series} (start, account_id, dimension, model, machine_id, "
            f"api_key_id, {_TOTALS_COLUMNS}) "
            f"SELECT %(day)s, account_id, 'model', model, NULL::bigint, NULL::bigint, {_SUMS} "
            f"{day_buckets} GROUP BY GROUPING SETS ((account_id, model), (model)) UNION ALL "
            f"SELECT %(day)s, account_id, 'machine', '', machine_id, NULL::bigint, {_SUMS} "
            f"{day_buckets} AND machine_id IS NOT NULL GROUP BY account_id, machine_id UNION ALL "
            f"SELECT %(day)s, account_id, 'key', '', NULL::bigint, api_key_id, {_SUMS} "
            f"{day_buckets} AND api_key_id IS NOT NULL GROUP BY account_id, api_key_id",
            params,
        )
        # Sessions, with the models each used (sorted, comma-separated).
        cursor.execute("SET LOCAL enable_sort = on")
        cursor.execute(
            f"DELETE FROM {sessions} WHERE start = %(day)s "  # noqa: S608
            f"RETURNING account_id, session_id",
            params,
        )
        touched = set(cursor.fetchall())
        cursor.execute(
            f"INSERT INTO {sessions} (start, account_id, source, session_id, "  # noqa: S608
            f"machine_id, model_names, {_TOTALS_COLUMNS}, first_at, last_at) "
            f"SELECT %(day)s, account_id, source, session_id, max(machine_id), "
            f"left(string_agg(model, ',' ORDER BY model), 1000), {_TOTALS_RESUMMED}, "
            f"min(first_at), max(last_at) FROM (SELECT account_id, source, session_id, model, "
            f"max(machine_id) AS machine_id, {_SUMS}, min(first_at) AS first_at, "
            f"max(last_at) AS last_at FROM rollup_fine "
            f"GROUP BY account_id, source, session_id, model) AS per_model "
            f"GROUP BY account_id, source, session_id RETURNING account_id, session_id",
            params,
        )
        touched |= set(cursor.fetchall())
        _session_totals_sql(cursor, sessions, totals, touched)
        # Dropped now, not at commit: a caller's outer transaction may recompute another day.
        cursor.execute("DROP TABLE rollup_fine, rollup_dims, rollup_keyed, rollup_pct, rollup_hour")


def _session_totals_sql(cursor: Any, sessions: str, totals: str, touched: set) -> None:
    """Rebuild the ``SessionTotal`` of the sessions ``touched`` (account id, session id) from
    their ``SessionBucket`` rows."""
    touched = {(account, session) for account, session in touched if session}
    if not touched:
        return
    accounts, ids = zip(*sorted(touched), strict=True)
    keys = "unnest(%(accounts)s::bigint[], %(ids)s::text[]) AS k (account_id, session_id)"
    params = {"accounts": list(accounts), "ids": list(ids)}
    cursor.execute(
        f"DELETE FROM {totals} AS t USING {keys} "  # noqa: S608
        f"WHERE t.account_id = k.account_id AND t.session_id = k.session_id",
        params,
    )
    cursor.execute(
        f"INSERT INTO {totals} (account_id, session_id, {_TOTALS_COLUMNS}, tokens, "  # noqa: S608
        f"first_day, last_day, first_at, last_at) "
        f"SELECT b.account_id, b.session_id, {_TOTALS_RESUMMED}, sum(b.input_tokens + "
        f"b.output_tokens + b.cache_creation_input_tokens + b.cache_read_input_tokens), "
        f"min(b.start), max(b.start), min(b.first_at), max(b.last_at) "
        f"FROM {sessions} AS b JOIN {keys} "
        f"ON b.account_id = k.account_id AND b.session_id = k.session_id "
        f"GROUP BY b.account_id, b.session_id",
        params,
    )


# -- recompute: anywhere (Python) -----------------------------------------------------------------
def percentile(values: list[float], fraction: float) -> float | None:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the closest ranks."""
    if not values:
        return None
    values = sorted(values)
    position = fraction * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


class _Group:
    __slots__ = (
        "cost", "costed", "errors", "first", "last", "latency", "machine", "models", "n",
        "tokens", "ttfb",
    )  # fmt: skip

    def __init__(self) -> None:
        self.n = 0
        self.tokens = [0, 0, 0, 0]
        self.cost = Decimal(0)
        self.costed = 0
        self.errors = 0
        self.latency: list[float] = []
        self.ttfb: list[float] = []
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.models: set[str] = set()  # sessions only
        self.machine: int | None = None

    def add(self, event: dict[str, Any], error: bool) -> None:
        self.n += 1
        for i, name in enumerate(TOKEN_FIELDS):
            self.tokens[i] += event[name]
        if event["cost_usd"] is not None:
            self.cost += event["cost_usd"]
            self.costed += 1
        self.errors += error
        if event["latency_ms"] is not None:
            self.latency.append(event["latency_ms"])
        if event["ttfb_ms"] is not None:
            self.ttfb.append(event["ttfb_ms"])
        when = event["occurred_at"]
        self.first = when if self.first is None or when < self.first else self.first
        self.last = when if self.last is None or when > self.last else self.last

    def totals(self) -> dict[str, Any]:
        return {
            "requests": self.n,
            **dict(zip(TOKEN_FIELDS, self.tokens, strict=True)),
            "cost_usd": self.cost if self.costed else None,
            "unpriced_requests": self.n - self.costed,
            "errors": self.errors,
        }

    def percentiles(self) -> dict[str, Any]:
        return {
            "latency_p50_ms": percentile(self.latency, 0.5),
            "latency_p95_ms": percentile(self.latency, 0.95),
            "ttfb_p50_ms": percentile(self.ttfb, 0.5),
            "ttfb_p95_ms": percentile(self.ttfb, 0.95),
        }


def _recompute_day_python(day: datetime, hours: list[datetime]) -> None:
    pending = set(hours)
    hour_groups: dict[tuple[Any, ...], _Group] = defaultdict(_Group)
    day_groups: dict[tuple[Any, ...], _Group] = defaultdict(_Group)
    session_groups: dict[tuple[Any, ...], _Group] = defaultdict(_Group)
    stat_groups: dict[int | None, _Group] = defaultdict(_Group)
    fields = (
        "account_id", "source", "model", "api_key_id", "machine_id", "session_id",
        "occurred_at", "cost_usd", "status_code", "latency_ms", "ttfb_ms", "details",
        *TOKEN_FIELDS,
    )  # fmt: skip
    events = UsageEvent.objects.filter(occurred_at__gte=day, occurred_at__lt=day + DAY)
    for event in events.order_by().values(*fields).iterator(chunk_size=5000):
        details = event["details"] or {}
        error = bool(
            (event["status_code"] or 0) >= 400 or "error" in details or "error_type" in details
        )
        dims = (
            event["account_id"], event["source"], event["model"], event["api_key_id"],
            event["machine_id"],
        )  # fmt: skip
        hour = floor_hour(event["occurred_at"])
        if hour in pending:
            hour_groups[(hour, *dims)].add(event, error)
        day_groups[dims].add(event, error)
        session = session_groups[(event["account_id"], event["source"], event["session_id"])]
        session.add(event, error)
        session.models.add(event["model"])
        if event["machine_id"] is not None:
            session.machine = max(session.machine or 0, event["machine_id"])
        stat_groups[event["account_id"]].add(event, error)
        stat_groups[None].add(event, error)

    def bucket(period: str, start: datetime, key: tuple[Any, ...], group: _Group) -> UsageBucket:
        account, source, model, api_key, machine = key
        return UsageBucket(
            period=period, start=start, account_id=account, source=source, model=model,
            api_key_id=api_key, machine_id=machine, **group.totals(), **group.percentiles(),
        )  # fmt: skip

    UsageBucket.objects.filter(period=Period.HOUR, start__in=hours).delete()
    UsageBucket.objects.bulk_create(
        [bucket(Period.HOUR, key[0], key[1:], g) for key, g in hour_groups.items()],
        batch_size=1000,
    )
    UsageBucket.objects.filter(period=Period.DAY, start=day).delete()
    UsageBucket.objects.bulk_create(
        [bucket(Period.DAY, day, key, g) for key, g in day_groups.items()], batch_size=1000
    )
    DailySeries.objects.filter(start=day).delete()
    DailySeries.objects.bulk_create(
        [
            DailySeries(
                start=day,
                account_id=account,
                dimension=dimension,
                model=model,
                machine_id=machine,
                api_key_id=api_key,
                **totals,
            )
            for (account, dimension, model, machine, api_key), totals in _series(day_groups).items()
        ],
        batch_size=1000,
    )
    sessions = SessionBucket.objects.filter(start=day)
    touched = set(sessions.values_list("account_id", "session_id"))
    touched |= {(account, session) for account, _source, session in session_groups}
    sessions.delete()
    SessionBucket.objects.bulk_create(
        [
            SessionBucket(
                start=day,
                account_id=key[0],
                source=key[1],
                session_id=key[2],
                model_names=",".join(sorted(g.models))[:1000],
                machine_id=g.machine,
                first_at=g.first,
                last_at=g.last,
                **g.totals(),
            )
            for key, g in session_groups.items()
        ],
        batch_size=1000,
    )
    DailyStats.objects.filter(start=day).delete()
    DailyStats.objects.bulk_create(
        [
            DailyStats(
                start=day, account_id=account, requests=g.n, errors=g.errors, **g.percentiles()
            )
            for account, g in stat_groups.items()
        ]
    )
    _session_totals_python(touched)


def _series(day_groups: dict[tuple[Any, ...], _Group]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """``DailySeries`` rows from the day's buckets: (account, dimension, model, machine, key)
    to their summed totals."""
    series: dict[tuple[Any, ...], dict[str, Any]] = {}
    for (account, _source, model, api_key, machine), group in day_groups.items():
        keys = [
            (account, Dimension.MODEL, model, None, None),
            (None, Dimension.MODEL, model, None, None),
        ]
        if machine is not None:
            keys.append((account, Dimension.MACHINE, "", machine, None))
        if api_key is not None:
            keys.append((account, Dimension.KEY, "", None, api_key))
        for key in keys:
            _sum_into(series.setdefault(key, {}), group.totals())
    return series


def _sum_into(into: dict[str, Any], totals: dict[str, Any]) -> None:
    """Add one row's totals (``_Totals`` fields) to another's: cost stays null if both are."""
    for name, value in totals.items():
        if name == "cost_usd":
            if value is not None:
                into[name] = (into.get(name) or Decimal(0)) + value
            else:
                into.setdefault(name, None)
        else:
            into[name] = into.get(name, 0) + value


def _session_totals_python(touched: set[tuple[int, str]]) -> None:
    by_account: dict[int, set[str]] = defaultdict(set)
    for account, session in touched:
        if session:
            by_account[account].add(session)
    fields = [f.name for f in SessionBucket._meta.fields if f.name in _TOTAL_FIELDS]
    for account, ids in by_account.items():
        rows: dict[str, dict[str, Any]] = {}
        for row in SessionBucket.objects.filter(account_id=account, session_id__in=ids).values(
            "session_id", "start", "first_at", "last_at", *fields
        ):
            total = rows.setdefault(row["session_id"], {"first_day": row["start"],
                                    "last_day": row["start"], "first_at": row["first_at"],
                                    "last_at": row["last_at"]})  # fmt: skip
            total["first_day"] = min(total["first_day"], row["start"])
            total["last_day"] = max(total["last_day"], row["start"])
            total["first_at"] = min(total["first_at"], row["first_at"])
            total["last_at"] = max(total["last_at"], row["last_at"])
            _sum_into(total, {name: row[name] for name in fields})
        SessionTotal.objects.filter(account_id=account, session_id__in=ids).delete()
        SessionTotal.objects.bulk_create(
            [
                SessionTotal(
                    account_id=account,
                    session_id=session,
                    tokens=sum(total[name] for name in TOKEN_FIELDS),
                    **total,
                )
                for session, total in rows.items()
            ],
            batch_size=1000,
        )


def _recompute_day(day: datetime, *, engine: str | None = None) -> int:
    """Recompute the pending hours of ``day`` and the day itself, in one transaction; returns how
    many pending hours it took (0 when another run had taken them)."""
    with transaction.atomic():
        pending = list(
            RollupPending.objects.select_for_update(skip_locked=True)
            .filter(hour__gte=day, hour__lt=day + DAY)
            .order_by("hour")
        )
        if not pending:
            return 0
        hours = [p.hour for p in pending]
        if (engine or connection.vendor) == "postgresql":
            _recompute_day_sql(day, hours)
        else:
            _recompute_day_python(day, hours)
        RollupPending.objects.filter(id__in=[p.id for p in pending]).delete()
    return len(hours)


# -- the services --------------------------------------------------------------------------------
def usage_rollup(
    *, since: datetime | None = None, time_budget: float | None = None, engine: str | None = None
) -> RollupResult:
    """Bring the rollups up to date (see the module doc). ``since`` first recomputes every hour
    from that time on; ``time_budget`` (seconds) stops between two days once it is spent, leaving
    the rest pending for the next run. ``engine`` forces ``"python"`` (tests compare the two).

    Raises ``ValueError`` for a ``since`` before the retention window.
    """
    started = time.monotonic()
    owner = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if not _lease_take(owner):
        return RollupResult(ran=False)
    result = RollupResult()
    try:
        if since is not None:
            usage_rollup_mark(since=since)
        now = timezone.now()
        result.repriced = _reprice(rollup_state(), now)
        result.ignored_late = _collect(now)
        days = sorted({floor_day(h) for h in RollupPending.objects.values_list("hour", flat=True)})
        for day in days:
            if time_budget is not None and time.monotonic() - started > time_budget:
                break
            if not _lease_renew(owner):
                logger.warning("usage rollup lost its lease; stopping")
                break
            taken = _recompute_day(day, engine=engine)
            result.hours += taken
            result.days += 1 if taken else 0
        result.pending = RollupPending.objects.count()
        result.seconds = round(time.monotonic() - started, 3)
        RollupState.objects.filter(pk=1).update(
            last_run_at=timezone.now(), last_run_seconds=result.seconds, last_run_hours=result.hours
        )
        return result
    finally:
        _lease_release(owner)


def usage_events_purge(*, now: datetime | None = None, batch: int = 10_000) -> int:
    """Delete raw events older than ``USAGE_RAW_RETENTION_DAYS`` (0: keep them all) whose hours
    are rolled up; returns how many were deleted. Rollups are kept."""
    days = settings.USAGE_RAW_RETENTION_DAYS
    if not days:
        return 0
    state = rollup_state()
    if state.recorded_through is None:
        return 0  # nothing rolled up yet: deleting would lose the only copy
    horizon = floor_day((now or timezone.now()) - timedelta(days=days))
    oldest_pending = RollupPending.objects.order_by("hour").values_list("hour", flat=True).first()
    if oldest_pending is not None:
        horizon = min(horizon, floor_day(oldest_pending))
    old = UsageEvent.objects.filter(
        occurred_at__lt=horizon, recorded_at__lte=state.recorded_through
    )
    deleted = 0
    while True:
        ids = list(old.order_by().values_list("id", flat=True)[:batch])
        if not ids:
            break
        deleted += UsageEvent.objects.filter(id__in=ids).delete()[0]
    if state.purged_before is None or horizon > state.purged_before:
        RollupState.objects.filter(pk=1).update(purged_before=horizon)
    if deleted:
        logger.info("deleted %d usage events older than %s", deleted, horizon)
    return deleted
