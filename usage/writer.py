"""The batched usage writer shared by the OpenAI gateway and the Claude proxy.

Request handlers call ``usage_writer.record(...)`` after their response is done: it appends to an
in-process buffer and returns at once. A flusher task on the event loop writes the buffer with one
``bulk_create`` (one thread hop per batch, never one per request) every ``USAGE_FLUSH_SECONDS`` or
as soon as ``USAGE_BATCH_SIZE`` records wait. ``touch_api_key``/``touch_machine`` refresh
``last_used_at``/``last_seen_at`` in the same flush, at most once a minute per row.

On graceful shutdown the buffer is flushed: by the ASGI lifespan shutdown where the server sends
one (uvicorn, granian), and by an ``atexit`` hook otherwise (daphne).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class UsageRecord:
    account_id: int
    source: str
    model: str = ""
    api_key_id: int | None = None
    machine_id: int | None = None
    occurred_at: datetime = field(default_factory=timezone.now)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    estimated: bool = False
    status_code: int | None = None
    stop_reason: str = ""
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    request_id: str = ""
    message_id: str = ""
    session_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)


_EVENT_COLUMNS = (
    "account_id", "source", "model", "api_key_id", "machine_id", "occurred_at", "input_tokens",
    "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "estimated",
    "cost_usd", "status_code", "stop_reason", "latency_ms", "ttfb_ms", "request_id",
    "message_id", "session_id", "dedupe_key", "recorded_at", "details",
)  # fmt: skip

# One upstream request is one event (``usage.models.dedupe_key``): a second record of it is
# dropped, except that a proxy record replaces a synced one, since the proxy saw the real counts
# (transcripts under-record output tokens).
_ON_CONFLICT = (
    "ON CONFLICT ({account}, {key}) WHERE NOT ({key} = '') DO UPDATE SET {assignments} "
    "WHERE {table}.{source} = 'sync' AND EXCLUDED.{source} = 'proxy'"
)


def _insert_events(rows: list[tuple[Any, ...]]) -> None:
    """One ``executemany`` INSERT for the whole batch (an upsert: see ``_ON_CONFLICT``).

    Not ``bulk_create``: building a model instance per event cost the gateway a fifth of its CPU
    under load (profiled); each column is prepared by its own field, as the ORM would.
    """
    from usage.models import UsageEvent

    if not rows:
        return
    connection = connections[UsageEvent.objects.db]
    by_attname = {f.attname: f for f in UsageEvent._meta.concrete_fields}
    columns = [by_attname[name] for name in _EVENT_COLUMNS]
    # Only these need preparing (aware datetime, decimal, JSON); the rest are plain values.
    special = [
        (i, column) for i, column in enumerate(columns)
        if column.get_internal_type() in {"DateTimeField", "DecimalField", "JSONField"}
    ]  # fmt: skip
    prepared = []
    for row in rows:
        values = list(row)
        for i, column in special:
            values[i] = column.get_db_prep_save(values[i], connection)
        prepared.append(values)
    quote = connection.ops.quote_name
    table = quote(UsageEvent._meta.db_table)
    on_conflict = _ON_CONFLICT.format(
        account=quote("account_id"),
        key=quote("dedupe_key"),
        table=table,
        source=quote("source"),
        assignments=", ".join(
            f"{quote(c.column)} = EXCLUDED.{quote(c.column)}"
            for c in columns
            if c.column not in ("account_id", "dedupe_key")
        ),
    )
    sql = "INSERT INTO {} ({}) VALUES ({}) {}".format(  # noqa: S608 - names from the model
        table,
        ", ".join(quote(column.column) for column in columns),
        ", ".join(["%s"] * len(columns)),
        on_conflict,
    )
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(sql, prepared)


def record_cost(record: UsageRecord, prices: Any = None) -> Decimal | None:
    """What ``record`` cost at the price in force when it happened (``catalog.pricing``; null
    for an unpriced model). ``prices``: a ``PriceTable`` already at hand."""
    from catalog.pricing import price_table

    return (prices or price_table()).cost(
        model=record.model,
        occurred_at=record.occurred_at,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cache_creation_input_tokens=record.cache_creation_input_tokens,
        cache_read_input_tokens=record.cache_read_input_tokens,
        cache_creation=record.details.get("cache_creation"),
    )


class UsageWriter:
    def __init__(self) -> None:
        self._pending: list[UsageRecord] = []
        self._touched_keys: set[int] = set()
        self._touched_machines: set[int] = set()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wakeups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Task[None]] = set()

    # -- called on the request path: no I/O ------------------------------------------------
    def record(self, record: UsageRecord) -> None:
        with self._lock:
            self._pending.append(record)
            full = len(self._pending) >= settings.USAGE_BATCH_SIZE
        self._ensure_flusher(wake=full)

    def touch_api_key(self, key_id: int) -> None:
        self._touched_keys.add(key_id)

    def touch_machine(self, machine_id: int) -> None:
        self._touched_machines.add(machine_id)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- flushing --------------------------------------------------------------------------
    def flush(self) -> int:
        """Write everything buffered now; returns the number of events written. Sync code only."""
        with self._lock:
            batch, self._pending = self._pending, []
            keys, self._touched_keys = self._touched_keys, set()
            machines, self._touched_machines = self._touched_machines, set()
        if not (batch or keys or machines):
            return 0
        with self._write_lock:
            try:
                self._write(batch, keys, machines)
            except Exception:
                # Keep the events for the next flush rather than lose them (a database blip).
                logger.exception("usage flush failed; %d events kept for retry", len(batch))
                with self._lock:
                    self._pending[:0] = batch
                    self._touched_keys |= keys
                    self._touched_machines |= machines
                return 0
        return len(batch)

    async def aflush(self) -> int:
        return await sync_to_async(self._flush_in_thread, thread_sensitive=False)()

    def _flush_in_thread(self) -> int:
        # A worker thread's connection is closed after each flush: at most one connect per
        # flush interval, and no connection left behind in a pool thread.
        try:
            return self.flush()
        finally:
            connections.close_all()

    def _write(self, batch: list[UsageRecord], keys: set[int], machines: set[int]) -> None:
        from accounts.models import ApiKey, Machine
        from catalog.pricing import price_table
        from usage.models import dedupe_key

        prices = price_table()  # in process memory; one query per GATEWAY_CATALOG_CACHE_SECONDS
        now = timezone.now()
        _insert_events(
            [
                (
                    r.account_id, r.source, r.model, r.api_key_id, r.machine_id,
                    r.occurred_at, r.input_tokens, r.output_tokens,
                    r.cache_creation_input_tokens, r.cache_read_input_tokens, r.estimated,
                    record_cost(r, prices),
                    r.status_code, r.stop_reason[:64],
                    r.latency_ms, r.ttfb_ms, r.request_id[:200], r.message_id[:200],
                    r.session_id[:200],
                    dedupe_key(source=r.source, request_id=r.request_id, message_id=r.message_id),
                    now, r.details,
                )
                for r in batch
            ]
        )  # fmt: skip
        # The condition keeps each row to one write a minute however many processes touch it.
        stale = now - timedelta(seconds=settings.LAST_USED_RESOLUTION_SECONDS)
        if keys:
            ApiKey.objects.filter(id__in=keys).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)
            ).update(last_used_at=now)
        if machines:
            Machine.objects.filter(id__in=machines).filter(
                Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=stale)
            ).update(last_seen_at=now)

    def _ensure_flusher(self, *, wake: bool) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # sync caller: the next flush (or the exit hook) writes it
        event = self._wakeups.get(loop)
        if event is None:
            event = asyncio.Event()
            self._wakeups[loop] = event
            task = loop.create_task(self._run(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if wake:
            event.set()

    async def _run(self, wakeup: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # the interval passed: flush anyway
                await asyncio.wait_for(wakeup.wait(), timeout=settings.USAGE_FLUSH_SECONDS)
            wakeup.clear()
            if self._pending or self._touched_keys or self._touched_machines:
                await self.aflush()


usage_writer = UsageWriter()


@atexit.register
def _flush_at_exit() -> None:
    if usage_writer.pending or usage_writer._touched_keys or usage_writer._touched_machines:
        try:
            usage_writer.flush()
        except Exception:  # the process is ending; say so rather than fail silently
            logger.exception("usage flush at exit failed")
