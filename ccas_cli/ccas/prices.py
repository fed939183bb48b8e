"""The dated price table (``catalog/data/prices.json``'s format) and the cost of one request.

Lookup: among the rows whose ``pattern`` matches the model (``*`` matches any run of characters,
nothing else is special) and whose ``effective_from`` is on or before the request's UTC day, the
most specific pattern wins (most literal characters), then the latest date. Cache writes are priced
by TTL (5-minute or 1-hour) when the split is known, else as 5-minute. A ``long_prompt`` tier
prices every token of a request whose prompt (input + cache writes + cache reads) exceeds its
threshold. A price of ``null`` prices a count of 0 and leaves any other count unpriced; a model
that matches no row is unpriced: its cost is None, never zero.

Where the table comes from: ``GET /prices`` of the gateway, cached in ``~/.config/ccas/`` for a
day; offline (``--local``) or when the gateway has none, the cached copy, else the table built into
the zipapp from the same data.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from ccas import bundled_prices, config
from ccas.errors import CcasError
from ccas.gateway import request

CACHE_FILE = "prices.json"
CACHE_SECONDS = 24 * 3600
_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_MTOK = Decimal(1_000_000)


@dataclass(frozen=True)
class Tier:
    input: Decimal | None
    output: Decimal | None
    cache_write_5m: Decimal | None
    cache_write_1h: Decimal | None
    cache_read: Decimal | None


@dataclass(frozen=True)
class Row:
    pattern: str
    regex: re.Pattern[str]
    literal: int
    effective_from: date
    base: Tier
    long_threshold: int | None
    long: Tier | None


def _price(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a price: {value!r}") from exc
    if not price.is_finite() or price < 0:
        raise ValueError(f"not a price: {value!r}")
    return price


def _tier(raw: dict[str, Any]) -> Tier:
    return Tier(**{kind: _price(raw.get(kind)) for kind in _KINDS})


def _row(raw: Any) -> Row:
    if not isinstance(raw, dict) or not isinstance(raw.get("pattern"), str):
        raise ValueError("a row needs a pattern")
    pattern = raw["pattern"]
    regex = re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")
    long_raw = raw.get("long_prompt")
    long_threshold, long = None, None
    if isinstance(long_raw, dict):
        long_threshold = int(long_raw["threshold_tokens"])
        long = _tier(long_raw)
    return Row(
        pattern=pattern,
        regex=regex,
        literal=len(pattern.replace("*", "")),
        effective_from=date.fromisoformat(str(raw["effective_from"])[:10]),
        base=_tier(raw),
        long_threshold=long_threshold,
        long=long,
    )


class PriceTable:
    def __init__(self, rows: list[Row], origin: str) -> None:
        self.rows = rows
        self.origin = origin  # "gateway", "cache", "bundled"

    @classmethod
    def parse(cls, document: Any, origin: str) -> PriceTable:
        """From ``prices.json`` or a ``GET /prices`` answer (``{"prices": [...]}``,
        ``{"data": [...]}`` or a bare list). Raises ValueError when no row is usable."""
        rows_raw = document
        if isinstance(document, dict):
            rows_raw = document.get("prices", document.get("data"))
        if not isinstance(rows_raw, list):
            raise ValueError("no price rows")
        rows = []
        for raw in rows_raw:
            try:
                rows.append(_row(raw))
            except (KeyError, TypeError, ValueError):
                continue  # a row this version cannot read: the others still price
        if not rows:
            raise ValueError("no usable price rows")
        return cls(rows, origin)

    def find(self, model: str, day: date) -> Row | None:
        best: Row | None = None
        for row in self.rows:
            if row.effective_from > day or not row.regex.match(model):
                continue
            if best is None or (row.literal, row.effective_from) > (
                best.literal,
                best.effective_from,
            ):
                best = row
        return best

    def cost(
        self,
        model: str | None,
        when: datetime,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_write: int,
        cache_read: int,
        write_5m: int | None = None,
        write_1h: int | None = None,
    ) -> Decimal | None:
        """USD for one request, or None when it cannot be priced."""
        if not model:
            return None
        row = _find_cached(self, model, when.astimezone(timezone.utc).date())
        if row is None:
            return None
        if write_5m is None or write_1h is None:
            write_5m, write_1h = cache_write, 0
        tier = row.base
        prompt = input_tokens + cache_write + cache_read
        if row.long is not None and row.long_threshold is not None and prompt > row.long_threshold:
            tier = row.long
        total = Decimal(0)
        for count, price in (
            (input_tokens, tier.input),
            (output_tokens, tier.output),
            (write_5m, tier.cache_write_5m),
            (write_1h, tier.cache_write_1h),
            (cache_read, tier.cache_read),
        ):
            if count == 0:
                continue
            if price is None:
                return None
            total += count * price
        return total / _MTOK


@lru_cache(maxsize=4096)
def _find_cached(table: PriceTable, model: str, day: date) -> Row | None:
    return table.find(model, day)


def _bundled() -> PriceTable:
    raw = bundled_prices()
    if raw is None:
        raise CcasError("this ccas has no price table built in: reinstall it from the gateway")
    return PriceTable.parse(json.loads(raw), "bundled")


def load(host: str | None, *, offline: bool) -> PriceTable:
    """The freshest table available without failing: see the module docstring."""
    try:
        cached = config.read_json(CACHE_FILE) if config.config_dir().exists() else {}
    except CcasError:
        cached = {}  # a damaged cache is only a cache: fetch again, or use the built-in table
    fresh = (
        cached.get("host") == host
        and time.time() - float(cached.get("fetched_at", 0)) < CACHE_SECONDS
    )
    if host and not offline and not fresh:
        try:
            answer = request(
                "GET",
                host.rstrip("/") + "/prices",
                headers={"Accept": "application/json"},
                timeout=10,
            )
            document = answer.json() if answer.status == 200 else None
            if document is not None:
                table = PriceTable.parse(document, "gateway")
                config.write_json(
                    CACHE_FILE, {"host": host, "fetched_at": time.time(), "document": document}
                )
                return table
        except (CcasError, ValueError):
            pass  # no /prices on this gateway (yet), or unreachable: fall back below
    if cached.get("document") is not None:
        try:
            return PriceTable.parse(cached["document"], "cache")
        except ValueError:
            pass
    return _bundled()
