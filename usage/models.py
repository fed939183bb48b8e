"""Usage events (one row per upstream request, or per record a ``ccas sync`` reports) and their
rollups: hour and day buckets recomputed from the events by ``usage.rollups``.

The rollup tables, and what reads them:

- ``UsageBucket``: hour and day, per account x source x model x API key or machine. ``GET /usage``,
  ``GET /me`` and the dashboard's stacked charts.
- ``SessionBucket``: day, per account x source x Claude Code session x model x machine.
  ``GET /usage?group_by=session`` and the dashboard's top sessions.
- ``DailyStats``: day, per account and for all accounts (``account`` null): requests, errors and
  the latency/TTFB percentiles, which cannot be summed from the buckets.
- ``DailySeries``: day, per account x model, machine or API key, and per model for all accounts:
  the dashboard's stacked charts (a few rows a day, where the day buckets have one per account x
  source x model x key or machine).
- ``SessionTotal``: one Claude Code session over all its days, ranked by an index: the
  dashboard's top sessions.
- ``RollupState`` (one row) and ``RollupPending`` (hours waiting to be recomputed): the
  watermark. See ``usage.rollups``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Account, ApiKey, Machine


class Source(models.TextChoices):
    GATEWAY = "gateway", "OpenAI-compatible gateway"
    PROXY = "proxy", "Claude proxy"
    SYNC = "sync", "ccas sync"


TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
# An event is an error when the upstream said so: an HTTP error status, or an error in the body
# (an SSE error event, or a stream the gateway cut off with one).
ERROR = Q(status_code__gte=400) | Q(details__has_key="error") | Q(details__has_key="error_type")

# Named "sum_<field>": an aggregate named like a field would shadow the field in filters.
_TOTALS = {
    "sum_requests": Count("id"),
    **{f"sum_{name}": Coalesce(Sum(name), 0) for name in TOKEN_FIELDS},
    "sum_cost_usd": Sum("cost_usd"),
    "sum_unpriced_requests": Count("id", filter=Q(cost_usd__isnull=True)),
}


def _row(values: dict[str, Any]) -> dict[str, Any]:
    cost = values["sum_cost_usd"]
    return {
        "requests": values["sum_requests"],
        **{name: values[f"sum_{name}"] for name in TOKEN_FIELDS},
        "cost_usd": None if cost is None else round(float(cost), 8),
        "unpriced_requests": values["sum_unpriced_requests"],
    }


def bucket_label(value: Any, group_by: str) -> str | None:
    """A bucket's label in ``GET /usage``: ``2026-11-01``, ``2026-11``, a model, an id."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m") if group_by == "month" else value.date().isoformat()
    return str(value)


class UsageEventQuerySet(models.QuerySet["UsageEvent"]):
    def between(self, since: datetime | None, until: datetime | None) -> UsageEventQuerySet:
        qs = self
        if since is not None:
            qs = qs.filter(occurred_at__gte=since)
        if until is not None:
            qs = qs.filter(occurred_at__lt=until)
        return qs

    def totals(self) -> dict[str, Any]:
        return _row(self.aggregate(**_TOTALS))


class UsageEvent(models.Model):
    # Every index costs each metered request an insert: account lookups use the indexes that
    # start with it, and the key and machine indexes hold only the events that have one (a
    # gateway event has no machine, a proxy event no key). The references have no constraint in
    # the database (``db_constraint=False``): its per-row checks were a third of PostgreSQL's
    # time per event. The usage writer checks them once per batch, and deleting a referenced
    # row locks it first (``usage.writer.lock_before_delete``); on_delete is Django's.
    account = models.ForeignKey(
        Account,
        on_delete=models.CASCADE,
        related_name="usage_events",
        db_index=False,
        db_constraint=False,
    )
    source = models.CharField(max_length=16, choices=Source.choices)
    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage_events",
        db_index=False,
        db_constraint=False,
    )
    machine = models.ForeignKey(
        Machine,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage_events",
        db_index=False,
        db_constraint=False,
    )
    model = models.CharField(max_length=200, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now)

    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_creation_input_tokens = models.BigIntegerField(default=0)
    cache_read_input_tokens = models.BigIntegerField(default=0)
    # The estimated flag marks counts made by our tokenizer when the upstream sent none.
    estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)

    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    stop_reason = models.CharField(max_length=64, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    ttfb_ms = models.FloatField(null=True, blank=True)

    request_id = models.CharField(max_length=200, blank=True)  # upstream request id
    message_id = models.CharField(max_length=200, blank=True)
    session_id = models.CharField(max_length=200, blank=True)
    # One upstream request is one event, whichever source reported it first: see ``dedupe_key``.
    dedupe_key = models.CharField(max_length=210, blank=True)
    # When the row was last written (insert, or a proxy record replacing a synced one): the
    # rollups recompute the buckets of rows written since their watermark, late ones included.
    recorded_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Anything else worth keeping (cache 5m/1h split, agent id, request class, stream flag…).
    details = models.JSONField(default=dict, blank=True)

    objects = UsageEventQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["account", "occurred_at"]),
            # The rollups read one hour or day of every account at a time.
            models.Index(fields=["occurred_at"], name="usage_event_occurred_at"),
            # Deleting a key or a machine nulls its events' references.
            models.Index(
                fields=["api_key"], name="usage_event_api_key", condition=Q(api_key__isnull=False)
            ),
            models.Index(
                fields=["machine"], name="usage_event_machine", condition=Q(machine__isnull=False)
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "dedupe_key"],
                condition=~Q(dedupe_key=""),
                name="usage_event_unique_upstream_request",
            )
        ]
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"{self.source} {self.model} {self.occurred_at:%Y-%m-%d %H:%M:%S}"


# -- rollups -----------------------------------------------------------------------------------
class Period(models.TextChoices):
    HOUR = "hour", "hour"
    DAY = "day", "day"


class _Totals(models.Model):
    """What every rollup row counts."""

    requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_creation_input_tokens = models.BigIntegerField(default=0)
    cache_read_input_tokens = models.BigIntegerField(default=0)
    # The sum over priced events; null when none of them was priced.
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    unpriced_requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class _Percentiles(models.Model):
    # Continuous percentiles (PostgreSQL's percentile_cont) of the events that reported them.
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    ttfb_p50_ms = models.FloatField(null=True, blank=True)
    ttfb_p95_ms = models.FloatField(null=True, blank=True)

    class Meta:
        abstract = True


class UsageBucket(_Totals, _Percentiles):
    """One hour or day of one account x source x model x API key or machine, recomputed from the
    raw events by ``usage.rollups`` and replaced whole (never incremented)."""

    period = models.CharField(max_length=8, choices=Period.choices)
    start = models.DateTimeField()
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+", db_index=False)
    source = models.CharField(max_length=16, choices=Source.choices)
    model = models.CharField(max_length=200, blank=True)
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    machine = models.ForeignKey(
        Machine, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )

    class Meta:
        indexes = [
            models.Index(fields=["account", "period", "start"], name="usage_bucket_account"),
            models.Index(fields=["period", "start"], name="usage_bucket_period"),
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.start:%Y-%m-%d %H:%M} {self.source} {self.model}"


class SessionBucket(_Totals):
    """One UTC day of one account x source x Claude Code session (events without a session are
    counted under ``session_id=""``), with the models it used and its machine."""

    start = models.DateTimeField()
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+", db_index=False)
    source = models.CharField(max_length=16, choices=Source.choices)
    session_id = models.CharField(max_length=200, blank=True)
    # The session's models, sorted and comma-separated (cut at 1,000 characters).
    model_names = models.CharField(max_length=1000, blank=True)
    machine = models.ForeignKey(
        Machine, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["account", "start"], name="usage_session_account"),
            models.Index(fields=["start"], name="usage_session_start"),
            # A session's days: its ``SessionTotal`` and the dashboard's session details.
            models.Index(fields=["account", "session_id"], name="usage_session_id"),
        ]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d} {self.session_id or '(no session)'}"


class DailyStats(_Percentiles):
    """One UTC day of one account, or of all accounts (``account`` null)."""

    start = models.DateTimeField()
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "daily stats"
        indexes = [
            models.Index(fields=["account", "start"], name="usage_dailystats_account"),
            models.Index(fields=["start"], name="usage_dailystats_start"),
        ]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d} {self.account or 'all accounts'}"


class Dimension(models.TextChoices):
    MODEL = "model", "model"
    MACHINE = "machine", "machine"
    KEY = "key", "API key"


class DailySeries(_Totals):
    """One UTC day of one model, machine or API key (``dimension``) of one account, and of one
    model for all accounts (``account`` null): the day buckets summed over the other dimensions,
    rebuilt with them. The dashboard's stacked charts read these (a few rows a day, so a year of
    every account's stays fast)."""

    start = models.DateTimeField()
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    dimension = models.CharField(max_length=8, choices=Dimension.choices)
    model = models.CharField(max_length=200, blank=True)  # the model's rows only
    machine = models.ForeignKey(
        Machine, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )

    class Meta:
        verbose_name_plural = "daily series"
        indexes = [
            models.Index(fields=["account", "dimension", "start"], name="usage_series_account"),
            # Every account's machines and keys (their rows always have an account).
            models.Index(fields=["dimension", "start"], name="usage_series_dimension"),
        ]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d} {self.dimension} {self.account or 'all accounts'}"


# The top sessions' order: cost, then tokens; ties by account and session id. Unpriced sessions
# (null cost) come last: they are read apart (``cost_usd__isnull``), as SQLite has no NULLS LAST
# in an index.
SESSION_RANK = (F("cost_usd").desc(), F("tokens").desc())


class SessionTotal(_Totals):
    """One Claude Code session of one account (every source) over all its UTC days: the sum of
    its ``SessionBucket`` rows, rebuilt for the sessions a recomputed day touches. Indexed by
    rank, so the dashboard's top sessions of a window are a short index scan."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+", db_index=False)
    session_id = models.CharField(max_length=200)
    tokens = models.BigIntegerField(default=0)  # the four token counts summed: the rank
    first_day = models.DateTimeField()  # the first and last UTC day it has events on
    last_day = models.DateTimeField()
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "session_id"], name="usage_session_total")
        ]
        indexes = [
            models.Index(*SESSION_RANK, "account", "session_id", name="usage_session_rank"),
            models.Index("account", *SESSION_RANK, "session_id", name="usage_session_rank_acct"),
            models.Index(fields=["first_day"], name="usage_session_first_day"),
            # Sessions over several days, which can straddle a window's first or last day.
            models.Index(
                fields=["last_day", "first_day"],
                name="usage_session_multi_day",
                condition=Q(first_day__lt=F("last_day")),
            ),
        ]

    def __str__(self) -> str:
        return self.session_id


class RollupState(models.Model):
    """The rollups' watermark and lease (a single row, ``pk=1``).

    Every event recorded at or before ``recorded_through`` has had its hour recomputed, or has
    its hour in ``RollupPending``. A run holds the lease (``lease_until``) while it works, so two
    never overlap; a crashed run's lease simply expires.
    """

    recorded_through = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    # Raw events before this were deleted by the retention policy: older rollups are final.
    purged_before = models.DateTimeField(null=True, blank=True)
    # The price table as the last reprice saw it: a change reprices the events it affects.
    prices_seen = models.JSONField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_run_seconds = models.FloatField(null=True, blank=True)
    last_run_hours = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"rolled up through {self.recorded_through}"


class RollupPending(models.Model):
    """An hour whose buckets must be recomputed (its events changed since they were)."""

    hour = models.DateTimeField(unique=True)

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00}"
