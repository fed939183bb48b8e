"""The batched usage writer shared by the OpenAI gateway and the Claude proxy.

Request handlers call ``usage_writer.record(...)`` after their response is done: it appends the
record to an in-process buffer and returns: no I/O, nothing cleaned or priced. A flusher
(``hepgg.lib.batching``) writes the buffer twice per ``USAGE_FLUSH_SECONDS``, or as soon as
``USAGE_BATCH_SIZE`` records wait. It first encodes the waiting records on the event loop, a
slice at a time: each is cleaned if it needs it, priced from the price table in process memory
(``catalog.pricing``), keyed and encoded as one JSON line (``usage.records.record_line``). Then
the writer thread writes the lines (one thread hop per batch, never one per request): on
PostgreSQL, joined, they are one JSON document that one upsert unpacks
(``jsonb_array_elements``). ``record_priced`` encodes at once and returns the cost it stored,
for the gateway's budgets, which charge that same cost. (Encoded one by one between requests,
the same work cost about twice as much; in the writer thread, the records crossed threads and
the thread held the GIL for it: measured in ``bench/README.md``.)

With ``USAGE_WRITER_PROCESS`` (the default on PostgreSQL) the server does none of that work:
``record`` keeps the record's values as one JSON array (``RawRecord``), and the flush hands the
batch to the server's own writer process (``usage.writer_process``), which runs this same code
to clean, price and write it, and answers; the writer thread waits for the answer and writes the
batch itself if none comes.

A record is in the database within ``USAGE_FLUSH_SECONDS`` of being made, which bounds what a
crash can lose. ``touch_api_key``/``touch_machine`` refresh ``last_used_at``/``last_seen_at`` in
the same flush, at most once a minute per row and process.

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

import asyncio
import functools
import logging
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
from django.conf import settings
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.db.models import Q
from django.utils import timezone

from catalog.pricing import PriceTable, loaded_price_table, price_table
from hepgg.lib.batching import Flusher, in_writer_thread
from usage.records import (
    LINE_FIELDS,
    RawRecord,
    UsageRecord,
    dedupe_key,
    fits_unchanged,
    line_values,
    record_from_dict,
    record_from_raw,
    record_from_values,
    record_line,
    record_values,
    usage_record_clean,
)
from usage.spill import SpillFolder
from usage.writer_process import WriterProcess, frame_of

__all__ = ["NOT_PRICED_YET", "UsageRecord", "UsageWriter", "usage_writer"]

logger = logging.getLogger(__name__)

_UNAVAILABLE = (OperationalError, InterfaceError)
_COST_MAX = Decimal("999999.99999999")  # UsageEvent.cost_usd: 14 digits, 8 after the point

Line = bytes  # one event as ``usage.records.record_line`` encodes it


class _NotPricedYet:
    def __repr__(self) -> str:
        return "NOT_PRICED_YET"


NOT_PRICED_YET: Final = _NotPricedYet()
"""What ``record_priced`` returns before this process loaded a price table: the flush prices it."""


class DatabaseUnavailable(Exception):
    """The database could not be reached; ``lines`` were not written (``written`` were)."""

    def __init__(self, lines: list[Line], written: int) -> None:
        super().__init__(f"{len(lines)} usage records not written")
        self.lines = lines
        self.written = written


# -- cost ------------------------------------------------------------------------------------
def record_cost(record: UsageRecord, prices: Any = None) -> Decimal | None:
    """What ``record`` cost at the price in force when it happened (``catalog.pricing``; None
    for an unpriced model). ``prices``: a ``PriceTable`` already at hand."""
    cost = (prices if prices is not None else price_table()).cost(
        model=record.model,
        occurred_at=record.occurred_at,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cache_creation_input_tokens=record.cache_creation_input_tokens,
        cache_read_input_tokens=record.cache_read_input_tokens,
        cache_creation=record.details.get("cache_creation"),
    )
    if cost is not None and abs(cost) > _COST_MAX:
        logger.warning("usage cost %s does not fit the column; stored as unknown", cost)
        return None
    return cost


def usage_costs(records: list[UsageRecord]) -> list[Decimal | None]:
    """The cost of each record in USD (None when unpriced), from the dated price table in
    process memory (sync code: it loads the table when stale)."""
    prices = price_table()
    return [record_cost(r, prices) for r in records]


def _line(record: UsageRecord, prices: Any) -> tuple[Line, Decimal | None]:
    """``record`` cleaned (if it needs it), priced and keyed: its line, and its cost."""
    cleaned = not fits_unchanged(record)
    if cleaned:
        usage_record_clean(record)
    while True:  # at most twice: the line may show that the record needs cleaning after all
        cost = record_cost(record, prices)  # after cleaning: it reads the cleaned counts
        key = dedupe_key(
            source=record.source,
            request_id=record.request_id,
            message_id=record.message_id,
            event_id=record.event_id,
        )
        line = record_line(record, cost=cost, dedupe_key=key, cleaned=cleaned)
        if line is not None:
            return line, cost
        usage_record_clean(record)
        cleaned = True


_ENCODE_SLICE = 100  # records encoded on the event loop between two looks at its other work
_NO_PRICES: Final = PriceTable(())  # prices nothing: records spilled while no table can be had


def _encoded(batch: list[Line | UsageRecord], prices: Any = None) -> list[Line] | None:
    """The buffer's items as lines: records are cleaned, priced and encoded here (lines came
    from ``record_priced``). None when a record needs the price table and none can be had."""
    if prices is None and any(type(item) is not bytes for item in batch):
        try:
            prices = price_table()
        except _UNAVAILABLE:
            prices = loaded_price_table()  # a stale table does, until the database answers
            if prices is None:
                return None
    return _lines(batch, prices)


def _lines(items: list[Line | UsageRecord], prices: Any) -> list[Line]:
    """Records encoded (cleaned in place if they need it) and lines kept as they are."""
    return [item if type(item) is bytes else _line(_record(item), prices)[0] for item in items]


def _record(item: UsageRecord | RawRecord) -> UsageRecord:
    return record_from_raw(item) if type(item) is RawRecord else item  # type: ignore[return-value]


def _frame(batch: list[Line | UsageRecord]) -> bytes | None:
    """The batch as a frame for the writer process: lines and raw records as they are, records
    kept as objects (a value JSON cannot hold) cleaned and encoded here. None when that needs a
    price table this process has not loaded: the batch is written here."""
    lines: list[bytes] = []
    raw: list[bytes] = []
    kept: list[Line | UsageRecord] = []
    for item in batch:
        kind = type(item)
        (lines if kind is bytes else raw if kind is RawRecord else kept).append(item)  # type: ignore[arg-type]
    if kept:
        prices = loaded_price_table(reload=False)
        if prices is None:
            return None
        lines += _lines(kept, prices)
    return frame_of(lines, raw)


def _reload_prices() -> None:
    """Reload the price table if it is stale (the database just answered): the event loop
    encodes with the table as loaded, and does not reload it itself."""
    try:
        price_table()
    except Exception:  # the next flush tries again; meanwhile the loaded table prices
        logger.warning("usage: could not reload the price table", exc_info=True)


def lines_of(records: list[UsageRecord]) -> list[Line]:
    """Records (from disk, a replay, made before a price table was loaded) as lines (sync
    code: it may load the price table)."""
    prices = price_table()
    return [_line(record, prices)[0] for record in records]


# -- the INSERT ------------------------------------------------------------------------------
_EVENT_COLUMNS = LINE_FIELDS[:-1]  # a line's values but the last (event_id) are columns
_REFERENCES = ("api_key_id", "machine_id", "account_id")  # in the order they are locked

# One upstream request is one event (``usage.models.dedupe_key``): a second record of it is
# dropped, except that a proxy record replaces a synced one, since the proxy saw the real counts
# (transcripts under-record output tokens).
_ON_CONFLICT = (
    "ON CONFLICT ({account}, {key}) WHERE NOT ({key} = '') DO UPDATE SET {assignments} "
    "WHERE {table}.{source} = 'sync' AND EXCLUDED.{source} = 'proxy'"
)


class _Statements:
    """The upsert for the database's vendor, built once per connection alias."""

    def __init__(self, connection: Any) -> None:
        from accounts.models import Account, ApiKey, Machine
        from usage.models import UsageEvent

        by_attname = {f.attname: f for f in UsageEvent._meta.concrete_fields}
        self.columns = [by_attname[name] for name in (*_EVENT_COLUMNS, "recorded_at")]
        quote = connection.ops.quote_name
        table = quote(UsageEvent._meta.db_table)
        on_conflict = _ON_CONFLICT.format(
            account=quote("account_id"),
            key=quote("dedupe_key"),
            table=table,
            source=quote("source"),
            assignments=", ".join(
                f"{quote(c.column)} = EXCLUDED.{quote(c.column)}"
                for c in self.columns
                if c.column not in ("account_id", "dedupe_key")
            ),
        )
        names = ", ".join(quote(c.column) for c in self.columns)
        # A row of values, for executemany (SQLite, and every database but PostgreSQL).
        self.values = "INSERT INTO {} ({}) VALUES ({}) {}".format(  # noqa: S608 - from the model
            table, names, ", ".join(["%s"] * len(self.columns)), on_conflict
        )
        # The batch as one JSON array of lines, unpacked by PostgreSQL: no value is adapted in
        # Python. Text columns take the text as is (an assignment cast would refuse, never
        # truncate, what does not fit).
        values = []
        for i, column in enumerate(self.columns[:-1]):
            kind = column.db_type(connection)
            if kind == "jsonb":
                values.append(f"line->{i}")
            elif kind.startswith("varchar"):
                values.append(f"line->>{i}")
            else:
                values.append(f"(line->>{i})::{kind}")
        insert = (
            f"INSERT INTO {table} ({names}) "  # noqa: S608 - names from the model
            f"SELECT {', '.join(values)}, %s FROM jsonb_array_elements(%s::jsonb) AS line"
        )
        # The same upsert, followed in the same statement by the check that replaces foreign
        # key constraints (``_check_references``): the accounts, keys and machines its rows
        # reference are locked FOR KEY SHARE (as a constraint's check would) and counted; it
        # returns how many are missing of each. Keys and machines first: an account's deletion
        # locks them before the account (``lock_before_delete``), and the same order cannot
        # deadlock.
        referenced = {
            column: quote(model._meta.db_table)
            for column, model in zip(_REFERENCES, (ApiKey, Machine, Account), strict=True)
        }
        locks = ", ".join(
            f"live_{column} AS (SELECT id FROM {referenced_table} "  # noqa: S608 - from the models
            f"WHERE id IN (SELECT {column} FROM written) FOR KEY SHARE)"
            for column, referenced_table in referenced.items()
        )
        missing = ", ".join(
            f"(SELECT count(DISTINCT {column}) FROM written) "  # noqa: S608 - from the models
            f"- (SELECT count(*) FROM live_{column})"
            for column in referenced
        )
        checked = "WITH written AS ({} RETURNING " + ", ".join(referenced) + f"), {locks} "
        checked += f"SELECT {missing}"
        # Two forms: a batch of new events (nearly all of them) is a plain INSERT; ON CONFLICT's
        # speculative insertion costs PostgreSQL a fifth more per event (16.4 against 20.4 µs,
        # measured). A batch that meets an event already there (a replay, a proxy record of a
        # synced request) fails as a whole, and is written again with the upsert.
        self.new_events = checked.format(insert)
        self.document = checked.format(f"{insert} {on_conflict}")


_statements: dict[str, _Statements] = {}


def _insert_lines(lines: list[Line]) -> None:
    """The whole batch in one transaction, as one upsert (see ``_ON_CONFLICT``)."""
    from usage.models import UsageEvent

    if not lines:
        return
    connection = connections[UsageEvent.objects.db]
    statements = _statements.get(connection.alias)
    if statements is None:
        statements = _statements[connection.alias] = _Statements(connection)
    now = timezone.now()
    if connection.vendor == "postgresql":
        document = _document(lines)
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(statements.new_events, [now, document])
                _check_references(*cursor.fetchone())
            return
        except IntegrityError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != "23505":  # not a unique violation
                raise
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(statements.document, [now, document])
                _check_references(*cursor.fetchone())
        except Exception as exc:
            # One statement may not touch a row twice: a batch holding two records of one
            # request (rare) is settled as row-by-row upserts would settle it, then written.
            if getattr(exc.__cause__, "sqlstate", None) != "21000":
                raise
            _insert_lines(_one_per_key(lines))
        return
    # Only these need preparing (aware datetime, decimal, JSON); the rest are plain values.
    special = [
        (i, column) for i, column in enumerate(statements.columns)
        if column.get_internal_type() in {"DateTimeField", "DecimalField", "JSONField"}
    ]  # fmt: skip
    rows = []
    for line in lines:
        values: list[Any] = orjson.loads(line)[: len(_EVENT_COLUMNS)]
        values.append(now)
        values[_OCCURRED_AT] = datetime.fromisoformat(values[_OCCURRED_AT])
        if values[_COST] is not None:
            values[_COST] = Decimal(values[_COST])
        for i, column in special:
            values[i] = column.get_db_prep_save(values[i], connection)
        rows.append(values)
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(statements.values, rows)
        # After the insert, in its transaction: on SQLite it holds the write lock by now, so no
        # deletion can come between this check and the commit.
        _check_references(*_missing_references(rows))


class DanglingReference(Exception):
    """A record references an account, key or machine that does not exist (any more)."""


def _check_references(missing_keys: int, missing_machines: int, missing_accounts: int) -> None:
    """Events have no foreign key constraints: checked per row, they cost PostgreSQL a third
    of its time per event (``bench/README.md``). Each batch is checked once instead, in its
    transaction, after its rows are written: the references found are locked until the commit,
    and a deletion locks its row before it deletes the row's events (``lock_before_delete``),
    so it either waits for this batch and deletes its events too, or has deleted the row and
    this check fails. A failed batch is rolled back and sorted by ``write_lines``."""
    if missing_keys or missing_machines or missing_accounts:
        raise DanglingReference(
            f"references missing: {missing_accounts} accounts, {missing_keys} API keys, "
            f"{missing_machines} machines"
        )


def _missing_references(rows: list[list[Any]]) -> tuple[int, int, int]:
    from accounts.models import Account, ApiKey, Machine

    missing = []
    for model, column in zip((ApiKey, Machine, Account), _REFERENCES, strict=True):
        index = _EVENT_COLUMNS.index(column)
        ids = {row[index] for row in rows} - {None}
        missing.append(len(ids) - model._base_manager.filter(id__in=ids).count() if ids else 0)
    return missing[0], missing[1], missing[2]


def lock_before_delete(sender: type[Any], instance: Any, **_: Any) -> None:
    """``pre_delete`` of an account, API key or machine: lock its row before Django's collector
    deletes (or nulls) its events, so that a batch of events being written that references it
    either is committed first, and its events are deleted too, or sees the row gone
    (``_check_references``). Without it, the collector's DELETE would miss a batch committed
    after its snapshot, and leave events pointing at nothing."""
    list(sender._base_manager.select_for_update().filter(pk=instance.pk).values_list("pk"))


def _document(lines: list[Line]) -> str:
    return (b"[" + b",".join(lines) + b"]").decode()  # text: bytes would be sent as bytea


_OCCURRED_AT = _EVENT_COLUMNS.index("occurred_at")
_COST = _EVENT_COLUMNS.index("cost_usd")


def _one_per_key(lines: list[Line]) -> list[Line]:
    """The batch as the row-by-row upsert would leave it: the first line of each dedupe key,
    replaced by a later proxy line when the kept one came from a sync."""
    kept: dict[tuple[Any, str], int] = {}
    out: list[Line] = []
    sources: list[str] = []
    for line in lines:
        event = line_values(line)
        key = event.get("dedupe_key")
        seen = kept.get((event.get("account_id"), key)) if key else None
        if seen is None:
            if key:
                kept[(event.get("account_id"), key)] = len(out)
            out.append(line)
            sources.append(event.get("source"))
        elif sources[seen] == "sync" and event.get("source") == "proxy":
            out[seen], sources[seen] = line, "proxy"
    return out


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _live_references(lines: list[Line]) -> tuple[list[Line], list[tuple[Line, str]]]:
    """Set references to deleted keys and machines to null (the events stay, as the foreign
    keys' SET_NULL would have done); returns the lines to write, and those that cannot be
    kept: their account is gone (its events went with it) or was never valid."""
    from accounts.models import Account, ApiKey, Machine

    def live(model: Any, ids: set[Any]) -> set[int]:
        ids = {i for i in ids if isinstance(i, int) and not isinstance(i, bool)}
        return set(model.objects.filter(id__in=ids).values_list("id", flat=True)) if ids else set()

    events = [line_values(line) for line in lines]
    keys = live(ApiKey, {e.get("api_key_id") for e in events} - {None})
    machines = live(Machine, {e.get("machine_id") for e in events} - {None})
    accounts = live(Account, {e.get("account_id") for e in events})
    kept, refused = [], []
    for line, event in zip(lines, events, strict=True):
        if event.get("account_id") not in accounts:
            refused.append((line, "the account does not exist (any more)"))
            continue
        changed = False
        for name, alive in (("api_key_id", keys), ("machine_id", machines)):
            if event.get(name) is not None and event[name] not in alive:
                event[name], changed = None, True
        kept.append(orjson.dumps([event.get(name) for name in LINE_FIELDS]) if changed else line)
    return kept, refused


# -- the writer ------------------------------------------------------------------------------
class UsageWriter:
    def __init__(self) -> None:
        # Records as handed over, and lines of records already priced (``record_priced``).
        self._pending: list[Line | UsageRecord] = []
        self._touched_keys: set[int] = set()
        self._touched_machines: set[int] = set()
        self._touched_at: dict[tuple[str, int], float] = {}
        self._dropped = 0  # records refused for want of memory since the last flush
        self._limits: tuple[int, int] | None = None  # USAGE_BATCH_SIZE, USAGE_MEMORY_MAX_EVENTS
        self._raw_records: bool | None = None  # USAGE_WRITER_PROCESS
        self._resolution: float | None = None  # LAST_USED_RESOLUTION_SECONDS
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one flush at a time
        self._drain_lock = threading.Lock()
        self._drainer: threading.Thread | None = None
        self._process: WriterProcess | None = None  # USAGE_WRITER_PROCESS
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
        """Buffer ``record``. With a writer process (``USAGE_WRITER_PROCESS``), as its values in
        JSON (``RawRecord``), which that process cleans, prices and encodes; without one, as
        it is: the flush does that work with the rest of its batch (``_encode_on_loop``). Done
        one by one between requests, that work cost several times what it costs in a batch
        (measured: ``bench/README.md``)."""
        raw = self._raw_records
        if raw is None:
            raw = self._raw_records = settings.USAGE_WRITER_PROCESS
        if raw:
            try:
                self._buffer(RawRecord(orjson.dumps(record_values(record))))
                return
            except TypeError:  # a value JSON cannot hold: kept as it is, cleaned at the flush
                pass
        self._buffer(record)

    def record_priced(self, record: UsageRecord) -> Decimal | _NotPricedYet | None:
        """Buffer ``record`` cleaned, priced and encoded now, and return the cost stored with
        it (None: unpriced), for a caller that charges it (the gateway's budgets); or
        ``NOT_PRICED_YET`` if this process has no price table yet (the flush prices it)."""
        prices = loaded_price_table()
        if prices is None:
            self._buffer(record)
            return NOT_PRICED_YET
        line, cost = _line(record, prices)
        self._buffer(line)
        return cost

    def _buffer(self, item: Line | UsageRecord) -> None:
        batch_size, max_events = self._limits or self._read_limits()
        with self._lock:
            if len(self._pending) >= max_events:
                self._dropped += 1  # counted and logged by the next flush, off this path
                return
            self._pending.append(item)
            full = len(self._pending) >= batch_size
        self._flusher.poke(now=full)

    def _read_limits(self) -> tuple[int, int]:
        # Read from the settings again after each flush, not per request: a settings lookup
        # costs as much as the append.
        self._limits = (settings.USAGE_BATCH_SIZE, settings.USAGE_MEMORY_MAX_EVENTS)
        return self._limits

    def touch_api_key(self, key_id: int) -> None:
        self._touch_later("key", key_id, self._touched_keys)

    def touch_machine(self, machine_id: int) -> None:
        self._touch_later("machine", machine_id, self._touched_machines)

    def _touch_later(self, kind: str, row_id: int, touched: set[int]) -> None:
        # Once per LAST_USED_RESOLUTION_SECONDS per row in this process: the flush's UPDATE
        # also skips rows another process touched within it.
        now = time.monotonic()
        resolution = self._resolution
        if resolution is None:
            resolution = self._resolution = settings.LAST_USED_RESOLUTION_SECONDS
        if now - self._touched_at.get((kind, row_id), -1e18) >= resolution:
            self._touched_at[(kind, row_id)] = now
            touched.add(row_id)
            if len(self._touched_at) > 100_000:  # bounded: forget, and touch again
                self._touched_at.clear()

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
        return self._write_batch(*self._take())

    def _take(self) -> tuple[list[Line | UsageRecord], set[int], set[int]]:
        """What waits in memory: the records, and the keys and machines to touch."""
        self._limits = self._resolution = self._raw_records = None  # read from the settings again
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
        return batch, keys, machines

    def _write_batch(
        self, batch: list[Line | UsageRecord], keys: set[int], machines: set[int]
    ) -> int:
        with self._write_lock:
            encoded = _encoded(batch)
            if encoded is None:
                # No price table to be had: the database is unreachable. Spilled unpriced, the
                # records are priced when they are written back.
                self._spill(_encoded(batch, _NO_PRICES))  # type: ignore[arg-type]
                return 0
            written = self._deliver(encoded)
            if not self.spill.backlog_known:
                self._touch(keys, machines)
                _reload_prices()
        return written

    async def aflush(self) -> int:
        process = self._writer_process()
        if process is not None:
            batch, keys, machines = self._take()
            frame = _frame(batch)
            return await in_writer_thread(
                functools.partial(self._hand_over, process, frame, batch, keys, machines)
            )
        await self._encode_on_loop()
        return await in_writer_thread(self.flush)

    # -- the writer process (``usage.writer_process``) --------------------------------------
    def _writer_process(self) -> WriterProcess | None:
        if not settings.USAGE_WRITER_PROCESS:
            return None
        if self._process is None:
            self._process = WriterProcess()
        return self._process

    def _hand_over(
        self,
        process: WriterProcess,
        frame: bytes | None,
        batch: list[Line | UsageRecord],
        keys: set[int],
        machines: set[int],
    ) -> int:
        """In the writer thread: the batch to the writer process, or, if it did not take it,
        written here."""
        with self._write_lock:
            written = process.write(frame) if frame is not None and batch else None
            if written is not None:
                if written == len(batch):  # else some were spilled: the database is away
                    self._touch(keys, machines)
                    _reload_prices()  # for record_priced, which still prices in this process
                return written
        return self._write_batch(batch, keys, machines)

    def write_frame(self, frame: bytes) -> int:
        """In the writer process: one frame's lines and records, written as a flush writes
        them; returns how many events were written (spilled ones are not counted)."""
        lines, records = orjson.loads(frame)
        batch: list[Line | UsageRecord] = [orjson.dumps(line) for line in lines]
        batch += [record_from_values(values) for values in records]
        return self._write_batch(batch, set(), set())

    def start_process(self) -> None:
        """Server start-up (uvicorn's lifespan): start the writer process if there is to be one
        (without a lifespan, as under daphne, the first flush starts it)."""
        process = self._writer_process()
        if process is not None:
            process.start()

    def stop_process(self) -> None:
        """Shutdown, after the last flush: the writer process writes what it holds and ends."""
        if self._process is not None:
            self._process.stop()

    async def _encode_on_loop(self) -> None:
        """Encode the waiting records here, a slice at a time, so that only lines cross to the
        writer thread: records made on the loop's thread are dropped there, and the writer
        thread holds the GIL for the insert only (measured: ``bench/README.md``)."""
        pending = self._pending
        # No reload from here: during an outage it would hold the loop's database thread for a
        # connect timeout at every flush, and requests that need the database queue behind it.
        # The writer thread reloads the table after a write (``flush``).
        prices = loaded_price_table(reload=False)
        if not pending or prices is None:
            return  # nothing to encode, or no table yet: the writer thread loads it
        start = 0
        while True:
            with self._lock:
                if self._pending is not pending:
                    return  # a flush took them meanwhile
                chunk = pending[start : start + _ENCODE_SLICE]
            if not chunk:
                return
            lines = _lines(chunk, prices)
            end = start + len(chunk)
            with self._lock:
                now_there = pending[start:end]
                if self._pending is not pending or any(
                    a is not b for a, b in zip(now_there, chunk, strict=False)
                ):
                    return  # taken, or shifted by records put back in front: theirs to encode
                pending[start:end] = lines
            start = end
            await asyncio.sleep(0)  # requests go on between slices

    def _deliver(self, batch: list[Line]) -> int:
        if self.spill.has_backlog():
            # Older events wait on disk: these go behind them, so that the backlog is written
            # oldest first, and a crash now loses none of them.
            self._spill(batch)
            return 0
        try:
            return self.write_lines(batch)
        except DatabaseUnavailable as exc:
            logger.warning(
                "usage: database unavailable, events spilled to %s until it is back",
                self.spill.directory,
            )
            self._spill(exc.lines)
            return exc.written

    def _spill(self, lines: list[Line]) -> None:
        """Append ``lines`` to the spill files, and make sure a drainer writes them back."""
        try:
            kept = self.spill.append(lines)
        except OSError:
            logger.exception("usage: cannot spill to %s; kept in memory", self.spill.directory)
            with self._lock:
                room = max(0, settings.USAGE_MEMORY_MAX_EVENTS - self.pending)
                self._pending[:0] = lines[-room:] if room else []
                self._dropped += len(lines) - min(room, len(lines))
            return
        if kept < len(lines):
            logger.error(
                "usage: %d events dropped: the spill folder holds USAGE_SPILL_MAX_BYTES (%d)",
                len(lines) - kept,
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
        """Write ``records`` (cleaned and priced here) as ``write_lines`` does."""
        return self.write_lines(lines_of(records)) if records else 0

    def write_lines(self, lines: list[Line]) -> int:
        """Write ``lines`` in one transaction if the database takes them all; otherwise find
        and set aside those it refuses, and write the rest. Returns how many were written;
        raises ``DatabaseUnavailable`` with the unwritten ones if the database cannot be
        reached."""
        if not lines:
            return 0
        try:
            _insert_lines(lines)
            return len(lines)
        except _UNAVAILABLE:
            raise DatabaseUnavailable(lines, 0) from None
        except Exception as exc:
            logger.warning("usage: a batch of %d was refused (%s); sorting it", len(lines), exc)
        try:
            rest, refused = _live_references(lines)
        except _UNAVAILABLE:
            raise DatabaseUnavailable(lines, 0) from None
        try:
            written, rejected = self._bisect(rest)
        finally:
            self._set_aside(refused)
        self._set_aside(rejected)
        return written

    @staticmethod
    def _bisect(lines: list[Line]) -> tuple[int, list[tuple[Line, str]]]:
        """Write ``lines`` in halves, down to single lines; (written, refused with why)."""
        written = 0
        rejected: list[tuple[Line, str]] = []
        todo = [lines]  # a stack: the next part to try is on top
        while todo:
            part = todo.pop()
            try:
                _insert_lines(part)
                written += len(part)
            except _UNAVAILABLE:
                rest = [line for chunk in reversed(todo) for line in chunk]
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
