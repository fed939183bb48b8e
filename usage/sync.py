"""Ingesting the usage records that ``ccas sync`` read from Claude Code's transcripts.

``usage_sync`` cleans and validates each record on its own (a bad one is rejected with its index
and reason, the others go in), then inserts the batch with ``ON CONFLICT DO NOTHING`` on the
(account, dedupe_key) unique index: a request the account already has (metered by the proxy, or
synced before from this or another machine) is a duplicate, atomically, however many uploads run
at once. The proxy's record always wins: a synced record never replaces a row, and the proxy's
writer replaces a synced row (``usage.writer``).

Record shape (JSON object), every field but the ids optional::

    {"request_id": "req_…", "message_id": "msg_…", "session_id": "…", "model": "claude-…",
     "timestamp": "2026-11-28T09:00:00.000Z", "input_tokens": 3, "output_tokens": 12,
     "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
     "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 60}}
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import Account, Machine
from usage.models import Source, UsageEvent
from usage.records import dedupe_key
from usage.writer import UsageRecord

MAX_RECORDS = 1000  # per request; the CLI sends 500
# No single request has more tokens than this; a larger count is a corrupt record.
MAX_TOKENS = 100_000_000
_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
_SPLIT_FIELDS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
_ID_LENGTH = 200
_EARLIEST = datetime(2023, 1, 1, tzinfo=UTC)  # before Claude Code existed: a corrupt timestamp
_ROWS_PER_STATEMENT = 100  # 23 parameters a row stays far below SQLite's variable limit


class RecordRejected(Exception):
    """One record cannot be taken; the message says why (it never echoes the value)."""


@dataclass
class SyncOutcome:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


def _text(value: Any, name: str, *, limit: int = _ID_LENGTH) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordRejected(f"{name} must be a string")
    return value.replace("\x00", "").strip()[:limit]


def _count(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordRejected(f"{name} must be a whole number")
    if value < 0 or value > MAX_TOKENS:
        raise RecordRejected(f"{name} must be between 0 and {MAX_TOKENS}")
    return value


def _timestamp(value: Any, now: datetime) -> datetime:
    if not isinstance(value, str) or not value:
        raise RecordRejected("timestamp is required (ISO 8601)")
    try:
        parsed = parse_datetime(value.strip()[:64])
    except ValueError:
        parsed = None
    if parsed is None:
        raise RecordRejected("timestamp is not an ISO 8601 time")
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    if parsed < _EARLIEST or parsed > now + timedelta(days=1):
        raise RecordRejected("timestamp is out of range")
    return parsed


def record_clean(raw: Any, *, account_id: int, machine_id: int, now: datetime) -> UsageRecord:
    """A ``UsageRecord`` from one uploaded record. Raises ``RecordRejected``."""
    if not isinstance(raw, dict):
        raise RecordRejected("a record must be a JSON object")
    request_id = _text(raw.get("request_id"), "request_id")
    message_id = _text(raw.get("message_id"), "message_id")
    if not request_id and not message_id:
        raise RecordRejected("request_id or message_id is required")
    tokens = {name: _count(raw.get(name), name) for name in _TOKEN_FIELDS}
    details: dict[str, Any] = {}
    split = raw.get("cache_creation")
    if split is not None:
        if not isinstance(split, dict):
            raise RecordRejected("cache_creation must be an object")
        details["cache_creation"] = {
            name: _count(split.get(name), f"cache_creation.{name}") for name in _SPLIT_FIELDS
        }
    return UsageRecord(
        account_id=account_id,
        source=Source.SYNC,
        model=_text(raw.get("model"), "model"),
        machine_id=machine_id,
        occurred_at=_timestamp(raw.get("timestamp"), now),
        request_id=request_id,
        message_id=message_id,
        session_id=_text(raw.get("session_id"), "session_id"),
        details=details,
        **tokens,
    )


def _total(record: UsageRecord) -> int:
    return sum(getattr(record, name) for name in _TOKEN_FIELDS)


def _costs(records: list[UsageRecord]) -> list[Decimal | None]:
    """Each record priced exactly as the proxy's writer prices its events."""
    from usage.writer import usage_costs

    return usage_costs(records)


def _insert_new(rows: list[dict[str, Any]]) -> int:
    """Insert the rows that are new to the account; returns how many were.

    Not the writer's ``_insert_events``: that one upserts (a proxy record replaces a synced one)
    and cannot say which rows went in, while a sync must count its duplicates and never replace
    anything. ``ON CONFLICT DO NOTHING`` with no target covers the partial unique index on
    (account, dedupe_key) on PostgreSQL and SQLite alike; the row count of each statement is the
    number of rows it inserted. Columns a row does not name get their model default.
    """
    if not rows:
        return 0
    connection = connections[UsageEvent.objects.db]
    columns = [f for f in UsageEvent._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    head = "INSERT INTO {} ({}) VALUES ".format(  # noqa: S608 - names from the model
        quote(UsageEvent._meta.db_table), ", ".join(quote(c.column) for c in columns)
    )
    placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    inserted = 0
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        # Events have no foreign-key constraints (``usage.models``): the upload's machine and
        # account are locked as a constraint's check would, until the commit, and a deletion
        # that came first is respected (its machine's events lose the reference, its
        # account's are gone).
        account, machine = rows[0]["account_id"], rows[0]["machine_id"]
        if machine is not None and not _locked(cursor, Machine, machine):
            rows = [{**row, "machine_id": None} for row in rows]
        if not _locked(cursor, Account, account):
            return 0
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            params = [
                column.get_db_prep_save(
                    row[column.attname] if column.attname in row else column.get_default(),
                    connection,
                )
                for row in chunk
                for column in columns
            ]
            sql = head + ", ".join([placeholder] * len(chunk)) + " ON CONFLICT DO NOTHING"
            cursor.execute(sql, params)
            inserted += max(cursor.rowcount, 0)
    return inserted


def _locked(cursor: Any, model: Any, row_id: int) -> bool:
    """Lock ``model``'s row ``row_id`` against deletion (FOR KEY SHARE); False if it is gone."""
    table = cursor.db.ops.quote_name(model._meta.db_table)
    lock = " FOR KEY SHARE" if cursor.db.vendor == "postgresql" else ""
    cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s{lock}", [row_id])  # noqa: S608
    return cursor.fetchone() is not None


def usage_sync(*, account_id: int, machine_id: int, records: list[Any]) -> SyncOutcome:
    """Store the new records of one upload; count the duplicates, list the rejected ones."""
    outcome = SyncOutcome()
    now = timezone.now()
    kept: dict[str, UsageRecord] = {}
    for index, raw in enumerate(records):
        try:
            record = record_clean(raw, account_id=account_id, machine_id=machine_id, now=now)
        except RecordRejected as exc:
            outcome.rejected.append({"index": index, "error": str(exc)})
            continue
        key = dedupe_key(
            source=record.source, request_id=record.request_id, message_id=record.message_id
        )
        earlier = kept.get(key)
        if earlier is not None:
            # Claude Code repeats a response's usage on each content block's line; like ccusage,
            # keep the largest of the copies.
            outcome.duplicates += 1
            if _total(record) <= _total(earlier):
                continue
        kept[key] = record
    batch = list(kept.items())
    costs = _costs([record for _key, record in batch])
    rows = [
        {
            "account_id": r.account_id,
            "source": r.source,
            "model": r.model,
            "machine_id": r.machine_id,
            "occurred_at": r.occurred_at,
            **{name: getattr(r, name) for name in _TOKEN_FIELDS},
            "cost_usd": cost,
            "request_id": r.request_id,
            "message_id": r.message_id,
            "session_id": r.session_id,
            "dedupe_key": key,
            "recorded_at": now,
            "details": r.details,
        }
        for (key, r), cost in zip(batch, costs, strict=True)
    ]
    outcome.accepted = _insert_new(rows)
    outcome.duplicates += len(rows) - outcome.accepted
    return outcome


# -- listing: what ``ccas report`` aggregates ----------------------------------------------------
class BadCursor(ValueError):
    pass


def _cursor_encode(occurred_at: datetime, row_id: int) -> str:
    raw = f"{occurred_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_decode(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, row_id = raw.partition("|")
        parsed = datetime.fromisoformat(when)
        return parsed, int(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("cursor is not one this endpoint returned") from exc


def usage_events_page(
    *,
    account_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
    sources: list[str] | None = None,
    cursor: str | None = None,
    limit: int = 5000,
) -> dict[str, Any]:
    """One page of the account's events, oldest first, with the cursor of the next page (or
    None). Raises ``BadCursor``. Keyset pagination on (occurred_at, id): stable while rows come in.
    """
    events = UsageEvent.objects.filter(account_id=account_id).between(since, until)
    if sources:
        events = events.filter(source__in=sources)
    if cursor:
        when, row_id = _cursor_decode(cursor)
        events = events.filter(Q(occurred_at__gt=when) | Q(occurred_at=when, id__gt=row_id))
    rows = list(
        events.order_by("occurred_at", "id").values(
            "id", "occurred_at", "source", "model", "machine__public_id", "session_id",
            "input_tokens", "output_tokens", "cache_creation_input_tokens",
            "cache_read_input_tokens", "cost_usd", "details",
        )[: limit + 1]
    )  # fmt: skip
    more = len(rows) > limit
    rows = rows[:limit]
    data = []
    for row in rows:
        split = (row["details"] or {}).get("cache_creation")
        cost = row["cost_usd"]
        data.append(
            {
                "timestamp": row["occurred_at"].isoformat(),
                "source": row["source"],
                "model": row["model"],
                "machine_id": str(row["machine__public_id"] or "") or None,
                "session_id": row["session_id"],
                **{name: row[name] for name in _TOKEN_FIELDS},
                "cache_creation": split if isinstance(split, dict) else None,
                "cost_usd": None if cost is None else float(cost),
            }
        )
    last = rows[-1] if rows else None
    next_cursor = _cursor_encode(last["occurred_at"], last["id"]) if more and last else None
    return {"data": data, "next_cursor": next_cursor}
