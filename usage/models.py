"""Usage events: one row per upstream request (or per record a ``ccas sync`` reports)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncMonth, TruncWeek
from django.utils import timezone

from accounts.models import Account, ApiKey, Machine


class Source(models.TextChoices):
    GATEWAY = "gateway", "OpenAI-compatible gateway"
    PROXY = "proxy", "Claude proxy"
    SYNC = "sync", "ccas sync"


_TOTALS = {
    "requests": Count("id"),
    "input_tokens": Coalesce(Sum("input_tokens"), 0),
    "output_tokens": Coalesce(Sum("output_tokens"), 0),
    "cache_creation_input_tokens": Coalesce(Sum("cache_creation_input_tokens"), 0),
    "cache_read_input_tokens": Coalesce(Sum("cache_read_input_tokens"), 0),
    "cost_usd": Sum("cost_usd"),
}

GROUPINGS = {
    "day": TruncDay("occurred_at"),
    "week": TruncWeek("occurred_at"),
    "month": TruncMonth("occurred_at"),
    "model": F("model"),
    "machine": F("machine__public_id"),
    "key": F("api_key__public_id"),
    "session": F("session_id"),
}


def _row(values: dict[str, Any]) -> dict[str, Any]:
    cost = values.get("cost_usd")
    return {
        "requests": values["requests"],
        "input_tokens": values["input_tokens"],
        "output_tokens": values["output_tokens"],
        "cache_creation_input_tokens": values["cache_creation_input_tokens"],
        "cache_read_input_tokens": values["cache_read_input_tokens"],
        "cost_usd": None if cost is None else round(float(cost), 8),
    }


def _bucket_label(value: Any, group_by: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m") if group_by == "month" else value.date().isoformat()
    return str(value)


def dedupe_key(*, source: str, request_id: str, message_id: str, event_id: str = "") -> str:
    """The key that makes one upstream request one event per account.

    Claude traffic (the proxy, ``ccas sync``) is keyed by the upstream request id, else by the
    message id, so a request metered by the proxy and read again from a transcript counts once.
    Otherwise the recording surface's own id of the request (``UsageRecord.event_id``: the
    gateway's ``x-request-id``) keys it, so that writing a record twice (a replay of spilled
    usage after a crash) cannot count it twice. Events with none of these are not deduped.
    """
    if source in (Source.PROXY, Source.SYNC):
        if request_id:
            return request_id[:200]
        if message_id:
            return f"msg:{message_id[:200]}"
    return f"ev:{event_id[:64]}" if event_id else ""


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

    def summary(self, group_by: str) -> list[dict[str, Any]]:
        """One row per bucket of ``group_by`` (a key of ``GROUPINGS``), oldest or largest first."""
        rows = (
            self.order_by()
            .annotate(bucket=GROUPINGS[group_by])
            .values("bucket")
            .annotate(**_TOTALS)
            .order_by("bucket")
        )
        return [{"bucket": _bucket_label(r["bucket"], group_by), **_row(r)} for r in rows]


class UsageEvent(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="usage_events")
    source = models.CharField(max_length=16, choices=Source.choices)
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_events"
    )
    machine = models.ForeignKey(
        Machine, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_events"
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
        indexes = [models.Index(fields=["account", "occurred_at"])]
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
