"""The batched usage writer shared by the OpenAI gateway and the Claude proxy.

Request handlers call ``usage_writer.record(...)`` after their response is done: the record is
cleaned (``usage.records.usage_record_clean``) and appended to an in-process buffer, and the call
returns at once. A flusher (``hepgg.lib.batching``) writes the buffer twice per
``USAGE_FLUSH_SECONDS``, or as soon as ``USAGE_BATCH_SIZE`` records wait, with one ``executemany``
INSERT per batch in a worker thread (one thread hop per batch, never one per request): a
record is in the database within ``USAGE_FLUSH_SECONDS`` of being made, which bounds what a
crash can lose.
``touch_api_key``/``touch_machine`` refresh ``last_used_at``/``last_seen_at`` in the same flush,
at most once a minute per row.

Nothing is lost on the way:

- **A record the database refuses** never blocks the others. When a batch fails, references to
  keys and machines deleted meanwhile are set to null (their events are kept) and the batch is
  tried again; if it still fails it is split in halves until the refused records are found.
  Those go to the rejected file (``usage.spill``) with the reason, and are logged; the rest is
  written.
- **An unreachable database** (``OperationalError``/``InterfaceError``): the batch is appended
  to a spill file on disk at once (``usage.spill``), so a crash during an outage loses no more
  than a flush interval's events. While spilled records wait, new batches join them on disk,
  and a drain thread writes the spill files back oldest first, ``USAGE_BATCH_SIZE`` records per
  transaction, once the database answers again. Spill files left by a process that died are
  replayed by the next one at start-up (``start_replay``).
- **Memory**: at most ``USAGE_MEMORY_MAX_EVENTS`` records wait in memory (they only pile up if
  neither the database nor the disk takes them); beyond that new records are dropped and the
  log says how many.

On graceful shutdown the buffer is flushed (``hepgg.lifespan``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from hepgg.lib.batching import Flusher
from usage.records import UsageRecord, record_from_dict, usage_record_clean
from usage.spill import SpillFolder

__all__ = ["UsageRecord", "UsageWriter", "usage_writer"]

logger = logging.getLogger(__name__)

_UNAVAILABLE = (OperationalError, InterfaceError)
_COST_MAX = Decimal("999999.99999999")  # UsageEvent.cost_usd: 14 digits, 8 after the point


class DatabaseUnavailable(Exception):
    """The database could not be reached; ``records`` were not written (``written`` were)."""

    def __init__(self, records: list[UsageRecord], written: int) -> None:
        super().__init__(f"{len(records)} usage records not written")
        self.records = records
        self.written = written


# -- cost ------------------------------------------------------------------------------------
def record_cost(record: UsageRecord, prices: Any = None) -> Decimal | None:
    """What ``record`` cost at the price in force when it happened (``catalog.pricing``; None
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


def usage_costs(records: list[UsageRecord]) -> list[Decimal | None]:
    """The cost of each record in USD (None when unpriced): the one place usage is priced, from
    the dated price table in process memory (no query per batch)."""
    from catalog.pricing import price_table

    prices = price_table()
    return [record_cost(r, prices) for r in records]


# -- the INSERT ------------------------------------------------------------------------------
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

Row = tuple[Any, ...]


def _rows(records: list[UsageRecord]) -> list[Row]:
    from usage.models import dedupe_key

    costs = usage_costs(records)
    now = timezone.now()
    rows = []
    for r, cost in zip(records, costs, strict=True):
        if cost is not None and abs(cost) > _COST_MAX:
            logger.warning("usage cost %s does not fit the column; stored as unknown", cost)
            cost = None
        key = dedupe_key(
            source=r.source, request_id=r.request_id, message_id=r.message_id, event_id=r.event_id
        )
        rows.append(
            (
                r.account_id, r.source, r.model, r.api_key_id, r.machine_id, r.occurred_at,
                r.input_tokens, r.output_tokens, r.cache_creation_input_tokens,
                r.cache_read_input_tokens, r.estimated, cost, r.status_code, r.stop_reason,
                r.latency_ms, r.ttfb_ms, r.request_id, r.message_id, r.session_id, key, now,
                r.details,
            )
        )  # fmt: skip
    return rows


def _insert_events(rows: list[Row]) -> None:
    """The whole batch in one transaction, as one upsert (see ``_ON_CONFLICT``): from a JSON
    document on PostgreSQL, else one ``executemany``.

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
        if connection.vendor != "postgresql" or len(rows) < _JSON_FROM_ROWS:
            prepared = []
            for row in rows:
                values = list(row)
                for i, column in special:
                    values[i] = column.get_db_prep_save(values[i], connection)
                prepared.append(values)
            cursor.executemany(sql, prepared)
            return
        # A batch goes to PostgreSQL as one JSON document that it unpacks into rows
        # (jsonb_to_recordset) for one upsert: the rows are encoded by orjson in C, where
        # adapting each value in Python cost ~80 µs of the writer thread's CPU per event
        # (measured), CPU the event loop then waits for. One statement may not touch a row
        # twice, so the batch's own duplicates are settled first.
        names = ", ".join(quote(column.column) for column in columns)
        record_type = ", ".join(f"{quote(c.column)} {c.db_type(connection)}" for c in columns)
        document = orjson.dumps(
            [dict(zip(_EVENT_COLUMNS, row, strict=True)) for row in _one_per_key(rows)],
            default=str,  # Decimal costs, as exact text
        ).decode()
        cursor.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} "  # noqa: S608 - names from the model
            f"FROM jsonb_to_recordset(%s::jsonb) AS incoming({record_type}) {on_conflict}",
            [document],
        )


_JSON_FROM_ROWS = 8  # below this, executemany's few round trips cost as little
_KEY = _EVENT_COLUMNS.index("dedupe_key")
_SOURCE = _EVENT_COLUMNS.index("source")
_ACCOUNT = _EVENT_COLUMNS.index("account_id")


def _one_per_key(rows: list[Any]) -> list[Any]:
    """The batch as the row-by-row upsert would leave it: the first row of each dedupe key,
    replaced by a later proxy row when the kept one came from a sync."""
    kept: dict[tuple[Any, str], int] = {}
    out: list[list[Any]] = []
    for row in rows:
        key = row[_KEY]
        if not key:
            out.append(row)
            continue
        seen = kept.get((row[_ACCOUNT], key))
        if seen is None:
            kept[(row[_ACCOUNT], key)] = len(out)
            out.append(row)
        elif out[seen][_SOURCE] == "sync" and row[_SOURCE] == "proxy":
            out[seen] = row
    return out


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _live_references(records: list[UsageRecord]) -> list[tuple[UsageRecord, str]]:
    """Set references to deleted keys and machines to null (the events stay, as the foreign
    keys' SET_NULL would have done); returns the records that cannot be kept: their account
    is gone (its events went with it) or was never valid."""
    from accounts.models import Account, ApiKey, Machine

    def live(model: Any, ids: set[Any]) -> set[int]:
        ids = {i for i in ids if isinstance(i, int) and not isinstance(i, bool)}
        return set(model.objects.filter(id__in=ids).values_list("id", flat=True)) if ids else set()

    keys = live(ApiKey, {r.api_key_id for r in records if r.api_key_id is not None})
    machines = live(Machine, {r.machine_id for r in records if r.machine_id is not None})
    accounts = live(Account, {r.account_id for r in records})
    refused = []
    for record in records:
        if record.account_id not in accounts:
            refused.append((record, "the account does not exist (any more)"))
            continue
        if record.api_key_id is not None and record.api_key_id not in keys:
            record.api_key_id = None
        if record.machine_id is not None and record.machine_id not in machines:
            record.machine_id = None
    return refused


# -- the writer ------------------------------------------------------------------------------
class UsageWriter:
    def __init__(self) -> None:
        self._pending: list[UsageRecord] = []
        self._touched_keys: set[int] = set()
        self._touched_machines: set[int] = set()
        self._dropped = 0  # records refused for want of memory since the last flush
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one flush at a time
        self._drain_lock = threading.Lock()
        self._drainer: threading.Thread | None = None
        self.spill = SpillFolder(
            directory=lambda: Path(settings.USAGE_SPILL_DIR),
            max_bytes=lambda: settings.USAGE_SPILL_MAX_BYTES,
        )
        self._flusher = Flusher(
            "usage",
            flush=self.aflush,
            flush_sync=self.flush,
            # Twice per USAGE_FLUSH_SECONDS: an event then waits at most half of it for the next
            # flush, and the flush's own time fits in the other half (the crash-loss bound).
            interval=lambda: settings.USAGE_FLUSH_SECONDS / 2,
            pending=self._has_work,
        )

    # -- called on the request path: no I/O ------------------------------------------------
    def record(self, record: UsageRecord) -> None:
        usage_record_clean(record)
        with self._lock:
            if len(self._pending) >= settings.USAGE_MEMORY_MAX_EVENTS:
                self._dropped += 1  # counted and logged by the next flush, off this path
                return
            self._pending.append(record)
            full = len(self._pending) >= settings.USAGE_BATCH_SIZE
        self._flusher.poke(now=full)

    def touch_api_key(self, key_id: int) -> None:
        self._touched_keys.add(key_id)

    def touch_machine(self, machine_id: int) -> None:
        self._touched_machines.add(machine_id)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _has_work(self) -> bool:
        return (
            bool(self._pending or self._touched_keys or self._touched_machines)
            or self.spill.backlog_known
        )

    # -- flushing --------------------------------------------------------------------------
    def flush(self) -> int:
        """Write what waits in memory, and spilled records; returns the number of events
        written. Sync code only (it blocks on the database)."""
        with self._lock:
            batch, self._pending = self._pending, []
            keys, self._touched_keys = self._touched_keys, set()
            machines, self._touched_machines = self._touched_machines, set()
            dropped, self._dropped = self._dropped, 0
        if dropped:
            logger.error(
                "usage: %d events dropped: %d already waited in memory (USAGE_MEMORY_MAX_EVENTS)",
                dropped,
                settings.USAGE_MEMORY_MAX_EVENTS,
            )
        with self._write_lock:
            written = self._deliver(batch)
            if not self.spill.backlog_known:
                self._touch(keys, machines)
        return written

    async def aflush(self) -> int:
        return await sync_to_async(self._flush_in_thread, thread_sensitive=False)()

    def _flush_in_thread(self) -> int:
        # A worker thread's connection is closed after each flush: at most one connect per
        # flush interval, and no connection left behind in a pool thread.
        try:
            return self.flush()
        finally:
            connections.close_all()

    def _deliver(self, batch: list[UsageRecord]) -> int:
        if self.spill.has_backlog():
            # Older events wait on disk: these go behind them, so that the backlog is written
            # oldest first, and a crash now loses none of them.
            self._spill(batch)
            return 0
        try:
            return self.write_events(batch)
        except DatabaseUnavailable as exc:
            logger.warning(
                "usage: database unavailable, events spilled to %s until it is back",
                self.spill.directory,
            )
            self._spill(exc.records)
            return exc.written

    def _spill(self, records: list[UsageRecord]) -> None:
        """Append ``records`` to the spill files, and make sure a drainer writes them back."""
        try:
            kept = self.spill.append(records)
        except OSError:
            logger.exception("usage: cannot spill to %s; kept in memory", self.spill.directory)
            with self._lock:
                room = max(0, settings.USAGE_MEMORY_MAX_EVENTS - len(self._pending))
                self._pending[:0] = records[-room:] if room else []
                self._dropped += len(records) - min(room, len(records))
            return
        if kept < len(records):
            logger.error(
                "usage: %d events dropped: the spill folder holds USAGE_SPILL_MAX_BYTES (%d)",
                len(records) - kept,
                settings.USAGE_SPILL_MAX_BYTES,
            )
        self._ensure_drainer()

    # -- writing the backlog back ----------------------------------------------------------
    def _ensure_drainer(self) -> None:
        """Start the thread that writes spill files back, unless it runs. Its own thread: a
        database that swallows packets holds it for a connect timeout per try, and meanwhile
        the flusher keeps spilling every interval, so a crash still loses no more than one."""
        with self._drain_lock:
            if self._drainer is None:
                drainer = threading.Thread(
                    target=self._drain_until_empty, name="usage drain", daemon=True
                )
                try:
                    drainer.start()
                except RuntimeError:  # the interpreter is exiting: the next process drains
                    return
                self._drainer = drainer

    def _drain_until_empty(self) -> None:
        try:
            while True:
                failed = False
                try:
                    self.spill.drain(
                        self.write_events,
                        batch_size=settings.USAGE_BATCH_SIZE,
                        seconds=60,
                        on_unreadable=self._set_aside,
                    )
                except DatabaseUnavailable:
                    failed = True  # still down: try again in a moment, on a new connection
                    connections.close_all()
                except Exception:
                    failed = True
                    logger.exception("usage: writing spilled events back failed")
                with self._drain_lock:
                    if not self.spill.has_backlog():
                        self._drainer = None
                        return
                if failed:
                    time.sleep(max(settings.USAGE_FLUSH_SECONDS, 0.2))
        finally:
            with self._drain_lock:
                if self._drainer is threading.current_thread():
                    self._drainer = None
            connections.close_all()

    def write_events(self, records: list[UsageRecord]) -> int:
        """Write ``records`` in one transaction if the database takes them all; otherwise find
        and set aside those it refuses, and write the rest. Returns how many were written;
        raises ``DatabaseUnavailable`` with the unwritten ones if the database cannot be
        reached."""
        if not records:
            return 0
        try:
            _insert_events(_rows(records))
            return len(records)
        except _UNAVAILABLE:
            raise DatabaseUnavailable(records, 0) from None
        except Exception as exc:
            logger.warning("usage: a batch of %d was refused (%s); sorting it", len(records), exc)
        try:
            refused = _live_references(records)
        except _UNAVAILABLE:
            raise DatabaseUnavailable(records, 0) from None
        gone = {id(record) for record, _ in refused}
        rest = [record for record in records if id(record) not in gone]
        try:
            written, rejected = self._bisect(rest)
        finally:
            self._set_aside(refused)
        self._set_aside(rejected)
        return written

    @staticmethod
    def _bisect(
        records: list[UsageRecord],
    ) -> tuple[int, list[tuple[UsageRecord, str]]]:
        """Write ``records`` in halves, down to single records; (written, refused with why)."""
        written = 0
        rejected: list[tuple[UsageRecord, str]] = []
        todo = [records]  # a stack: the next part to try is on top
        while todo:
            part = todo.pop()
            try:
                _insert_events(_rows(part))
                written += len(part)
            except _UNAVAILABLE:
                rest = [record for chunk in reversed(todo) for record in chunk]
                raise DatabaseUnavailable(part + rest, written) from None
            except Exception as exc:
                if len(part) == 1:
                    rejected.append((part[0], _reason(exc)))
                else:
                    middle = len(part) // 2
                    todo += [part[middle:], part[:middle]]
        return written, rejected

    def _set_aside(self, rejected: list[tuple[Any, str]]) -> None:
        if not rejected:
            return
        for item, reason in rejected:
            logger.error("usage: record set aside (%s): %r", reason, item)
        try:
            self.spill.set_aside(rejected)
        except OSError:
            logger.exception("usage: cannot write %s", self.spill.rejected_path)

    def _touch(self, keys: set[int], machines: set[int]) -> None:
        """Refresh last-used times; best effort (the next request touches the row again)."""
        from accounts.models import ApiKey, Machine

        if not (keys or machines):
            return
        now = timezone.now()
        # The condition keeps each row to one write a minute however many processes touch it.
        stale = now - timedelta(seconds=settings.LAST_USED_RESOLUTION_SECONDS)
        try:
            if keys:
                ApiKey.objects.filter(id__in=keys).filter(
                    Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)
                ).update(last_used_at=now)
            if machines:
                Machine.objects.filter(id__in=machines).filter(
                    Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=stale)
                ).update(last_seen_at=now)
        except Exception:
            logger.warning("usage: could not refresh last-used times", exc_info=True)

    # -- start-up and the operator's replay -------------------------------------------------
    def start_replay(self) -> None:
        """At start-up: write back spill files an earlier process left (in the drain thread,
        which looks at the folder first)."""
        self._ensure_drainer()

    def replay(self) -> tuple[int, int]:
        """Write spilled and set-aside records now (``manage.py replay_usage``); returns
        (written, still refused). Raises ``DatabaseUnavailable`` if the database is down."""
        with self._write_lock:
            written = 0
            while self.spill.has_backlog():
                written += self.spill.drain(
                    self.write_events,
                    batch_size=settings.USAGE_BATCH_SIZE,
                    seconds=60,
                    on_unreadable=self._set_aside,
                )
            with self.spill.claim_rejected() as entries:
                before = self._rejected_lines()  # of the new file: lines set aside from now on
                records, unreadable = [], []
                for entry in entries:
                    try:
                        records.append(record_from_dict(entry["record"]))
                    except (KeyError, TypeError, ValueError):
                        unreadable.append((str(entry.get("raw", entry)), entry.get("reason", "")))
                for start in range(0, len(records), settings.USAGE_BATCH_SIZE):
                    written += self.write_events(records[start : start + settings.USAGE_BATCH_SIZE])
                self._set_aside(unreadable)
            return written, self._rejected_lines() - before

    def _rejected_lines(self) -> int:
        try:
            with self.spill.rejected_path.open("rb") as handle:
                return sum(1 for _ in handle)
        except FileNotFoundError:
            return 0


usage_writer = UsageWriter()
