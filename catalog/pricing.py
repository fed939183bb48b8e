"""The one function that prices usage: ``PriceTable.cost``.

The writer (every event it stores), the gateway's budget check (every ``/v1`` request) and the
reports all price through it, so they agree to the cent. The table is the ``Price`` rows in
process memory:

- ``price_table()`` (sync code: the writer's thread, the rollups, commands) reloads it when it is
  older than ``GATEWAY_CATALOG_CACHE_SECONDS``: one small query per interval.
- ``aprice_table()`` (the event loop) never waits for the database once a table is loaded: a
  stale table is served while one background task reloads it, so a warm request costs no query.

An event is priced at the row in force on its UTC day, with the 5-minute/1-hour split of its cache
writes when the upstream reported one (the rest is priced as 5-minute). An unknown model, a day
before the model's first row, or tokens of a kind the row has no price for make the cost ``None``:
unpriced, never zero.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

logger = logging.getLogger(__name__)

_MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)
_CENT_FRACTION = Decimal("1e-8")  # usage_event.cost_usd keeps 8 decimal places
_MEMO_LIMIT = 4096  # model names are client-shaped: bound what one process remembers


@dataclass(frozen=True, slots=True)
class Rates:
    input: Decimal | None
    output: Decimal | None
    cache_write_5m: Decimal | None
    cache_write_1h: Decimal | None
    cache_read: Decimal | None


@dataclass(frozen=True, slots=True)
class PriceRow:
    pattern: str
    effective_from: date
    rates: Rates
    long_threshold: int | None = None
    long_rates: Rates | None = None


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    regex: re.Pattern[str]
    rank: tuple[int, int, str]  # sort key: more literal characters, fewer stars, then by name

    @classmethod
    def compile(cls, text: str) -> _Pattern:
        regex = re.compile(".*".join(re.escape(piece) for piece in text.split("*")), re.DOTALL)
        literal = len(text.replace("*", ""))
        return cls(text, regex, (-literal, text.count("*"), text))


class PriceTable:
    """An immutable snapshot of the price table; safe to share between threads and loops."""

    def __init__(self, rows: Iterable[PriceRow]) -> None:
        by_pattern: dict[str, list[PriceRow]] = {}
        for row in rows:
            by_pattern.setdefault(row.pattern, []).append(row)
        self._rows = {
            pattern: sorted(group, key=lambda r: r.effective_from)
            for pattern, group in by_pattern.items()
        }
        self._dates = {p: [r.effective_from for r in group] for p, group in self._rows.items()}
        self._patterns = sorted(
            (_Pattern.compile(p) for p in self._rows), key=lambda pattern: pattern.rank
        )
        self._memo: dict[str, str | None] = {}

    @classmethod
    def load(cls) -> PriceTable:
        """The table as the database holds it now (one query)."""
        from catalog.models import Price

        return cls(price_row(price) for price in Price.objects.all())

    def __len__(self) -> int:
        return sum(len(group) for group in self._rows.values())

    def pattern_for(self, model: str) -> str | None:
        """The most specific pattern matching ``model``, or None."""
        if model in self._memo:
            return self._memo[model]
        found = next((p.text for p in self._patterns if p.regex.fullmatch(model)), None)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[model] = found
        return found

    def row_for(self, model: str, day: date) -> PriceRow | None:
        """The row in force for ``model`` on ``day`` (UTC), or None."""
        pattern = self.pattern_for(model)
        if pattern is None:
            return None
        index = bisect.bisect_right(self._dates[pattern], day) - 1
        return self._rows[pattern][index] if index >= 0 else None

    def cost(
        self,
        *,
        model: str,
        occurred_at: datetime,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cache_creation: Mapping[str, Any] | None = None,
    ) -> Decimal | None:
        """The USD cost of one request, or None when it cannot be priced (see the module doc).

        ``cache_creation`` is the upstream's split of the cache writes
        (``ephemeral_5m_input_tokens``, ``ephemeral_1h_input_tokens``); without it every cache
        write is priced as a 5-minute one.
        """
        if not (
            input_tokens or output_tokens or cache_creation_input_tokens or cache_read_input_tokens
        ):
            return _ZERO  # nothing used, nothing to pay, whatever the model
        row = self.row_for(model, occurred_at.astimezone(UTC).date())
        if row is None:
            return None
        one_hour = 0
        if cache_creation:
            split = cache_creation.get("ephemeral_1h_input_tokens")
            if isinstance(split, int) and split > 0:
                one_hour = min(split, cache_creation_input_tokens)
        rates = row.rates
        prompt = input_tokens + cache_creation_input_tokens + cache_read_input_tokens
        if (
            row.long_rates is not None
            and row.long_threshold is not None
            and (prompt > row.long_threshold)
        ):
            rates = row.long_rates
        # Unrolled (no tuple per term): this runs for every metered request.
        total = _ZERO
        if input_tokens:  # tokens used that have no price: the request cannot be priced
            if rates.input is None:
                return None
            total = input_tokens * rates.input
        if output_tokens:
            if rates.output is None:
                return None
            total += output_tokens * rates.output
        five_minutes = cache_creation_input_tokens - one_hour
        if five_minutes:
            if rates.cache_write_5m is None:
                return None
            total += five_minutes * rates.cache_write_5m
        if one_hour:
            if rates.cache_write_1h is None:
                return None
            total += one_hour * rates.cache_write_1h
        if cache_read_input_tokens:
            if rates.cache_read is None:
                return None
            total += cache_read_input_tokens * rates.cache_read
        return (total / _MTOK).quantize(_CENT_FRACTION)


def price_row(price: Any) -> PriceRow:
    """A ``catalog.models.Price`` (or a historical model's row) as a ``PriceRow``."""
    long_rates = None
    if price.long_prompt_threshold is not None:
        long_rates = Rates(
            price.long_input,
            price.long_output,
            price.long_cache_write_5m,
            price.long_cache_write_1h,
            price.long_cache_read,
        )
    return PriceRow(
        pattern=price.pattern,
        effective_from=price.effective_from,
        rates=Rates(
            price.input, price.output, price.cache_write_5m, price.cache_write_1h, price.cache_read
        ),
        long_threshold=price.long_prompt_threshold,
        long_rates=long_rates,
    )


# -- the process's copy ------------------------------------------------------------------------
_table: PriceTable | None = None
_expires = 0.0
_load_lock = threading.Lock()
_refreshing: set[asyncio.Task[None]] = set()


def _ttl() -> float:
    return float(settings.GATEWAY_CATALOG_CACHE_SECONDS)


def _store(table: PriceTable) -> PriceTable:
    global _table, _expires
    _table, _expires = table, time.monotonic() + _ttl()
    return table


def price_table() -> PriceTable:
    """The process's table, reloaded when stale (sync code only: it may query)."""
    table = _table
    if table is not None and _expires > time.monotonic():
        return table
    with _load_lock:  # threads that find it stale together share one load
        if _table is not None and _expires > time.monotonic():
            return _table
        return _store(PriceTable.load())


def loaded_price_table(*, reload: bool = True) -> PriceTable | None:
    """The process's table if one is loaded, never waiting for the database (safe on the
    request path); a stale one is returned while a task on the running loop reloads it
    (``reload=False``: the caller reloads it elsewhere, e.g. in the usage writer's thread)."""
    table = _table
    if reload and table is not None and _expires <= time.monotonic() and not _refreshing:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # sync code: the next caller on a loop reloads it
            return table
        task = loop.create_task(_refresh())
        _refreshing.add(task)
        task.add_done_callback(_refreshing.discard)
    return table


async def aprice_table() -> PriceTable:
    """The process's table for the event loop: no query once loaded (stale-while-reloading)."""
    return loaded_price_table() or await database_sync_to_async(price_table)()


async def _refresh() -> None:
    try:
        await database_sync_to_async(price_table)()
    except Exception:  # a database blip: keep the stale table, the next request tries again
        logger.exception("could not reload the price table")


def forget_prices() -> None:
    """Drop the process's table (tests, and a command that just loaded new prices)."""
    global _table, _expires
    _table, _expires = None, 0.0
